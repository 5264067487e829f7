"""The schedule executor against the simulator, in virtual time: the device follows its plan
through the same dispatch path and lease as commands; safety and direct commands take
precedence; peak_shave holds the grid import under its limit."""

from __future__ import annotations

import itertools

import trio
from structlog.testing import capture_logs

from bessai.control.controllers import ControllerConfig
from bessai.control.schedule import Schedule, Slot, SlotAction
from bessai.control.schedule_store import ScheduleBook
from bessai.control.site import Site
from bessai.model import Action, Command
from bessai.sim import Simulator
from tests.sites import make_site

T0 = 1_767_225_600.0  # Trio time 0 = 2026-01-01T00:00:00Z (trio_wall_clock's default epoch)
H = 3600.0
STOP, CHARGE, DISCHARGE = 0, 1, 2


def scheduled_site(sim: Simulator, book: ScheduleBook, **control: float) -> Site:
    return make_site(sim, schedules=book, control=ControllerConfig(**control))


def schedule(*slots: tuple[float, float, str, float | None, float | None],
             until_h: float = 24.0, sid: str = "s-1") -> Schedule:
    return Schedule(sid, "site1", "inv1", T0 + until_h * H,
                    [Slot(T0 + a * H, T0 + b * H, SlotAction(act), p, lim)
                     for a, b, act, p, lim in slots])


def mode_writes(sim: Simulator) -> list[tuple[float, int]]:
    return [(w.at, int(w.value)) for w in sim.write_log if w.tag == "forcible_mode"]


def booked(*slots: tuple[float, float, str, float | None, float | None],
           until_h: float = 24.0) -> ScheduleBook:
    """A schedule book holding one `schedule` of ``slots``."""
    book = ScheduleBook()
    book.put(schedule(*slots, until_h=until_h))
    return book


def recording_sim(soc_pct: float, start_hour: float = 0.0, **settings: float) -> Simulator:
    """A simulator at ``soc_pct`` from ``start_hour`` that keeps every write (the tests read
    the mode writes), its inverter ``settings`` overridden (``working_mode=1``: the battery
    idles unless forced; ``discharge_cutoff=0.0``: the gateway's 5 % is the only floor)."""
    sim = Simulator(soc_pct=soc_pct, start_hour=start_hour)
    sim.inverter.settings.update(settings)
    sim.inverter.write_log_max = 10**6
    return sim


def first_write_after(sim: Simulator, at: float, value: int) -> float | None:
    """The first write of ``value`` to the mode tag from ``at`` on (a millisecond early counts:
    wall time is epoch seconds in a float, a few hundred nanoseconds coarse)."""
    return next((t for t, v in mode_writes(sim) if t >= at - 1e-3 and v == value), None)


async def test_each_slot_boundary_reaches_the_device_within_one_poll(autojump_clock):
    q = 0.25  # quarter hours
    book = booked((q, 2 * q, "charge", 3000, None), (2 * q, 3 * q, "discharge", 2000, None),
                  (3 * q, 4 * q, "stop", None, None), until_h=5 * q)
    sim = recording_sim(50)
    site = scheduled_site(sim, book)
    with capture_logs() as logs:
        async with sim, trio.open_nursery() as nursery:
            await nursery.start(site.supervisor().run)
            for n, expect in ((1, CHARGE), (2, DISCHARGE), (3, STOP)):
                boundary = n * q * H
                await trio.sleep_until(boundary + 1.5)
                assert sim.state().forced_mode == expect, n
                at = first_write_after(sim, boundary, expect)
                assert at is not None, (n, mode_writes(sim)[-5:])
                assert at - boundary <= site.config.fast_interval_s
            # the charge slot held all its 15 minutes through the watchdog's lease renewals
            assert sim.values()["forcible_charge_power"] == 3000
            view = site.status()["schedule"]
            assert (view["slot"], view["slot_action"], view["state"]) == (2, "stop", "running")
            await trio.sleep_until(5 * q * H + 2)
            nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert events.count("SCHEDULE_EXPIRED") == 1
    assert sim.state().forced_mode == STOP
    emitted = [e.name for e in site.ctx.events.pending]
    assert emitted.count("SCHEDULE_SLOT_APPLIED") >= 4  # gap, charge, discharge, stop
    assert "SCHEDULE_EXPIRED" in emitted


async def test_a_restart_in_mid_slot_puts_the_slot_back_within_one_lease(autojump_clock):
    book = booked((0, 6, "discharge", 2500, None))
    sim = recording_sim(80)
    async with sim:
        first = scheduled_site(sim, book)
        async with trio.open_nursery() as nursery:
            await nursery.start(first.supervisor().run)
            await trio.sleep(600)
            assert sim.state().forced_mode == DISCHARGE
            nursery.cancel_scope.cancel()  # the gateway dies in mid-slot
        died = trio.current_time()
        lease_s = first.config.dispatch.spec.lease.period_s
        await trio.sleep(lease_s + 5)  # the device left forced mode by itself
        assert sim.state().forced_mode == STOP
        second = scheduled_site(sim, book)  # a new process: nothing but the stored schedule
        async with trio.open_nursery() as nursery:
            restarted = trio.current_time()
            await nursery.start(second.supervisor().run)
            await trio.sleep(10)
            back = first_write_after(sim, restarted, DISCHARGE)
            assert back is not None
            assert back - restarted <= lease_s
            assert sim.values()["forcible_discharge_power"] == 2500
            nursery.cancel_scope.cancel()
    assert died < restarted


async def test_soc_crossing_blocks_a_discharge_slot_and_the_plan_goes_on_after_hysteresis(
        autojump_clock):
    book = booked((0, 0.5, "discharge", 5000, None), (0.5, 0.6, "charge", 5000, None),
                  (0.6, 1, "discharge", 1000, None))
    sim = recording_sim(8.0, discharge_cutoff=0.0, working_mode=1)
    site = scheduled_site(sim, book)
    with capture_logs() as logs:
        async with sim, trio.open_nursery() as nursery:
            await nursery.start(site.supervisor().run)
            # discharging 5 kW from 8 %: below 5 % within minutes, then blocked and stopped
            await trio.sleep(0.25 * H)
            assert site.ctx.safety.blocked_discharge
            assert sim.state().forced_mode == STOP
            assert sim.state().soc_pct >= 4.5
            # the charge slot lifts the SOC past 5 % + 2 % hysteresis; the next discharge slot
            # goes on the device
            await trio.sleep_until(0.6 * H + 5)
            assert not site.ctx.safety.blocked_discharge
            assert sim.state().forced_mode == DISCHARGE
            nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert events.index("SAFETY_BLOCK") < events.index("SCHEDULE_SLOT_HELD") \
        < events.index("SAFETY_CLEAR")


async def test_a_held_discharge_slot_resumes_when_the_block_clears(autojump_clock):
    book = booked((0, 20, "discharge", 2000, None))
    # below the 5 % limit: blocked from the start
    sim = recording_sim(4.0, discharge_cutoff=0.0, working_mode=1)
    site = scheduled_site(sim, book)
    with capture_logs() as logs:
        async with sim, trio.open_nursery() as nursery:
            await nursery.start(site.supervisor().run)
            await trio.sleep(60)
            assert site.ctx.safety.blocked_discharge
            assert sim.state().forced_mode == STOP
            sim.model.soc_pct = 6.0  # inside the hysteresis band: still blocked
            await trio.sleep(30)
            assert sim.state().forced_mode == STOP
            sim.model.soc_pct = 7.5  # past 5 % + 2 %: cleared
            cleared = trio.current_time()
            await trio.sleep(10)
            assert sim.state().forced_mode == DISCHARGE
            resumed = first_write_after(sim, cleared, DISCHARGE)
            assert resumed is not None
            assert resumed - cleared <= 3 * site.config.fast_interval_s
            nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert events.index("SCHEDULE_SLOT_HELD") < events.index("SAFETY_CLEAR") \
        < events.index("SCHEDULE_SLOT_RESUMED")


async def test_a_direct_command_overrides_the_slot_for_its_lifetime_then_yields(
        autojump_clock):
    book = booked((0, 6, "charge", 3000, None))
    sim = recording_sim(50)
    site = scheduled_site(sim, book)
    with capture_logs() as logs:
        async with sim, trio.open_nursery() as nursery:
            await nursery.start(site.supervisor().run)
            await trio.sleep(60)
            assert sim.state().forced_mode == CHARGE
            now = site.ctx.wall_clock()
            outcome = await site.gate.submit(Command("c-1", "site1", "inv1", Action.DISCHARGE,
                                                     1500.0, now, now + 300))
            assert outcome.accepted
            for _ in range(25):  # the whole command's life: the schedule keeps off
                await trio.sleep(10)
                if site.ctx.wall_clock() < now + 299:
                    assert sim.state().forced_mode == DISCHARGE
            ended = now + 300 - T0
            await trio.sleep_until(ended + 5)
            assert sim.state().forced_mode == CHARGE
            back = first_write_after(sim, ended, CHARGE)
            assert back is not None
            assert back - ended <= site.config.fast_interval_s
            assert sim.values()["forcible_charge_power"] == 3000
            nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert events.index("SCHEDULE_OVERRIDDEN") < events.index("SCHEDULE_SLOT_RESUMED")


async def test_peak_shave_keeps_grid_import_under_the_limit_except_the_step_response(
        autojump_clock):
    limit_w = 1500.0
    step_s = 10.0
    book = booked((0, 3, "peak_shave", None, limit_w))
    sim = recording_sim(90, start_hour=17, working_mode=1)  # the evening: 17:00 to 20:00
    site = scheduled_site(sim, book, step_s=step_s, deadband_w=150.0, ramp_w_per_s=20.0)
    poll_s = site.config.fast_interval_s
    step_response_s = step_s + 2 * poll_s
    over_since = None
    longest_over = 0.0
    peak_load = 0.0
    imports_without = []
    async with sim, trio.open_nursery() as nursery:
        await nursery.start(site.supervisor().run)
        await trio.sleep_until(60)  # the first decision of the slot
        while trio.current_time() < 3 * H - 1:
            await trio.sleep(1)
            s = sim.state()
            peak_load = max(peak_load, s.load_power_w)
            imports_without.append(s.load_power_w - s.pv_power_w)
            if -s.meter_power_w > limit_w + 1:
                over_since = trio.current_time() if over_since is None else over_since
                longest_over = max(longest_over, trio.current_time() - over_since)
            else:
                over_since = None
        nursery.cancel_scope.cancel()
    # the simulated evening makes a peak above the limit, which the battery shaved
    assert max(imports_without) > limit_w + 500
    assert longest_over <= step_response_s
    # the executor's own writes (the guard may stop a charge-back at SOC max in between)
    writes = [e.ts - T0 for e in site.ctx.events.pending
              if e.name in ("SCHEDULE_SLOT_APPLIED", "SCHEDULE_SETPOINT")]
    assert len(writes) > 5
    close = [(round(a, 2), round(b, 2)) for a, b in itertools.pairwise(writes)
             if b - a < step_s - 0.01]
    assert not close, close[:5]  # never more often than the control step
