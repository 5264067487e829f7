"""The Trio client and UniversalDriver against pymodbus's own asyncio server (a subprocess).

An independent Modbus implementation is the peer: every function code the gateway uses
(0x03, 0x04, 0x06, 0x10), every register type of the profile format, the exception codes the
inverter sends (0x02, 0x06, 0x80), and a reconnect after the peer is killed and restarted.

Clock: MockClock with autojump_threshold=0.2 — real sockets are involved, so the clock may only
jump when the loop has been idle for a while; 0.2 s (rather than 0.05) keeps a stalled reply from
the subprocess on a loaded 2-core machine from being mistaken for a device timeout.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import trio
import trio.testing

from bessai.clock import trio_wall_clock
from bessai.device import (
    DeviceConnectionError,
    ModbusClient,
    ModbusReadError,
    ModbusWriteError,
    TagWriteRefused,
    UniversalDriver,
    load_profile,
    tcp_stream_factory,
)
from bessai.device.codec import encode
from tests.peers.pymodbus_server import PymodbusPeer, config_from_profile

HUAWEI = Path(__file__).resolve().parents[2] / "profiles" / "huawei_sun2000.json"

HUAWEI_VALUES = {
    "state_1": 0b110, "state_3": 0x00000001, "alarm_1": 0x0004,
    "input_power": 5230, "active_power": 4100, "grid_frequency": 50.01, "inverter_temp": 38.5,
    "device_status": 0x0200, "battery_temp": 24.7, "max_charge_power": 5000,
    "max_discharge_power": 5000, "meter_power": -850, "battery2_temp": [0x7FFF],
    "rated_capacity": 10000, "soc": 65.3, "battery_status": 2, "battery_power": -1500,
    "max_charging_power": 5000, "max_discharging_power": 5000, "charge_cutoff": 100,
    "discharge_cutoff": 5, "forcible_period": 0, "working_mode": 2, "forcible_mode": 0,
    "forcible_setting_mode": 0, "forcible_charge_power": 0, "forcible_discharge_power": 0,
}


@pytest.fixture
def socket_clock():
    return trio.testing.MockClock(autojump_threshold=0.2)


@pytest.fixture(scope="module")
def huawei():
    return load_profile(HUAWEI)


@pytest.fixture(scope="module")
def huawei_peer(huawei):
    # 37022 (battery_temp) answers busy; 47246 (forcible_setting_mode) permission denied.
    config = config_from_profile(huawei, HUAWEI_VALUES, busy=[37022], denied=[47246])
    with PymodbusPeer(config) as peer:
        yield peer


def _driver(profile, peer, **kw):
    kw.setdefault("post_connect_delay_s", 0.0)
    kw.setdefault("timeout_s", 5.0)
    return UniversalDriver(profile, "127.0.0.1", peer.port, site_id="s1",
                           wall_clock=trio_wall_clock(), **kw)


# ---- client: function codes and exception codes --------------------------------------------


async def test_client_reads_holding_registers_fc3(huawei_peer, socket_clock):
    async with ModbusClient(tcp_stream_factory("127.0.0.1", huawei_peer.port),
                            post_connect_delay_s=0, timeout_s=5) as client:
        assert await client.read_holding_registers(37760, 1) == [653]
        assert await client.read_holding_registers(37765, 2) == [0xFFFF, 0xFA24]


async def test_client_writes_fc6_and_fc16_and_reads_them_back(huawei_peer, socket_clock):
    async with ModbusClient(tcp_stream_factory("127.0.0.1", huawei_peer.port),
                            post_connect_delay_s=0, timeout_s=5) as client:
        await client.write_register(47083, 1)
        await client.write_registers(47247, [0x0001, 0x1170])
        assert await client.read_holding_registers(47083, 1) == [1]
        assert await client.read_holding_registers(47247, 2) == [0x0001, 0x1170]


async def test_exception_codes_from_a_real_server_are_typed(huawei_peer, socket_clock):
    async with ModbusClient(tcp_stream_factory("127.0.0.1", huawei_peer.port),
                            post_connect_delay_s=0, timeout_s=5) as client:
        with pytest.raises(ModbusReadError) as info:
            await client.read_holding_registers(40900, 1, tag="old_heartbeat")
        assert info.value.code == 0x02
        assert "check the profile's address and block, and the unit id" in str(info.value)
        with pytest.raises(ModbusReadError) as info:  # spans the end of a block
            await client.read_holding_registers(37795, 10)
        assert info.value.code == 0x02
        with pytest.raises(ModbusReadError, match="busy") as info:
            await client.read_holding_registers(37022, 1, tag="battery_temp")
        assert (info.value.code, info.value.tag) == (0x06, "battery_temp")
        with pytest.raises(ModbusWriteError, match="permission denied") as info:
            await client.write_register(47246, 0, tag="forcible_setting_mode")
        assert info.value.code == 0x80
        with pytest.raises(ModbusWriteError) as info:
            await client.write_registers(40000, [1, 2])
        assert (info.value.code, info.value.function) == (0x02, 0x10)
        assert await client.read_holding_registers(37760, 1) == [653]  # still usable


async def test_reconnects_after_the_peer_is_killed_and_restarted(huawei, socket_clock):
    with PymodbusPeer(config_from_profile(huawei, HUAWEI_VALUES)) as peer:
        client = ModbusClient(tcp_stream_factory("127.0.0.1", peer.port),
                              post_connect_delay_s=1.0, timeout_s=5)
        async with client:
            assert await client.read_holding_registers(37760, 1) == [653]
            peer.kill()
            with pytest.raises(ConnectionError) as info:
                await client.read_holding_registers(37760, 1)
            assert isinstance(info.value, DeviceConnectionError)
            with pytest.raises(DeviceConnectionError, match="cannot connect"):  # refused
                await client.connect()
            peer.start()  # same port
            await client.connect()
            assert await client.read_holding_registers(37760, 1) == [653]
            assert client.stats.connects == 2


# ---- driver: snapshots and writes against the Huawei profile --------------------------------


async def test_driver_reads_the_runbook_soc_check(huawei_peer, socket_clock):
    async with _driver(HUAWEI, huawei_peer) as driver:
        await driver.connect()
        assert await driver.read_tag("soc") == pytest.approx(65.3)
        assert await driver.read_tag("battery_power") == -1500
        assert await driver.read_tag("battery2_temp") is None  # 0x7FFF: no unit 2


async def test_full_snapshot_marks_only_the_failed_requests_tags_invalid(
        huawei, huawei_peer, socket_clock):
    async with _driver(huawei, huawei_peer) as driver:
        snap = await driver.read_all()
    readable = {n for n, t in huawei.tags.items() if t.readable}
    assert set(snap.readings) == readable
    assert (snap.site_id, snap.device_id) == ("s1", "huawei_sun2000")
    assert snap.ts == pytest.approx(1_767_225_600.0 + snap.taken_at)
    bad = snap.readings["battery_temp"]  # its request got 0x06 busy
    assert not bad.valid
    assert bad.reason == "ModbusReadError 0x06 (server device busy)"
    assert snap.value("soc") == pytest.approx(65.3)
    assert snap.value("grid_frequency") == pytest.approx(50.01)
    assert snap.value("inverter_temp") == pytest.approx(38.5)
    assert snap.value("meter_power") == -850
    assert snap.value("device_status") == 0x0200
    assert snap.value("battery_status") == 2
    assert snap.value("rated_capacity") == 10000
    assert snap.value("state_3") == 1
    assert snap.readings["battery2_temp"].reason == "invalid_sentinel 0x7FFF"
    invalid = {n for n, r in snap.readings.items() if not r.valid}
    # forcible_setting_mode is in the 0x80 request with forcible_*_power
    assert invalid == {"battery_temp", "battery2_temp", "forcible_setting_mode",
                       "forcible_charge_power", "forcible_discharge_power"}
    assert driver.client.stats.requests == 8  # the planner's 8 requests, not 30


async def test_fast_poll_snapshot_holds_only_fast_tags(huawei, huawei_peer, socket_clock):
    async with _driver(huawei, huawei_peer) as driver:
        snap = await driver.read_all("fast")
    assert set(snap.readings) == {n for n, t in huawei.tags.items()
                                  if t.readable and t.poll.value == "fast"}


async def test_write_tag_refuses_before_anything_is_sent(huawei_peer, socket_clock):
    async with _driver(HUAWEI, huawei_peer) as driver:
        for name, value, match in [
            ("soc", 50, "read-only"),
            ("max_charge_power", 1000, "read-only"),
            ("forcible_charge_power", 30000, "outside the profile's limits 0..25000 W"),
            ("forcible_mode", 3, "outside"),
            ("charge_cutoff", 80, "outside"),
            ("forcible_mode", "1", "needs a number"),
            ("forcible_mode", True, "not a number"),
            ("no_such_tag", 1, "no tag"),
        ]:
            with pytest.raises(TagWriteRefused, match=match):
                await driver.write_tag(name, value)
        assert driver.client.stats.requests == 0
        assert driver.client.stats.connects == 0


async def test_write_tag_reaches_the_device_in_engineering_units(huawei_peer, socket_clock):
    async with _driver(HUAWEI, huawei_peer) as driver:
        await driver.write_tag("forcible_discharge_power", 2500)  # u32 -> fc 0x10
        await driver.write_tag("discharge_cutoff", 12.5)  # u16 gain 10 -> fc 0x06
        await driver.write_tag("heartbeat", 1)  # write-only register 49999
        assert await driver.read_tag("forcible_discharge_power") == 2500
        assert await driver.read_tag("discharge_cutoff") == pytest.approx(12.5)
        with pytest.raises(ModbusWriteError, match="permission denied"):
            await driver.write_tag("forcible_setting_mode", 0)


# ---- every register type, both tables --------------------------------------------------------

TYPE_TAGS = {
    "v_u16": {"address": 100, "type": "u16", "gain": 10},
    "v_i16": {"address": 101, "type": "i16", "gain": 10},
    "v_u32": {"address": 102, "type": "u32"},
    "v_i32": {"address": 104, "type": "i32"},
    "v_u64": {"address": 106, "type": "u64"},
    "v_i64": {"address": 110, "type": "i64", "gain": 1000},
    "v_f32": {"address": 114, "type": "f32"},
    "v_str": {"address": 116, "type": "string", "length": 5},
    "v_bits": {"address": 121, "type": "bitfield", "length": 2},
}
SAMPLES = {"v_u16": 6553.5, "v_i16": -3276.8, "v_u32": 4_000_000_000, "v_i32": -2_000_000_000,
           "v_u64": 2**63 + 5, "v_i64": -123_456_789.125, "v_f32": 3.5, "v_str": "SUN2000",
           "v_bits": 0x80000001}


@pytest.fixture(scope="module")
def typed_profile(tmp_path_factory):
    doc = json.loads(HUAWEI.read_text())
    doc = copy.deepcopy(doc)
    doc["blocks"] += [{"name": "typed_h", "table": "holding", "start": 100, "end": 130},
                      {"name": "typed_i", "table": "input", "start": 100, "end": 130}]
    for name, spec in TYPE_TAGS.items():
        w = {**spec, "access": "rw"}
        if spec["type"] != "string":
            w |= {"min": -(2**64), "max": 2**64}
        doc["tags"][name] = w
        doc["tags"][f"in_{name[2:]}"] = {**spec, "access": "r", "table": "input"}
    path = tmp_path_factory.mktemp("profiles") / "typed.json"
    path.write_text(json.dumps(doc))
    return load_profile(path)


@pytest.fixture(scope="module")
def typed_peer(typed_profile):
    values = {f"in_{k[2:]}": v for k, v in SAMPLES.items()}
    with PymodbusPeer(config_from_profile(typed_profile, values)) as peer:
        yield peer


@pytest.mark.parametrize("name", list(TYPE_TAGS))
async def test_every_type_round_trips_through_a_real_server(
        typed_profile, typed_peer, socket_clock, name):
    async with _driver(typed_profile, typed_peer) as driver:
        await driver.write_tag(name, SAMPLES[name])
        back = await driver.read_tag(name)
        tag = typed_profile.tags[name]
        assert encode(tag, back) == encode(tag, SAMPLES[name])
        if isinstance(back, str):
            assert back == SAMPLES[name]
        else:
            assert back == pytest.approx(SAMPLES[name], rel=1e-12)


async def test_input_registers_fc4_decode_every_type(typed_profile, typed_peer, socket_clock):
    names = [f"in_{k[2:]}" for k in TYPE_TAGS]
    async with _driver(typed_profile, typed_peer) as driver:
        snap = await driver.read_all(tags=names)
        assert driver.client.stats.requests == 1  # one coalesced fc 0x04 read
    for key, sample in SAMPLES.items():
        got = snap.value(f"in_{key[2:]}")
        if isinstance(sample, str):
            assert got == sample
        else:
            assert got == pytest.approx(sample, rel=1e-12)
