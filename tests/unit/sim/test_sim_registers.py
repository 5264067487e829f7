"""The simulator serves a profile's register map like the inverter does (in-memory Modbus)."""

from __future__ import annotations

import attrs
import pytest
import trio
from pymodbus.pdu.bit_message import ReadCoilsRequest
from sim_testclient import ModbusExceptionAnswer, TrioTestClient

from bessai.device.profile import Block, Tag
from bessai.sim import Simulator


async def _client(sim: Simulator, profile, unit_id: int = 1) -> TrioTestClient:
    return TrioTestClient(await sim.stream_factory()(), profile, unit_id)


async def test_core_tags_read_with_profile_scaling(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile, soc_pct=63.4, temp_c=27.5) as sim:
        client = await _client(sim, huawei_profile)
        await trio.sleep(5)
        assert await client.read_tag("soc") == pytest.approx(sim.state().soc_pct, abs=0.051)
        assert await client.read_tag("rated_capacity") == 10_000
        assert await client.read_tag("max_charge_power") == 5_000
        assert await client.read_tag("max_discharge_power") == 5_000
        assert await client.read_tag("battery_temp") == pytest.approx(27.5, abs=0.2)
        assert 49.9 < await client.read_tag("grid_frequency") < 50.1
        assert await client.read_tag("device_status") == 0x0200
        assert await client.read_tag("battery_status") in (1, 2)
        values = sim.values()
        for name in ("battery_power", "active_power", "input_power", "meter_power"):
            assert await client.read_tag(name) == values[name], name
        # Balance on the wire: meter (+ export) = PV - load - battery.
        state = sim.state()
        assert values["meter_power"] == pytest.approx(
            state.pv_power_w - state.load_power_w - state.battery_power_w, abs=1.5
        )
        assert await client.read_tag("working_mode") == 2
        assert await client.read_tag("charge_cutoff") == 100.0
        assert await client.read_tag("discharge_cutoff") == 10.0


async def test_negative_battery_power_reads_as_signed_i32(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile, soc_pct=50.0, start_hour=0.0) as sim:
        client = await _client(sim, huawei_profile)
        await trio.sleep(2)
        tag = huawei_profile.tag("battery_power")
        hi, _lo = await client.read(tag.address, 2)
        assert hi == 0xFFFF  # a few hundred W of discharge at midnight
        assert await client.read_tag("battery_power") == round(sim.state().battery_power_w)
        assert sim.state().battery_power_w < 0


async def test_read_spanning_reserved_registers_inside_a_block_succeeds(
    autojump_clock, huawei_profile
):
    async with Simulator(huawei_profile, soc_pct=50.0) as sim:
        client = await _client(sim, huawei_profile)
        registers = await client.read(37758, 9)  # rated capacity .. battery power, with gaps
        assert registers[2] == 500  # 37760 SOC 50.0 %
        assert registers[3] == 0  # 37761 reserved
        assert registers[5] == 0  # 37763 reserved
        registers = await client.read(32000, 100)  # the whole inverter block
        assert len(registers) == 100
        assert registers[89] == 0x0200


async def test_unused_tag_without_a_value_reads_as_its_invalid_sentinel(
    autojump_clock, huawei_profile
):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        tag = huawei_profile.tag("battery2_temp")  # no second battery unit
        assert await client.read(tag.address, 1) == [0x7FFF]
        assert await client.read_tag("battery2_temp") is None


async def test_read_outside_every_block_is_illegal_address(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        with pytest.raises(ModbusExceptionAnswer) as outside:
            await client.read(40000, 2)
        assert outside.value.code == 0x02
        with pytest.raises(ModbusExceptionAnswer) as straddling:
            await client.read(32095, 10)  # runs off the end of 32000..32099
        assert straddling.value.code == 0x02


async def test_write_errors_match_the_inverter(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        with pytest.raises(ModbusExceptionAnswer) as read_only:
            await client.write(37760, [900])  # SOC is read-only
        assert read_only.value.code == 0x80
        with pytest.raises(ModbusExceptionAnswer) as out_of_range:
            await client.write_tag("working_mode", 9)
        assert out_of_range.value.code == 0x03
        with pytest.raises(ModbusExceptionAnswer) as reserved:
            await client.write(47084, [1])
        assert reserved.value.code == 0x02
        with pytest.raises(ModbusExceptionAnswer) as half:
            await client.write_single(47248, 100)  # low word of forcible_charge_power
        assert half.value.code == 0x02
        with pytest.raises(ModbusExceptionAnswer) as outside:
            await client.write(40000, [1])
        assert outside.value.code == 0x02
        assert sim.write_log == []  # nothing refused was applied


async def test_write_spanning_two_tags_is_all_or_nothing(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        await client.write(47081, [950, 150])  # charge cutoff 95 %, discharge cutoff 15 %
        assert await client.read_tag("charge_cutoff") == 95.0
        assert await client.read_tag("discharge_cutoff") == 15.0
        with pytest.raises(ModbusExceptionAnswer):
            await client.write(47081, [960, 500])  # 50 % discharge cutoff is out of range
        assert await client.read_tag("charge_cutoff") == 95.0


async def test_wrong_unit_id_gets_gateway_target_failed(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile, unit_id=1) as sim:
        client = await _client(sim, huawei_profile, unit_id=7)
        with pytest.raises(ModbusExceptionAnswer) as wrong:
            await client.read(37760, 1)
        assert wrong.value.code == 0x0B


async def test_unsupported_function_is_illegal_function(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        with pytest.raises(ModbusExceptionAnswer) as coils:
            await client.request(ReadCoilsRequest(address=0, count=8))
        assert coils.value.code == 0x01


async def test_a_new_connection_closes_the_previous_one(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile, single_client=True) as sim:
        first = await _client(sim, huawei_profile)
        assert await first.read_tag("soc") == 50.0
        second = await _client(sim, huawei_profile)
        assert await second.read_tag("soc") == 50.0
        with pytest.raises(EOFError):
            await first.read_tag("soc")
        assert sim.state().connections_total == 2
        assert len(sim.state().connected_peers) == 1


async def test_multi_client_mode_keeps_both_connections(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile, single_client=False) as sim:
        first = await _client(sim, huawei_profile)
        second = await _client(sim, huawei_profile)
        assert await first.read_tag("soc") == 50.0
        assert await second.read_tag("soc") == 50.0


async def test_any_profile_is_served(autojump_clock, huawei_profile):
    tags = dict(huawei_profile.tags)
    tags["serial"] = Tag(name="serial", address=30015, type="string", length=10)
    blocks = (*huawei_profile.blocks, Block(name="info", table="holding", start=30000, end=30099))
    profile = attrs.evolve(huawei_profile, tags=tags, blocks=blocks)
    async with Simulator(profile) as sim:
        client = await _client(sim, profile)
        assert await client.read(30000, 10) == [0] * 10  # reserved
        assert await client.read_tag("serial") == ""  # a tag the model has no value for
        with pytest.raises(ModbusExceptionAnswer) as beyond:
            await client.read(30095, 10)
        assert beyond.value.code == 0x02
