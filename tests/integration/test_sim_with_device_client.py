"""The seam ``bessai-run --simulator`` uses: bessai.device's Trio ModbusClient on
``Simulator.stream_factory()`` streams, in memory, under virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bessai.device.errors import ModbusReadError, ModbusWriteError
from bessai.device.modbus import ModbusClient
from bessai.device.profile import load_profile
from bessai.sim import Simulator

PROFILE = load_profile(Path(__file__).resolve().parents[2] / "profiles" / "huawei_sun2000.json")


async def test_device_client_reads_and_forces_through_the_in_memory_simulator(autojump_clock):
    async with Simulator(PROFILE, soc_pct=55.0, start_hour=0.0) as sim:
        client = ModbusClient(sim.stream_factory(), unit_id=1, timeout_s=10.0)
        async with client:
            assert await client.read_holding_registers(37760, 1) == [550]
            await client.write_register(49999, 1)
            await client.write_registers(47249, [0, 2_000])
            await client.write_register(47083, 5)
            await client.write_register(47100, 2)
            await trio.sleep(30)
            assert await client.read_holding_registers(37765, 2) == [0xFFFF, 0x10000 - 2_000]
            with pytest.raises(ModbusWriteError) as denied:
                await client.write_register(37760, 1)
            assert denied.value.code == 0x80
            sim.faults.busy = True
            with pytest.raises(ModbusReadError) as busy:
                await client.read_holding_registers(37760, 1, tag="soc")
            assert busy.value.code == 0x06
        assert sim.state().forced_mode == 2
        assert sim.state().heartbeat_count == 1
