"""Bugs the chaos suite found, each pinned by a small test of its own (virtual time)."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.sim import Simulator
from tests.pubsub_faults import FreezingLimiter
from tests.sites import DEVICE, SITE, make_site


async def test_a_slow_device_answering_within_its_timeout_keeps_the_link_up(autojump_clock):
    """Found by chaos `device-busy-slow`: replies 8 s late (Huawei documents up to 10 s) made
    every multi-request poll overrun the device link's whole-call bound (35 s), so the link
    declared DEVICE_LINK_DOWN, reconnected, chattered stale-data SAFETY_BLOCK/CLEAR and let a
    heartbeat gap reach 38.8 s. The bound now covers each request of the poll."""
    async with Simulator(soc_pct=50) as sim:
        site = make_site(sim)
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(site.supervisor().run)
                await trio.sleep(5)
                sim.faults.delay_s = 8.0
                await trio.sleep(300)
                state = sim.state()
                nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert "DEVICE_LINK_DOWN" not in events
    assert state.connections_total == 1  # never reconnected
    assert not state.comm_lost


async def test_a_spool_actor_restart_keeps_the_live_uplinks_leases(autojump_clock, tmp_path):
    """Found by chaos `crash-spool-mid-drain`: a restart of the spool actor (the Spool object
    outlives it) forgot every lease, so the batch the uplink had in flight was leased and
    published again — 313 duplicates after a 5-minute cut."""
    from bessai.model import Snapshot, TagReading
    from bessai.uplink.message import record_from_snapshot
    from bessai.uplink.spool import Spool

    wall = trio_wall_clock()
    spool = Spool(tmp_path / "spool.sqlite", wall_clock=wall, limiter=FreezingLimiter())
    records = [record_from_snapshot(Snapshot(site_id=SITE, device_id=DEVICE, ts=wall() + i,
                                             taken_at=float(i),
                                             readings={"soc": TagReading(50.0)}))
               for i in range(10)]
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def run_once(scope, task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await spool.run(task_status=task_status)

        await nursery.start(run_once, first)
        await spool.append_many(records)
        in_flight = await spool.lease(1000)  # the uplink publishes these...
        assert len(in_flight) == 10
        first.cancel()  # ...while the spool actor crashes and is restarted
        await trio.sleep(1)
        await nursery.start(run_once, trio.CancelScope())
        assert await spool.lease(1000) == []  # not leased a second time
        spool.ack(in_flight)  # the publish returned: the rows go
        await trio.sleep(1)
        assert spool.stats().depth == 0
        assert spool.stats().leased == 0
        nursery.cancel_scope.cancel()
