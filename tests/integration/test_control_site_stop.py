"""A site's tree stops at once when asked: with 100 devices the gateway stops the sites one after
another, so any per-site wait (e.g. a guard sleeping until the next snapshot) is paid 100 times
and overruns SHUTDOWN_DEADLINE_S. Virtual time (autojump), in-process simulator: a stop that
waits on no timer takes exactly zero virtual seconds, so any wait for a poll, a tick or a grace
shows up as a whole interval, whatever the load on the machine."""

import trio

from bessai.sim import Simulator
from tests.sites import make_site


async def test_a_stop_right_after_a_snapshot_does_not_wait_for_the_next_poll(autojump_clock):
    async with Simulator(soc_pct=50) as sim:
        site = make_site(sim)
        sup = site.supervisor()
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(10)
            seen = site.ctx.snapshots.latest().version
            await site.ctx.snapshots.wait_newer(seen)  # the next poll is a whole interval away
            asked = trio.current_time()
            await sup.stop()
            took = trio.current_time() - asked
        assert took == 0.0, f"the site waited {took:.3f} virtual s to stop"


async def test_the_guard_ends_promptly_when_asked_to_stop_between_snapshots(autojump_clock):
    async with Simulator(soc_pct=50) as sim:
        site = make_site(sim)
        guard = site.safety_guard()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:  # its only task: the guard
                await nursery.start(guard.run)
                await trio.sleep(0.3)  # waiting: no snapshot will come (no device link runs)
                asked = trio.current_time()
                guard.request_stop()
            took = trio.current_time() - asked  # the nursery closed: the guard returned
        assert took == 0.0, f"the guard waited {took:.3f} virtual s to end"
