"""Start-up is not a safety incident: until the device's first snapshot the guard blocks both
directions and says so once at WARNING (SAFETY_WAITING_FOR_DATA); the runbook's alert grep
(`level=CRITICAL event=SAFETY_BLOCK`) fires only if a real rule trips on real data, or if no
snapshot arrives within the stated deadline. Virtual time, the in-process simulator."""

import trio
from structlog.testing import capture_logs

from bessai.control.guard import FIRST_DATA_DEADLINE_S
from bessai.control.limits import NO_DATA, SOC_MIN
from bessai.sim import Simulator
from tests.sites import make_site


def criticals(logs):
    return [e for e in logs if e["log_level"] == "critical"]


async def run_for(site, seconds):
    async with trio.open_nursery() as nursery:
        await nursery.start(site.device_link().run)
        await nursery.start(site.safety_guard().run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def test_a_normal_start_blocks_until_the_first_snapshot_without_a_critical_line(
        autojump_clock):
    sim = Simulator(soc_pct=50)
    with capture_logs() as logs:
        async with sim:
            site = make_site(sim)
            assert site.ctx.safety.blocked_charge  # before anything ran: blocked
            assert site.ctx.safety.blocked_discharge
            await run_for(site, 10)
    events = [e["event"] for e in logs]
    waiting = next(e for e in logs if e["event"] == "SAFETY_WAITING_FOR_DATA")
    assert waiting["log_level"] == "warning"
    assert waiting["deadline_s"] == FIRST_DATA_DEADLINE_S
    assert events.index("SAFETY_WAITING_FOR_DATA") < events.index("SAFETY_DATA_READY")
    assert criticals(logs) == []
    assert "SAFETY_CLEAR" not in events
    assert site.ctx.safety.ok
    assert site.ctx.events.take_nowait() == []  # nothing critical published either


async def test_a_device_silent_from_the_start_is_critical_only_after_the_deadline(
        autojump_clock):
    sim = Simulator(soc_pct=50)
    sim.faults.silent = True
    with capture_logs() as logs:
        async with sim:
            site = make_site(sim)
            await run_for(site, FIRST_DATA_DEADLINE_S - 1)
            assert criticals(logs) == []
            assert site.ctx.safety.blocked_charge
            assert site.ctx.safety.blocked_discharge
            await run_for(site, 5)  # a restarted guard goes on from the same state
    blocks = [e for e in criticals(logs) if e["event"] == "SAFETY_BLOCK"]
    assert [b["rule"] for b in blocks] == [NO_DATA]


async def test_a_limit_tripped_by_the_first_reading_is_critical_at_once(autojump_clock):
    sim = Simulator(soc_pct=4.0)
    with capture_logs() as logs:
        async with sim:
            await run_for(make_site(sim), 5)
    blocks = [e for e in criticals(logs) if e["event"] == "SAFETY_BLOCK"]
    assert [b["rule"] for b in blocks] == [SOC_MIN]
