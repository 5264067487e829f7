"""The simulator as pymodbus's own asyncio client sees it, over a real socket on 127.0.0.1.

The client runs in a worker thread with its own asyncio loop (pymodbus is asyncio-only); the
simulator runs in Trio under a MockClock with autojump_threshold 0.05 (real I/O is pending
while the clock may jump). The site is set up so values cannot drift while the clock jumps:
night (no PV), SOC at the discharge cutoff (the battery cannot cover the load), battery at
ambient temperature.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from pymodbus.client import AsyncModbusTcpClient

from bessai.device.profile import Profile, load_profile
from bessai.sim import Simulator

PROFILE_PATH = Path(__file__).resolve().parents[2] / "profiles" / "huawei_sun2000.json"
DT = AsyncModbusTcpClient.DATATYPE


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
def profile() -> Profile:
    loaded = load_profile(PROFILE_PATH)
    return attrs.evolve(loaded, watchdog=attrs.evolve(loaded.watchdog, device_timeout_s=86_400.0))


def _value(client: type[AsyncModbusTcpClient], regs: list[int], dtype: Any, gain: float = 1):
    raw = client.convert_from_registers(regs, dtype)
    return raw / gain if gain != 1 else raw


async def _read_core_tags(port: int) -> dict[str, Any]:
    """Every core tag, decoded with pymodbus's own converters (independent of bessai's codec)."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5)
    assert await client.connect()
    spec = {
        "soc": (37760, 1, DT.UINT16, 10),
        "battery_power": (37765, 2, DT.INT32, 1),
        "battery_temp": (37022, 1, DT.INT16, 10),
        "battery_status": (37762, 1, DT.UINT16, 1),
        "active_power": (32080, 2, DT.INT32, 1),
        "input_power": (32064, 2, DT.INT32, 1),
        "meter_power": (37113, 2, DT.INT32, 1),
        "device_status": (32089, 1, DT.UINT16, 1),
        "inverter_temp": (32087, 1, DT.INT16, 10),
        "grid_frequency": (32085, 1, DT.UINT16, 100),
        "rated_capacity": (37758, 2, DT.UINT32, 1),
        "max_charge_power": (37046, 2, DT.UINT32, 1),
        "max_discharge_power": (37048, 2, DT.UINT32, 1),
        "working_mode": (47086, 1, DT.UINT16, 1),
        "charge_cutoff": (47081, 1, DT.UINT16, 10),
        "discharge_cutoff": (47082, 1, DT.UINT16, 10),
        "forcible_mode": (47100, 1, DT.UINT16, 1),
    }
    out: dict[str, Any] = {}
    try:
        for name, (address, count, dtype, gain) in spec.items():
            rr = await client.read_holding_registers(address, count=count, device_id=1)
            assert not rr.isError(), (name, rr)
            out[name] = _value(AsyncModbusTcpClient, rr.registers, dtype, gain)
        rr = await client.read_holding_registers(37758, count=9, device_id=1)
        out["span"] = None if rr.isError() else list(rr.registers)
        rr = await client.read_holding_registers(40000, count=2, device_id=1)
        out["outside_code"] = rr.exception_code if rr.isError() else None
    finally:
        client.close()
    return out


async def _write_dispatch(port: int) -> dict[str, Any]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5)
    assert await client.connect()
    out: dict[str, Any] = {}
    try:
        assert not (await client.write_register(49999, 1, device_id=1)).isError()
        assert not (await client.write_register(47081, 955, device_id=1)).isError()  # 95.5 %
        assert not (await client.write_register(47083, 30, device_id=1)).isError()
        assert not (await client.write_registers(47247, [0, 2_500], device_id=1)).isError()
        assert not (await client.write_register(47100, 1, device_id=1)).isError()
        rr = await client.read_holding_registers(47247, count=2, device_id=1)
        out["forcible_charge_power"] = client.convert_from_registers(rr.registers, DT.UINT32)
        rr = await client.read_holding_registers(47081, count=1, device_id=1)
        out["charge_cutoff"] = rr.registers[0] / 10
        rr = await client.read_holding_registers(47100, count=1, device_id=1)
        out["forcible_mode"] = rr.registers[0]
        wr = await client.write_register(37760, 900, device_id=1)  # SOC is read-only
        out["read_only_code"] = wr.exception_code if wr.isError() else None
    finally:
        client.close()
    return out


@asynccontextmanager
async def night_site_served(profile: Profile) -> AsyncIterator[tuple[Simulator, int]]:
    """The simulator (10 % SOC at 1 a.m., 25 °C: nothing drifts) served on a TCP port."""
    async with (
        Simulator(profile, soc_pct=10.0, temp_c=25.0, start_hour=1.0) as sim,
        trio.open_nursery() as nursery,
    ):
        _, port = await nursery.start(sim.serve_tcp, "127.0.0.1", 0)
        yield sim, port
        nursery.cancel_scope.cancel()


async def with_pymodbus(coro_fn: Any, port: int) -> dict[str, Any]:
    """``coro_fn(port)`` (pymodbus's asyncio client) in a worker thread with its own loop."""
    return await trio.to_thread.run_sync(lambda: asyncio.run(coro_fn(port)))


async def test_pymodbus_client_reads_every_core_tag_with_correct_scaling(clock, profile):
    async with night_site_served(profile) as (sim, port):
        got = await with_pymodbus(_read_core_tags, port)
        values = sim.values()
    assert got["soc"] == 10.0
    assert got["battery_power"] == 0
    assert got["battery_temp"] == 25.0
    assert got["battery_status"] == 1  # standby: at the cutoff with no PV
    assert got["active_power"] == 0
    assert got["input_power"] == 0
    assert -3_000 < got["meter_power"] < 0  # importing the household load
    assert values["meter_power"] < 0
    assert got["device_status"] == 0x0200
    assert got["inverter_temp"] == 30.0
    assert 49.97 <= got["grid_frequency"] <= 50.03
    assert got["rated_capacity"] == 10_000
    assert got["max_charge_power"] == 5_000
    assert got["max_discharge_power"] == 5_000
    assert got["working_mode"] == 2
    assert got["charge_cutoff"] == 100.0
    assert got["discharge_cutoff"] == 10.0
    assert got["forcible_mode"] == 0
    # 37758..37766 spans reserved 37761, 37763, 37764: they read as 0.
    assert got["span"] == [0, 10_000, 100, 0, 1, 0, 0, 0, 0]
    assert got["outside_code"] == 0x02


async def test_pymodbus_client_writes_to_rw_tags_take_effect(clock, profile):
    async with night_site_served(profile) as (sim, port):
        got = await with_pymodbus(_write_dispatch, port)
        await trio.sleep(60)
        state = sim.state()
    assert got["forcible_charge_power"] == 2_500
    assert got["charge_cutoff"] == 95.5
    assert got["forcible_mode"] == 1
    assert got["read_only_code"] == 0x80
    assert state.forced_mode == 1
    assert state.heartbeat_count == 1
    assert state.battery_power_w == pytest.approx(2_500)
    assert state.soc_pct > 10.0
    assert [r.tag for r in sim.write_log] == [
        "heartbeat",
        "charge_cutoff",
        "forcible_period",
        "forcible_charge_power",
        "forcible_mode",
    ]
