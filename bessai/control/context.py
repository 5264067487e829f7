"""State of one site that must outlive its actors' restarts, owned by the tree, not by an actor.

The site supervisor builds one `SiteContext` per device and hands it to every child's factory.
When a child crashes and is rebuilt, its successor finds here what the old one knew:

* ``snapshots`` — the latest merged snapshot (an `actors.LatestCell`: the writer never blocks,
  readers wait for a newer version);
* ``safety`` — the guard's current decision (the gate reads it; a restarted guard resumes from
  it, so hysteresis memory and already-logged blocks survive the restart);
* ``link`` — a handle to whichever device-link instance is running now, so the watchdog, the
  guard and dispatch always write through the live connection, and a `StatusCell` with the
  unit's link status as the running instance last published it (the status endpoint reads
  that, never an instance; while the link restarts it says so, with the error);
* ``heartbeat`` — the watchdog's counters (beats, largest gap), published the same way;
* ``schedule`` — the schedule executor's progress (its state and setpoint), a `StatusCell`;
* ``dispatch`` — the active forced command, renewed by the watchdog, stopped by the guard;
* ``limits`` — the safety limits in force: the tree publishes new ones on a configuration
  reload (SIGHUP) and the guard reads them at every decision, so a new limit applies from the
  next evaluation, and a restarted guard starts with the live limits, not the ones of the build.

Invariant: nothing here blocks a writer; everything here is safe to read at any time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from actors import LatestCell
from bessai.clock import WallClock
from bessai.control.device_link import LinkDown, LinkStatus, Priority
from bessai.control.events import EventOutbox
from bessai.control.limits import UNKNOWN, Limits, SafetyState
from bessai.model import Snapshot
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.status_cell import StatusCell

if TYPE_CHECKING:
    from bessai.control.device_link import DeviceLink
    from bessai.control.dispatch import Dispatcher
    from bessai.control.executor import ScheduleProgress


@attrs.define(eq=False)
class LinkHandle:
    """Writes through the device link instance that is running now, whichever that is.

    A device link attaches itself when it starts and detaches when it ends, and notifies the
    handle of every state change; between instances, writes fail fast with `LinkDown` and
    `wait_up` waits for the next instance to come up.
    """

    device_id: str
    current: DeviceLink | None = None
    cell: StatusCell[LinkStatus] = attrs.field(factory=StatusCell)
    """The unit's link status as the running instance last published it; marked ended (with
    the error, while it restarts) when that instance ends."""
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def attach(self, link: DeviceLink) -> None:
        self.current = link
        self.notify()

    def detach(self, link: DeviceLink) -> None:
        if self.current is link:
            self.current = None
            self.notify()

    def publish(self, status: LinkStatus) -> None:
        self.cell.publish(status)

    def notify(self) -> None:
        """Wake every `wait_up` waiter to look again (a link's state changed)."""
        self._changed.set()
        self._changed = trio.Event()

    @property
    def up(self) -> bool:
        return self.current is not None and self.current.up

    @property
    def status(self) -> LinkStatus | None:
        """The running instance's latest status (None while no instance runs)."""
        return self.cell.value

    async def write(self, tag: str, value: float | int, priority: Priority) -> None:
        link = self.current
        if link is None:
            raise LinkDown(self.device_id, "no device link running")
        await link.write(tag, value, priority)

    async def wait_up(self) -> None:
        """Return as soon as a running link is up (at once if one is)."""
        while not self.up:
            await self._changed.wait()


@attrs.define
class HeartbeatStats:
    """The watchdog's counters, kept by the tree so a restarted watchdog goes on counting."""

    beats: int = 0
    max_gap_s: float = 0.0
    last_beat_at: float | None = None


@attrs.define(eq=False)
class SiteContext:
    """Everything one device's actors share. Build it once per device with the tree."""

    site_id: str
    device_id: str
    wall_clock: WallClock
    events: EventOutbox = attrs.field(factory=EventOutbox)
    metrics: MetricSink = NULL_SINK
    snapshots: LatestCell[Snapshot] = attrs.field(factory=LatestCell)
    safety: SafetyState = UNKNOWN
    safety_evaluated: bool = False
    limits: Limits | None = None
    """The live safety limits (None: the guard's own, as built). Replaced whole, never mutated."""
    waiting_for_data_since: float | None = None
    """Trio time the first guard began waiting for the device's first snapshot (a restarted
    guard keeps the same deadline and does not announce the wait again)."""
    link: LinkHandle = attrs.field(init=False)
    heartbeat: HeartbeatStats = attrs.field(factory=HeartbeatStats)
    schedule: StatusCell[ScheduleProgress] = attrs.field(factory=StatusCell)
    """The running schedule executor's state and setpoint (issue 15)."""
    dispatcher: Dispatcher | None = None

    def __attrs_post_init__(self) -> None:
        self.link = LinkHandle(self.device_id)

    def latest(self) -> Snapshot | None:
        """The latest merged snapshot, or None before the first poll."""
        latest = self.snapshots.latest()
        return None if latest is None else latest.value
