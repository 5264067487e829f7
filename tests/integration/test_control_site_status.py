"""A site's status is read from the cells its children publish into, never from an instance
(issue 17): when a child crashes, `Site.status` says so during the restart backoff instead of
repeating the dead instance's last state, and the new instances publish their own.

The site runs against the in-process simulator in virtual time. The crash is a bug in a driver:
a complete `Driver` wrapping the real `UniversalDriver` whose ``unit_fault`` raises once — it
escapes the device link, so the site supervisor (rest_for_one) restarts the link and everything
after it, the schedule executor included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from actors import EventKind, ExitReason, SupervisorEvent
from bessai.clock import trio_wall_clock
from bessai.control.device_link import Driver, PollClass
from bessai.control.schedule import Schedule, Slot, SlotAction
from bessai.control.schedule_store import ScheduleBook
from bessai.control.site import Site, SiteConfig, build_site
from bessai.device import UniversalDriver
from bessai.device.connection import ModbusConnection
from bessai.device.modbus import PRIORITY_WRITE
from bessai.device.planner import ReadRequest
from bessai.model import Snapshot
from bessai.sim import Simulator

T0 = 1_767_225_600.0  # Trio time 0 (trio_wall_clock's default epoch)


class DriverBug(RuntimeError):
    pass


@attrs.define
class BuggyDriver:
    """Every `Driver` member, delegated to the real driver; ``unit_fault`` raises once armed."""

    inner: UniversalDriver
    armed: bool = False

    @property
    def connection(self) -> ModbusConnection:
        return self.inner.connection

    @property
    def unit_fault(self) -> Exception | None:
        if self.armed:
            self.armed = False
            raise DriverBug("injected bug in the driver")
        return self.inner.unit_fault

    def plan(self, poll_class: PollClass = None) -> Sequence[ReadRequest]:
        return self.inner.plan(poll_class)

    async def connect(self) -> None:
        await self.inner.connect()

    async def read_all(self, poll_class: PollClass = None) -> Snapshot:
        return await self.inner.read_all(poll_class)

    async def write_tag(self, name: str, value: float | int, *,
                        priority: int = PRIORITY_WRITE) -> None:
        await self.inner.write_tag(name, value, priority=priority)

    async def aclose(self) -> None:
        await self.inner.aclose()


def as_driver(driver: BuggyDriver) -> Driver:
    return driver  # `mypy tests/integration/test_control_site_status.py` checks it is complete


def site_with(sim: Simulator, book: ScheduleBook, drivers: list[BuggyDriver]) -> Site:
    wall = trio_wall_clock()

    def driver() -> Driver:
        drivers.append(BuggyDriver(UniversalDriver(
            sim.profile, stream_factory=sim.stream_factory(), site_id="site1",
            device_id="inv1", wall_clock=wall)))
        return as_driver(drivers[-1])

    config = SiteConfig.from_profile(sim.profile, site_id="site1", device_id="inv1")
    return build_site(config, driver, wall_clock=wall, schedules=book)


async def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 120.0) -> None:
    with trio.move_on_after(timeout_s):
        while not condition():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"not within {timeout_s} s (virtual): {what}")


async def test_a_crashed_device_link_and_its_stopped_executor_are_not_reported_as_running(
        autojump_clock):
    book = ScheduleBook()
    book.put(Schedule("s-1", "site1", "inv1", T0 + 24 * 3600,
                      [Slot(T0, T0 + 6 * 3600, SlotAction("discharge"), 2500, None)]))
    sim = Simulator(soc_pct=80, start_hour=0)
    drivers: list[BuggyDriver] = []
    site = site_with(sim, book, drivers)
    at_exit: dict[str, dict[str, Any]] = {}
    reasons: dict[str, ExitReason | None] = {}

    def on_event(event: SupervisorEvent) -> None:
        # The supervisor reaps the instance here, before any restart: what /status says then.
        if event.kind is EventKind.EXITED and event.child_id not in at_exit:
            at_exit[str(event.child_id)] = site.status()
            reasons[str(event.child_id)] = event.reason

    def running() -> bool:
        view = site.status()
        return (view["link"]["state"] == "up" and view["schedule"] is not None
                and view["schedule"]["state"] == "running")

    async with sim, trio.open_nursery() as nursery:
        supervisor = site.supervisor(on_event=on_event)
        await nursery.start(supervisor.run)
        await wait_for(running, "the link up and the slot in force")
        assert site.status()["schedule"]["setpoint_w"] is not None

        drivers[0].armed = True  # the next poll hits the bug
        await wait_for(lambda: "schedule" in at_exit, "the crash reached the executor")

        link = at_exit["device_link"]["link"]
        assert link["state"] == "restarting", link  # not "down: device link stopped"
        assert "DriverBug: injected bug in the driver" in link["reason"]
        assert "snapshot_age_s" not in link  # nothing from the dead instance
        schedule = at_exit["schedule"]["schedule"]
        assert schedule["state"] == "stopped", schedule  # not the dead executor's "running"
        assert schedule["setpoint_w"] is None
        assert schedule["schedule_id"] == "s-1"  # the plan itself is the tree's: still shown

        # The restarted instances publish their own state into the same cells.
        await wait_for(lambda: len(drivers) == 2 and running(), "the restarted site runs")
        failure = next(i for i in supervisor.which_children() if i.id == "device_link")
        assert failure.restarts == 1
        assert at_exit["device_link"]["heartbeat"] is not None  # the tree's counters survive
        nursery.cancel_scope.cancel()
    assert reasons["device_link"] is ExitReason.FAILED  # a crash...
    assert reasons["schedule"] is ExitReason.STOPPED  # ...that stopped the children after it
