"""One control site (device link, safety guard, watchdog) wired to an in-process Simulator.

For tests of the site tree in virtual time: the driver is the real UniversalDriver talking to the
simulator's in-memory stream, and the wall clock follows Trio's clock.
"""

from __future__ import annotations

from bessai.clock import trio_wall_clock
from bessai.control.site import SiteConfig, build_site
from bessai.device import UniversalDriver
from bessai.sim import Simulator

SITE, DEVICE = "site1", "inv1"


def make_site(sim: Simulator, site_id: str = SITE, device_id: str = DEVICE):
    """`build_site` for ``sim``'s profile, ids ``site_id``/``device_id``, on Trio's wall clock."""
    wall = trio_wall_clock()
    config = SiteConfig.from_profile(sim.profile, site_id=site_id, device_id=device_id)
    return build_site(
        config,
        lambda: UniversalDriver(sim.profile, stream_factory=sim.stream_factory(),
                                site_id=site_id, device_id=device_id, wall_clock=wall),
        wall_clock=wall)
