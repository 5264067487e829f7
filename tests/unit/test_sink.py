import tracemalloc

from bessai.observe.sink import NULL_SINK, RecordingSink


def test_recording_sink_totals_counters_across_attribute_sets():
    sink = RecordingSink()
    sink.count("bessai.safety.blocks", rule="soc_min", device="a")
    sink.count("bessai.safety.blocks", rule="soc_min", device="b")
    sink.count("bessai.safety.blocks", rule="temp_max", device="a")
    assert sink.total("bessai.safety.blocks") == 3
    assert sink.total("bessai.safety.blocks", rule="soc_min") == 2
    assert sink.total("bessai.safety.blocks", device="a", rule="temp_max") == 1


def test_null_sink_keeps_nothing_however_much_it_is_given():
    """Actors built without telemetry call the null sink on every poll for months: it must hold
    no reference to what it is given, or it would be a slow leak."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(20_000):
            attributes = {"device": f"inv{i}", "payload": "x" * 100}
            assert NULL_SINK.count("x", 2, **attributes) is None
            assert NULL_SINK.record("x", 0.5, **attributes) is None
            assert NULL_SINK.gauge("x", 3.0, **attributes) is None
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename")
                if stat.traceback[0].filename.endswith("sink.py"))
    assert grown < 10_000  # 20,000 retained payloads would be > 2 MB
