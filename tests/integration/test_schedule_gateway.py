"""The whole gateway keeps a schedule across a restart: the second process reads the plan the
first one stored and puts the slot in force back on the device within one lease."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from bessai.clock import trio_wall_clock
from bessai.gateway import Gateway
from bessai.settings import BindAddress, DeviceSpec, Settings
from bessai.sim import Simulator


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)  # SQLite threads: real I/O


def settings(tmp_path: Path) -> Settings:
    return Settings(site_id="site1", devices=(DeviceSpec("inv1", "127.0.0.1"),),
                    spool_path=tmp_path / "spool" / "outbox.sqlite",
                    status_bind=BindAddress("127.0.0.1", 0), shutdown_deadline_s=5.0)


def plan(now: float) -> bytes:
    return json.dumps({
        "type": "schedule", "schedule_id": "s-restart", "site_id": "site1", "device_id": "inv1",
        "valid_until": now + 6 * 3600,
        "slots": [{"start": now, "end": now + 6 * 3600, "action": "discharge",
                   "power_w": 2200}]}).encode()


async def test_a_restarted_gateway_puts_the_stored_slot_back_within_one_lease(tmp_path):
    sim = Simulator(soc_pct=80, start_hour=0)
    sim.inverter.write_log_max = 10**6
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        first = Gateway(settings(tmp_path), wall_clock=trio_wall_clock(),
                        stream_factories={"inv1": sim.stream_factory()}, status_server=False,
                        env_file=None)
        async with trio.open_nursery() as run:
            await run.start(first.run)
            # the schedule arrives the way the commands subscription hands it over
            outcome = await first.schedule_intake.route(
                first.router.handle_command_message)(plan(first.wall_clock()), {})
            assert outcome.accepted, outcome
            await trio.sleep(15)
            assert sim.state().forced_mode == 2
            run.cancel_scope.cancel()  # the process dies in mid-slot (no graceful stop)
        lease_s = first.sites["inv1"].config.dispatch.spec.lease.period_s
        second = Gateway(settings(tmp_path), wall_clock=trio_wall_clock(),
                         stream_factories={"inv1": sim.stream_factory()}, status_server=False,
                         env_file=None)
        assert second.schedule_book.get("inv1").schedule_id == "s-restart"  # from disk
        restarted = trio.current_time()
        async with trio.open_nursery() as run:
            await run.start(second.run)
            # the slot is written again (not left to the dying lease of the first process)
            with trio.move_on_after(lease_s):
                while not [w for w in sim.write_log if w.at >= restarted
                           and w.tag == "forcible_mode" and w.value == 2]:
                    await trio.sleep(0.5)
            rewrites = [w.at for w in sim.write_log if w.at >= restarted
                        and w.tag == "forcible_mode" and w.value == 2]
            assert rewrites
            assert rewrites[0] - restarted <= lease_s
            assert sim.state().forced_mode == 2
            assert sim.values()["forcible_discharge_power"] == 2200
            second.request_stop()
        nursery.cancel_scope.cancel()
    assert (tmp_path / "spool" / "schedules.sqlite").exists()
