"""UniversalDriver against the in-process simulator (bessai.sim) over in-memory streams.

Virtual time throughout (autojump_clock): the simulator's battery, lease and comm watchdog run
on Trio's clock, so minutes of device behaviour take milliseconds.
"""

from __future__ import annotations

import pytest
import structlog.testing
import trio

from bessai.clock import trio_wall_clock
from bessai.device import TagWriteRefused, UniversalDriver, load_profile
from bessai.device.profile import Poll
from bessai.sim import Simulator

CORE = ["soc", "battery_power", "battery_temp", "battery_status", "active_power", "input_power",
        "meter_power", "device_status", "inverter_temp", "grid_frequency"]


@pytest.fixture
def profile():
    return load_profile("profiles/huawei_sun2000.json")


def _driver(profile, sim, **kw):
    return UniversalDriver(profile, stream_factory=sim.stream_factory(), site_id="s1",
                           wall_clock=trio_wall_clock(), **kw)


async def test_snapshot_matches_the_simulated_device(profile, autojump_clock):
    async with Simulator(profile, soc_pct=64.2, temp_c=27.5) as sim, _driver(profile, sim) as drv:
        snap = await drv.read_all()
        state = sim.state()
    for name in CORE:
        assert snap.readings[name].valid, (name, snap.readings[name])
    assert snap.value("soc") == pytest.approx(state.soc_pct, abs=0.1)
    assert snap.value("battery_temp") == pytest.approx(state.battery_temp_c, abs=0.1)
    assert snap.value("battery_power") == pytest.approx(state.battery_power_w, abs=1)
    assert drv.client.stats.requests == 8  # the planned requests, not one per tag
    assert set(snap.readings) == {n for n, t in profile.tags.items() if t.readable}


async def test_forced_charge_through_the_dispatch_spec_and_the_device_side_lease(
        profile, autojump_clock):
    d = profile.dispatch
    async with Simulator(profile, soc_pct=40) as sim, _driver(profile, sim) as drv:
        for write in d.preset:
            await drv.write_tag(write.tag, write.value)
        await drv.write_tag(d.charge_power_tag, 2000)
        await drv.write_tag(d.lease.tag, d.lease.period)
        await drv.write_tag(d.mode_tag, d.charge_value)
        await trio.sleep(30)
        assert await drv.read_tag(d.mode_tag) == d.charge_value
        assert await drv.read_tag("battery_power") > 0
        # Nobody renews the lease: the inverter leaves forced mode by itself.
        await trio.sleep(d.lease.period_s + 5)
        assert await drv.read_tag(d.mode_tag) == d.stop_value


async def test_missing_heartbeat_shows_as_comm_loss_and_heartbeats_prevent_it(
        profile, autojump_clock):
    wd = profile.watchdog
    async with Simulator(profile) as sim, _driver(profile, sim) as drv:
        for _ in range(int(wd.device_timeout_s * 2 / wd.interval_s)):
            await drv.write_tag(wd.heartbeat_tag, wd.heartbeat_value)
            await trio.sleep(wd.interval_s)
        assert await drv.read_tag(wd.comm_loss_tag) != wd.comm_loss_value
        await trio.sleep(wd.device_timeout_s + 1)
        assert await drv.read_tag(wd.comm_loss_tag) == wd.comm_loss_value


async def test_busy_device_marks_tags_invalid_then_recovers(profile, autojump_clock):
    async with Simulator(profile) as sim, _driver(profile, sim) as drv:
        sim.faults.busy = True
        snap = await drv.read_all(Poll.FAST)
        assert snap.readings
        assert all(r.reason == "ModbusReadError 0x06 (server device busy)"
                   for r in snap.readings.values())
        sim.faults.clear()
        snap = await drv.read_all(Poll.FAST)
        assert all(r.valid for r in snap.readings.values())


async def test_silent_device_costs_one_timeout_per_snapshot_then_reconnects(
        profile, autojump_clock):
    async with Simulator(profile) as sim, _driver(profile, sim) as drv:
        await drv.read_all()
        sim.faults.silent = True
        start = trio.current_time()
        snap = await drv.read_all()
        elapsed = trio.current_time() - start
        assert elapsed == pytest.approx(profile.connection.timeout_s, abs=0.5)
        reasons = {r.reason for r in snap.readings.values()}
        assert "ModbusTimeout" in reasons
        assert not any(r.valid for r in snap.readings.values())
        assert not drv.connected
        sim.faults.clear()
        await trio.sleep(2)  # past the backoff
        snap = await drv.read_all()
        assert snap.value("soc") is not None
        assert sim.state().connections_total == 2


async def test_dropped_connection_is_reopened_on_the_next_poll(profile, autojump_clock):
    async with Simulator(profile) as sim, _driver(profile, sim) as drv:
        await drv.read_all(Poll.FAST)
        sim.drop_connections()
        snap = await drv.read_all(Poll.FAST)
        assert any(not r.valid and r.reason.startswith("ConnectionError")
                   for r in snap.readings.values())
        await trio.sleep(2)
        snap = await drv.read_all(Poll.FAST)
        assert all(r.valid for r in snap.readings.values())


async def test_operator_log_lines_name_modbusreaderror_and_connectionerror_once_per_change(
        profile, autojump_clock):
    with structlog.testing.capture_logs() as logs:
        async with Simulator(profile) as sim, _driver(profile, sim) as drv:
            n_fast = len(drv.plan(Poll.FAST))
            await drv.read_all(Poll.FAST)
            sim.faults.busy = True
            await drv.read_all(Poll.FAST)
            await drv.read_all(Poll.FAST)  # same failure again: no new lines
            sim.faults.clear()
            await drv.read_all(Poll.FAST)
            sim.drop_connections()
            await drv.read_all(Poll.FAST)
            await drv.read_all(Poll.FAST)  # reconnected (no owner: on demand)
            await drv.read_all(Poll.FAST)  # and up: no new line
    failed = [e for e in logs if e["event"] == "device_read_failed"]
    assert len(failed) == n_fast
    assert all(e["error"] == "ModbusReadError" and "0x06" in e["detail"] for e in failed)
    recovered = [e for e in logs if e["event"] == "device_read_recovered"]
    assert len(recovered) == n_fast
    down = [e for e in logs if e["event"] == "DEVICE_LINK_DOWN"]
    assert len(down) == 1
    assert "ConnectionError" in down[0]["reason"]
    assert [e["event"] for e in logs if e["event"].startswith("DEVICE_LINK")] == [
        "DEVICE_LINK_UP", "DEVICE_LINK_DOWN", "DEVICE_LINK_UP"]
    assert all(e["site"] == "s1" and e["device"] == "huawei_sun2000"
               for e in failed + down)


async def test_write_tags_refuses_the_whole_sequence_before_sending_any(profile, autojump_clock):
    async with Simulator(profile) as sim, _driver(profile, sim) as drv:
        with pytest.raises(TagWriteRefused, match="forcible_charge_power"):
            await drv.write_tags([("forcible_setting_mode", 0), ("forcible_period", 1),
                                  ("forcible_charge_power", 99_999), ("forcible_mode", 1)])
        assert drv.client.stats.requests == 0
        assert sim.write_log == []
        await drv.write_tags([("forcible_setting_mode", 0), ("forcible_charge_power", 1500),
                              ("forcible_period", 1), ("forcible_mode", 1)])
        assert [w.tag for w in sim.write_log] == ["forcible_setting_mode",
                                                  "forcible_charge_power", "forcible_period",
                                                  "forcible_mode"]
        assert sim.state().forced_mode == 1


async def test_cancelled_connect_delay_leaves_no_half_open_connection(profile, autojump_clock):
    async with Simulator(profile) as sim, _driver(profile, sim, post_connect_delay_s=1.0) as drv:
        with trio.move_on_after(0.5):
            await drv.connect()
        assert not drv.connected
        assert await drv.read_tag("soc") is not None
