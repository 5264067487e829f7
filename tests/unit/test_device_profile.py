"""Profile loading: the Huawei profile's register facts, and every kind of profile error reported
with the file, the JSON path and the problem, all at once."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bessai.device import ProfileError, load_profile
from bessai.device.profile import Access, Poll, RegisterType, Table

HUAWEI = Path(__file__).resolve().parents[2] / "profiles" / "huawei_sun2000.json"


@pytest.fixture(scope="module")
def huawei():
    return load_profile(HUAWEI)


@pytest.fixture
def doc():
    return json.loads(HUAWEI.read_text())


def _load(tmp_path, doc, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return load_profile(path)


def _problems(tmp_path, doc):
    with pytest.raises(ProfileError) as info:
        _load(tmp_path, doc)
    err = info.value
    assert err.file.endswith("p.json")
    for p in err.problems:
        assert p.file.endswith("p.json")
        assert str(tmp_path / "p.json") in str(err)
    return {(p.path, p.message) for p in err.problems}


# ---- The Huawei profile ---------------------------------------------------------------------

EXPECTED = {
    # name: (address, type, gain, unit, count)
    "state_1": (32000, "bitfield", 1, None, 1),
    "state_2": (32002, "bitfield", 1, None, 1),
    "state_3": (32003, "bitfield", 1, None, 2),
    "alarm_1": (32008, "bitfield", 1, None, 1),
    "alarm_2": (32009, "bitfield", 1, None, 1),
    "alarm_3": (32010, "bitfield", 1, None, 1),
    "input_power": (32064, "i32", 1, "W", 2),
    "active_power": (32080, "i32", 1, "W", 2),
    "grid_frequency": (32085, "u16", 100, "Hz", 1),
    "inverter_temp": (32087, "i16", 10, "°C", 1),
    "device_status": (32089, "u16", 1, None, 1),
    "battery_temp": (37022, "i16", 10, "°C", 1),
    "max_charge_power": (37046, "u32", 1, "W", 2),
    "max_discharge_power": (37048, "u32", 1, "W", 2),
    "meter_power": (37113, "i32", 1, "W", 2),
    "battery2_temp": (37752, "i16", 10, "°C", 1),
    "rated_capacity": (37758, "u32", 1, "Wh", 2),
    "soc": (37760, "u16", 10, "%", 1),
    "battery_status": (37762, "u16", 1, None, 1),
    "battery_power": (37765, "i32", 1, "W", 2),
    "max_charging_power": (47075, "u32", 1, "W", 2),
    "max_discharging_power": (47077, "u32", 1, "W", 2),
    "charge_cutoff": (47081, "u16", 10, "%", 1),
    "discharge_cutoff": (47082, "u16", 10, "%", 1),
    "forcible_period": (47083, "u16", 1, "min", 1),
    "working_mode": (47086, "u16", 1, None, 1),
    "forcible_mode": (47100, "u16", 1, None, 1),
    "forcible_setting_mode": (47246, "u16", 1, None, 1),
    "forcible_charge_power": (47247, "u32", 1, "W", 2),
    "forcible_discharge_power": (47249, "u32", 1, "W", 2),
    "heartbeat": (49999, "u16", 1, None, 1),
}


def test_huawei_profile_has_every_design_register_with_its_type_and_gain(huawei):
    assert set(huawei.tags) == set(EXPECTED)
    for name, (address, type_, gain, unit, count) in EXPECTED.items():
        tag = huawei.tags[name]
        assert (tag.address, tag.type, tag.gain, tag.unit, tag.count) == (
            address, RegisterType(type_), gain, unit, count), name
        assert tag.table is Table.HOLDING


def test_huawei_profile_avoids_the_old_gateways_register_mistakes(huawei):
    by_address = {t.address: t.name for t in huawei.tags.values()}
    assert 40900 not in by_address
    assert huawei.tags["heartbeat"].address == 49999
    assert huawei.tags["battery_temp"].address == 37022
    assert by_address[37752] == "battery2_temp"
    assert by_address[37762] == "battery_status"
    assert huawei.tags["battery_status"].enum == {
        0: "offline", 1: "standby", 2: "running", 3: "fault", 4: "sleep"}


def test_huawei_writable_tags_carry_limits_and_readonly_ones_refuse_writes(huawei):
    rw = {n for n, t in huawei.tags.items() if t.access is Access.READ_WRITE}
    assert rw == {"max_charging_power", "max_discharging_power", "charge_cutoff",
                  "discharge_cutoff", "forcible_period", "working_mode", "forcible_mode",
                  "forcible_setting_mode", "forcible_charge_power", "forcible_discharge_power"}
    assert huawei.tags["heartbeat"].access is Access.WRITE
    assert huawei.tags["max_charge_power"].access is Access.READ
    for name in rw | {"heartbeat"}:
        tag = huawei.tags[name]
        assert tag.min is not None
        assert tag.max is not None
        assert tag.min <= tag.max


def test_huawei_connection_watchdog_dispatch_and_safety_specs(huawei):
    c = huawei.connection
    assert (c.port, c.unit_id, c.timeout_s, c.post_connect_delay_s) == (502, 1, 10.0, 1.0)
    assert 64 <= c.max_registers_per_read <= 125
    assert c.max_gap >= 0
    wd = huawei.watchdog
    assert (wd.heartbeat_tag, wd.heartbeat_value) == ("heartbeat", 1)
    assert wd.interval_s <= 15
    assert huawei.tags[wd.comm_loss_tag].readable
    d = huawei.dispatch
    assert (d.mode_tag, d.stop_value, d.charge_value, d.discharge_value) == (
        "forcible_mode", 0, 1, 2)
    assert (d.charge_power_tag, d.discharge_power_tag) == (
        "forcible_charge_power", "forcible_discharge_power")
    assert (d.lease.tag, d.lease.unit) == ("forcible_period", "min")
    assert d.lease.period_s <= 60
    assert [(w.tag, w.value) for w in d.preset] == [("forcible_setting_mode", 0)]
    assert [(w.tag, w.value) for w in d.auto] == [("forcible_mode", 0)]
    assert huawei.safety.soc_tag == "soc"
    assert "battery_temp" in huawei.safety.temperature_tags
    assert huawei.tags["soc"].poll is Poll.FAST


def test_every_huawei_tag_lies_in_a_block(huawei):
    for tag in huawei.tags.values():
        assert huawei.block_of(tag) is not None, tag.name


def test_unknown_tag_lookup_names_the_known_tags(huawei):
    with pytest.raises(KeyError, match=r"known tags: .*soc"):
        huawei.tag("state_of_charge")


# ---- Profile errors: one test per kind, each naming file, JSON path and problem -------------


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"device": {"id": "x",}}')
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "line 1 column" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_is_a_profile_error_naming_the_path(tmp_path):
    with pytest.raises(ProfileError, match="cannot read the file"):
        load_profile(tmp_path / "nope.json")


def test_schema_errors_are_all_reported_at_once_with_json_paths(tmp_path, doc):
    doc["tags"]["soc"]["type"] = "u17"
    doc["tags"]["battery_power"]["gain"] = 0
    doc["connection"]["max_registers_per_read"] = 200
    del doc["device"]["model"]
    doc["tags"]["soc"]["colour"] = "red"
    doc["tags"]["soc"]["invalid"] = ["FFFF"]
    got = _problems(tmp_path, doc)
    paths = {p for p, _ in got}
    assert {"$.tags.soc.type", "$.tags.battery_power.gain",
            "$.connection.max_registers_per_read", "$.device", "$.tags.soc",
            "$.tags.soc.invalid[0]"} <= paths
    assert any("'u17' is not one of" in m for _, m in got)
    assert any("'model' is a required property" in m for _, m in got)
    assert any("'colour' was unexpected" in m for _, m in got)
    assert any("hex string" in m for p, m in got if p == "$.tags.soc.invalid[0]")


def test_reference_to_missing_tag_is_reported_per_reference(tmp_path, doc):
    doc["watchdog"]["heartbeat"]["tag"] = "keepalive"
    doc["safety"]["temperature_tags"] = ["battery_temp", "cell_temp"]
    doc["dispatch"]["preset"] = [{"tag": "nope", "value": 0}]
    got = _problems(tmp_path, doc)
    assert ("$.watchdog.heartbeat.tag", "tag 'keepalive' is not defined in $.tags") in got
    assert ("$.safety.temperature_tags[1]", "tag 'cell_temp' is not defined in $.tags") in got
    assert ("$.dispatch.preset[0].tag", "tag 'nope' is not defined in $.tags") in got


def test_writable_tag_without_limits_is_refused(tmp_path, doc):
    del doc["tags"]["forcible_charge_power"]["max"]
    del doc["tags"]["working_mode"]["min"]
    del doc["tags"]["working_mode"]["max"]
    got = _problems(tmp_path, doc)
    msgs = dict(got)
    assert "needs max" in msgs["$.tags.forcible_charge_power"]
    assert "needs min and max" in msgs["$.tags.working_mode"]


def test_min_above_max_is_refused(tmp_path, doc):
    doc["tags"]["charge_cutoff"]["min"] = 100
    doc["tags"]["charge_cutoff"]["max"] = 90
    got = _problems(tmp_path, doc)
    assert ("$.tags.charge_cutoff.min", "min 100 is above max 90") in got


def test_overlapping_tags_are_refused(tmp_path, doc):
    doc["tags"]["soc"]["address"] = 37759  # inside rated_capacity (37758-37759)
    got = _problems(tmp_path, doc)
    assert any(p == "$.tags.soc.address" and "overlap tag 'rated_capacity'" in m
               for p, m in got)


def test_a_tag_inside_a_wider_tag_is_an_overlap_even_past_its_neighbour(tmp_path, doc):
    doc["tags"]["wide"] = {"address": 37700, "type": "u64", "access": "r"}
    doc["tags"]["inner_a"] = {"address": 37701, "type": "u16", "access": "r"}
    doc["tags"]["inner_b"] = {"address": 37702, "type": "u16", "access": "r"}
    got = dict(_problems(tmp_path, doc))
    assert "overlap tag 'wide'" in got["$.tags.inner_a.address"]
    assert "overlap tag 'wide'" in got["$.tags.inner_b.address"]


def test_missing_schema_is_a_profile_error_with_a_hint(tmp_path):
    with pytest.raises(ProfileError, match="cannot read the profile schema"):
        load_profile(HUAWEI, schema_path=tmp_path / "nope.schema.json")


def test_tag_outside_every_block_is_refused(tmp_path, doc):
    doc["tags"]["soc"]["address"] = 40900
    doc["tags"]["meter_power"]["address"] = 37139  # second register past the block end
    got = _problems(tmp_path, doc)
    msgs = dict(got)
    assert "not inside any block" in msgs["$.tags.soc.address"]
    assert "37139-37140" in msgs["$.tags.meter_power.address"]


def test_tag_in_input_table_needs_an_input_block(tmp_path, doc):
    doc["tags"]["soc"]["table"] = "input"
    got = _problems(tmp_path, doc)
    assert "(input) are not inside any block" in dict(got)["$.tags.soc.address"]


def test_overlapping_and_inverted_blocks_are_refused(tmp_path, doc):
    doc["blocks"].append({"name": "dup", "table": "holding", "start": 32050, "end": 32150})
    doc["blocks"].append({"name": "backwards", "table": "holding", "start": 60010,
                          "end": 60000})
    got = _problems(tmp_path, doc)
    msgs = dict(got)
    assert "overlaps block 'inverter_state'" in msgs["$.blocks[6]"]
    assert "ends (60000) before it starts (60010)" in msgs["$.blocks[7]"]


def test_profile_writes_outside_limits_and_to_readonly_tags_are_refused(tmp_path, doc):
    doc["dispatch"]["modes"]["discharge"] = 7
    doc["dispatch"]["charge_power_tag"] = "max_charge_power"  # read-only
    doc["watchdog"]["comm_loss"]["tag"] = "heartbeat"  # write-only
    got = _problems(tmp_path, doc)
    msgs = dict(got)
    assert "outside its min/max (0..2)" in msgs["$.dispatch.modes.discharge"]
    assert "must be writable" in msgs["$.dispatch.charge_power_tag"]
    assert "must be readable" in msgs["$.watchdog.comm_loss.tag"]


def test_lease_renewal_slower_than_the_lease_is_refused(tmp_path, doc):
    doc["dispatch"]["lease"]["renew_interval_s"] = 90
    doc["watchdog"]["interval_s"] = 120
    got = _problems(tmp_path, doc)
    msgs = dict(got)
    assert "lets the 60 s lease lapse" in msgs["$.dispatch.lease.renew_interval_s"]
    assert "must be shorter than the device's comm timeout" in msgs["$.watchdog.interval_s"]


def test_type_length_sentinel_and_enum_mismatches_are_refused(tmp_path, doc):
    doc["tags"]["serial"] = {"address": 32020, "type": "string", "access": "r"}
    doc["tags"]["state_3"]["length"] = 3
    doc["tags"]["soc"]["length"] = 2
    doc["tags"]["inverter_temp"]["invalid"] = ["0x1FFFF"]
    doc["tags"]["battery_status"]["enum"]["70000"] = "too big"
    got = _problems(tmp_path, doc)
    msgs = dict(got)
    assert "needs 'length'" in msgs["$.tags.serial.length"]
    assert "1, 2 or 4 registers, not 3" in msgs["$.tags.state_3.length"]
    assert "always 1 register" in msgs["$.tags.soc.length"]
    assert "does not fit in 1 register" in msgs["$.tags.inverter_temp.invalid[0]"]
    assert "outside type u16" in msgs["$.tags.battery_status.enum"]


def test_duplicate_json_keys_are_refused(tmp_path):
    text = HUAWEI.read_text().replace(
        '"soc": {', '"soc": {"address": 1, "type": "u16", "access": "r"},\n    "soc": {', 1)
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert [(p.path, "more than once" in p.message) for p in info.value.problems] == [
        ("$.tags.soc", True)]


def test_semantic_problems_of_different_kinds_arrive_in_one_error(tmp_path, doc):
    bad = copy.deepcopy(doc)
    bad["tags"]["soc"]["address"] = 40900
    del bad["tags"]["forcible_period"]["min"]
    bad["safety"]["soc_tag"] = "state_of_charge"
    with pytest.raises(ProfileError) as info:
        _load(tmp_path, bad)
    paths = [p.path for p in info.value.problems]
    assert {"$.tags.soc.address", "$.tags.forcible_period", "$.safety.soc_tag"} <= set(paths)
    assert f"{len(paths)} problems in device profile" in str(info.value)


def test_heartbeat_values_constant_and_counter(huawei):
    import itertools

    import attrs

    assert list(itertools.islice(huawei.watchdog.heartbeat_values(), 3)) == [1, 1, 1]
    counter = attrs.evolve(huawei.watchdog, heartbeat_mode="counter", heartbeat_value=65534)
    assert list(itertools.islice(counter.heartbeat_values(), 4)) == [65534, 65535, 0, 1]
