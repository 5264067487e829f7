"""Fault controls: busy, silent, slow, dropped — what a client sees (virtual time)."""

from __future__ import annotations

import pytest
import trio
from sim_testclient import ModbusExceptionAnswer, TrioTestClient

from bessai.sim import Simulator


async def _client(sim: Simulator, profile) -> TrioTestClient:
    return TrioTestClient(await sim.stream_factory()(), profile)


async def test_busy_fault_answers_exception_0x06_until_cleared(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        sim.faults.busy = True
        with pytest.raises(ModbusExceptionAnswer) as busy:
            await client.read_tag("soc")
        assert busy.value.code == 0x06
        with pytest.raises(ModbusExceptionAnswer):
            await client.write_tag("working_mode", 2)
        sim.faults.busy = False
        assert await client.read_tag("soc") == 50.0


async def test_silent_fault_never_answers(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        sim.faults.silent = True
        with trio.move_on_after(30) as waited:
            await client.read_tag("soc")
        assert waited.cancelled_caught
        sim.faults.silent = False
        assert await client.read_tag("soc") == pytest.approx(sim.state().soc_pct, abs=0.051)


async def test_delay_fault_answers_after_delay(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        sim.faults.delay_s = 8.0
        t0 = trio.current_time()
        soc = await client.read_tag("soc")
        assert trio.current_time() - t0 == pytest.approx(8.0)
        assert soc == pytest.approx(sim.state().soc_pct, abs=0.051)  # the value at answer time


async def test_drop_on_request_closes_the_connection(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = await _client(sim, huawei_profile)
        sim.faults.drop_on_request = True
        with pytest.raises(EOFError):
            await client.read_tag("soc")
        assert sim.state().connected_peers == ()
        again = await _client(sim, huawei_profile)  # the listener is still there
        assert await again.read_tag("soc") == 50.0


async def test_drop_connections_closes_every_client_now(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile, single_client=False) as sim:
        first, second = await _client(sim, huawei_profile), await _client(sim, huawei_profile)
        await trio.sleep(0.1)
        assert sim.drop_connections() == 2
        for client in (first, second):
            with pytest.raises(EOFError):
                await client.read_tag("soc")


async def test_device_fault_reports_fault_shutdown_and_idles_the_battery(
    autojump_clock, huawei_profile
):
    async with Simulator(huawei_profile, start_hour=0.0) as sim:
        client = await _client(sim, huawei_profile)
        sim.faults.device_fault = True
        await trio.sleep(5)
        assert await client.read_tag("device_status") == 0x0300
        assert await client.read_tag("battery_status") == 3
        assert await client.read_tag("battery_power") == 0


async def test_garbage_frame_closes_the_connection(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        stream = await sim.stream_factory()()
        await stream.send_all(b"\x00\x01\x12\x34\x00\x06\x01\x03\x00\x00\x00\x01")  # pid 0x1234
        assert await stream.receive_some(100) == b""


async def test_busy_after_connect_answers_0x06_until_the_connection_is_old_enough(
    autojump_clock, huawei_profile
):
    async with Simulator(huawei_profile) as sim:
        sim.faults.busy_after_connect_s = 1.0
        client = await _client(sim, huawei_profile)
        with pytest.raises(ModbusExceptionAnswer) as early:
            await client.read_tag("soc")
        assert early.value.code == 0x06
        await trio.sleep(1.0)
        assert await client.read_tag("soc") == pytest.approx(sim.state().soc_pct, abs=0.051)


async def test_pinned_and_invalid_tags_are_what_the_registers_report(
    autojump_clock, huawei_profile
):
    async with Simulator(huawei_profile, soc_pct=50.0) as sim:
        client = await _client(sim, huawei_profile)
        sim.faults.pinned["battery_temp"] = 46.0
        sim.faults.invalid_tags.add("soc")
        assert await client.read_tag("battery_temp") == 46.0
        assert await client.read(huawei_profile.tag("soc").address, 1) == [0xFFFF]
        assert await client.read_tag("soc") is None
        assert sim.state().soc_pct > 0  # the physics carry on underneath
        sim.faults.clear()
        assert await client.read_tag("battery_temp") == pytest.approx(25.0, abs=0.5)
        assert await client.read_tag("soc") == pytest.approx(sim.state().soc_pct, abs=0.051)
