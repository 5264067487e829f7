"""One control site (device link, safety guard, watchdog) wired to an in-process Simulator.

For tests (and benchmarks) of the site tree in virtual time: the driver is the real
UniversalDriver talking to the simulator's in-memory stream, and the wall clock follows Trio's
clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from bessai.clock import trio_wall_clock
from bessai.control.site import Site, SiteConfig, build_site
from bessai.device import UniversalDriver
from bessai.sim import Simulator

SITE, DEVICE = "site1", "inv1"


def make_site(sim: Simulator, site_id: str = SITE, device_id: str = DEVICE, *,
              profile: Any = None, config: Mapping[str, Any] | None = None,
              driver: Mapping[str, Any] | None = None, **build: Any) -> Site:
    """`build_site` for ``sim``, ids ``site_id``/``device_id``, on Trio's wall clock.

    ``profile``: the profile to drive it by (default the simulator's own; e.g. one discovered
    from it); ``config``: more `SiteConfig.from_profile` keywords (limits, write_path...);
    ``driver``: more `UniversalDriver` keywords; ``build``: more `build_site` keywords
    (metrics, outputs, schedules, control).
    """
    wall = trio_wall_clock()
    profile = sim.profile if profile is None else profile
    site_config = SiteConfig.from_profile(profile, site_id=site_id, device_id=device_id,
                                          **(config or {}))
    return build_site(
        site_config,
        lambda: UniversalDriver(profile, stream_factory=sim.stream_factory(), site_id=site_id,
                                device_id=device_id, wall_clock=wall, **(driver or {})),
        wall_clock=wall, **build)


@asynccontextmanager
async def running_site(site: Site, settle_s: float = 2.0) -> AsyncIterator[Site]:
    """``site``'s three children running (started in order, cancelled at exit), from
    ``settle_s`` after its link came up (the first polls in)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(site.device_link().run)
        await nursery.start(site.safety_guard().run)
        await nursery.start(site.watchdog().run)
        await site.ctx.link.wait_up()
        await trio.sleep(settle_s)
        yield site
        nursery.cancel_scope.cancel()
