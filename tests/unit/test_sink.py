from bessai.observe.sink import NULL_SINK, RecordingSink


def test_recording_sink_totals_counters_across_attribute_sets():
    sink = RecordingSink()
    sink.count("bessai.safety.blocks", rule="soc_min", device="a")
    sink.count("bessai.safety.blocks", rule="soc_min", device="b")
    sink.count("bessai.safety.blocks", rule="temp_max", device="a")
    assert sink.total("bessai.safety.blocks") == 3
    assert sink.total("bessai.safety.blocks", rule="soc_min") == 2
    assert sink.total("bessai.safety.blocks", device="a", rule="temp_max") == 1


def test_null_sink_accepts_everything():
    NULL_SINK.count("x", 2, a=1)
    NULL_SINK.record("x", 0.5)
    NULL_SINK.gauge("x", 3.0)
