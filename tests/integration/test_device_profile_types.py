"""Word order, 64-bit floats, coils and discrete inputs, and SunSpec-style scale factors against
pymodbus's own server (a subprocess) holding known values — an independent encoder of the same
registers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import trio
import trio.testing

from bessai.clock import trio_wall_clock
from bessai.device import ProfileError, UniversalDriver, load_profile
from bessai.device.planner import format_plan, plan
from bessai.device.profile import Table
from tests.peers.pymodbus_server import PymodbusPeer, config_from_profile

ROOT = Path(__file__).resolve().parents[2]

EXTRA_TAGS = {
    "cdab_i32": {"address": 40000, "type": "i32", "word_order": "little", "access": "rw",
                 "min": -10000000, "max": 10000000, "poll": "fast"},
    "cdab_f32": {"address": 40002, "type": "f32", "word_order": "little", "access": "r"},
    "abcd_f64": {"address": 40004, "type": "f64", "access": "r"},
    "cdab_u64": {"address": 40008, "type": "u64", "word_order": "little", "access": "r"},
    "w": {"address": 40012, "type": "i16", "unit": "W", "scale_factor": "w_sf", "access": "r",
          "poll": "fast"},
    "w_sf": {"address": 40013, "type": "i16", "access": "r", "invalid": ["0x8000"]},
    "run_enable": {"address": 0, "type": "bool", "table": "coil", "access": "rw", "min": 0,
                   "max": 1, "poll": "fast"},
    "alarm_reset": {"address": 3, "type": "bool", "table": "coil", "access": "rw", "min": 0,
                    "max": 1},
    "di_fault": {"address": 2, "type": "bool", "table": "discrete_input", "access": "r",
                 "poll": "fast"},
}
EXTRA_BLOCKS = [{"name": "extra", "table": "holding", "start": 40000, "end": 40019},
                {"name": "coils", "table": "coil", "start": 0, "end": 15},
                {"name": "inputs", "table": "discrete_input", "start": 0, "end": 15}]


def words(fmt: str, value: float | int) -> list[int]:
    data = struct.pack(fmt, value)
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


# Known registers, written out by hand as the device would hold them:
I32 = words(">i", -123456)  # ABCD: [0xFFFE, 0x1DC0]
F32 = words(">f", 12.5)
F64 = words(">d", 3.14159)
U64 = words(">Q", 0x0102030405060708)
HOLDING = [*I32[::-1], *F32[::-1], *F64, *U64[::-1], 12345, 0xFFFF]  # 40000.. (CDAB swapped)


@pytest.fixture
def socket_clock():
    return trio.testing.MockClock(autojump_threshold=0.2)


@pytest.fixture
def profile_path(tmp_path) -> Path:
    doc = json.loads((ROOT / "profiles" / "huawei_sun2000.json").read_text())
    doc["tags"].update(EXTRA_TAGS)
    doc["blocks"].extend(EXTRA_BLOCKS)
    path = tmp_path / "extended.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def peer(profile_path):
    profile = load_profile(profile_path)
    config = config_from_profile(profile, {"soc": 50.0})
    config["holding"] = [b for b in config["holding"] if b[0] != 40000]
    config["holding"].append([40000, HOLDING + [0] * (20 - len(HOLDING))])
    config["coils"] = [[0, [1, 0, 0, 1] + [0] * 12]]
    config["discrete"] = [[0, [0, 0, 1, 0] + [0] * 12]]
    with PymodbusPeer(config) as running:
        yield running


def driver_for(profile_path: Path, peer: PymodbusPeer) -> UniversalDriver:
    return UniversalDriver(load_profile(profile_path), "127.0.0.1", peer.port, site_id="s1",
                           wall_clock=trio_wall_clock(), post_connect_delay_s=0, timeout_s=5)


async def test_word_order_floats_coils_inputs_and_scale_factors_decode_to_known_values(
        profile_path, peer, socket_clock):
    async with driver_for(profile_path, peer) as driver:
        snapshot = await driver.read_all()
    assert snapshot.value("cdab_i32") == -123456
    assert snapshot.value("cdab_f32") == 12.5
    assert snapshot.value("abcd_f64") == pytest.approx(3.14159)
    assert snapshot.value("cdab_u64") == 0x0102030405060708
    assert snapshot.value("w") == pytest.approx(1234.5)  # 12345 * 10**-1
    assert (snapshot.value("run_enable"), snapshot.value("alarm_reset")) == (1, 1)
    assert snapshot.value("di_fault") == 1
    assert snapshot.value("soc") == 50.0  # the Huawei registers beside them still decode


async def test_writes_land_in_the_profiles_word_order_and_coils_switch(
        profile_path, peer, socket_clock):
    async with driver_for(profile_path, peer) as driver:
        await driver.write_tag("cdab_i32", 7654321)
        raw = await driver.client.read_holding_registers(40000, 2)
        assert raw == words(">i", 7654321)[::-1]  # least significant word first on the wire
        assert await driver.read_tag("cdab_i32") == 7654321
        await driver.write_tag("run_enable", 0)
        assert await driver.read_tag("run_enable") == 0
        assert await driver.read_tag("alarm_reset") == 1  # its neighbour is untouched


async def test_a_scale_factor_the_device_marks_unimplemented_makes_the_value_invalid(
        profile_path, peer, socket_clock):
    async with driver_for(profile_path, peer) as driver:
        await driver.client.write_register(40013, 0x8000)  # SunSpec: not implemented
        snapshot = await driver.read_all("fast")
    reading = snapshot.readings["w"]
    assert not reading.valid
    assert reading.reason.startswith("scale_factor w_sf invalid_sentinel")


def test_planner_reads_the_scale_factor_with_its_tag_and_never_mixes_tables(profile_path):
    profile = load_profile(profile_path)
    fast = plan(profile, poll="fast")
    planned = {name: r.table for r in fast for name in r.tags}
    assert "w_sf" in planned  # slow by itself, read with the fast tag it scales
    assert planned["run_enable"] is Table.COIL
    assert planned["di_fault"] is Table.DISCRETE_INPUT
    for request in plan(profile):
        assert {profile.tags[n].table for n in request.tags} == {request.table}
    text = format_plan(plan(profile), profile)
    assert "coil" in text
    assert "discrete_input" in text


@pytest.mark.parametrize(("tag", "change", "message"), [
    ("w", {"scale_factor": "nope"}, "names no tag 'nope'"),
    ("w", {"access": "rw", "min": 0, "max": 1}, "scale-factored tag is read-only"),
    ("run_enable", {"type": "u16"}, "coils and discrete inputs hold 'bool' tags"),
    ("di_fault", {"access": "rw", "min": 0, "max": 1}, "a discrete input is read-only"),
])
def test_profile_mistakes_with_the_new_types_are_reported(tmp_path, tag, change, message):
    doc = json.loads((ROOT / "profiles" / "huawei_sun2000.json").read_text())
    tags = json.loads(json.dumps(EXTRA_TAGS))
    tags[tag].update(change)
    doc["tags"].update(tags)
    doc["blocks"].extend(EXTRA_BLOCKS)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=message):
        load_profile(path)
