"""Bugs the chaos suite found, each pinned by a small test of its own (virtual time)."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.control.site import SiteConfig, build_site
from bessai.device import UniversalDriver
from bessai.sim import Simulator

SITE, DEVICE = "site1", "inv1"


def make_site(sim: Simulator):
    wall = trio_wall_clock()
    config = SiteConfig.from_profile(sim.profile, site_id=SITE, device_id=DEVICE)
    return build_site(
        config,
        lambda: UniversalDriver(sim.profile, stream_factory=sim.stream_factory(),
                                site_id=SITE, device_id=DEVICE, wall_clock=wall),
        wall_clock=wall)


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
