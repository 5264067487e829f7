"""Test actors that record what happened to them, in order, on the Trio clock.

A `World` is shared by every instance of every probe in a test: it knows which instance of each
child is live, the highest number ever live at once (must stay 1), and a journal of starts,
ready reports, stop requests and ends. The test drives instances through `World.current`.
"""

from __future__ import annotations

import math
from collections import defaultdict

import attrs
import trio


class Crash(Exception):
    """The failure a probe raises when told to crash."""


class StartupCrash(Exception):
    """The failure a probe raises before reporting ready."""


@attrs.frozen
class Entry:
    at_s: float
    what: str  # start | ready | stop_requested | end
    child: str
    instance: int
    how: str = ""  # for end: crashed | returned | graceful | cancelled | startup_crash


@attrs.define
class World:
    journal: list[Entry] = attrs.field(factory=list)
    live: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))
    max_live: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))
    instances: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))
    current: dict[str, Probe] = attrs.field(factory=dict)
    fail_next_starts: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))

    def spec_factory(self, child: str, **behaviour):
        """A ChildSpec factory building a fresh probe for ``child`` on every start."""
        return lambda: Probe(self, child, **behaviour)

    def note(self, what: str, child: str, instance: int, how: str = "") -> None:
        self.journal.append(Entry(trio.current_time(), what, child, instance, how))

    def entries(self, what: str, child: str | None = None) -> list[Entry]:
        return [e for e in self.journal
                if e.what == what and (child is None or e.child == child)]

    def order(self, what: str, how: str | None = None) -> list[str]:
        return [e.child for e in self.journal
                if e.what == what and (how is None or e.how == how)]


@attrs.define(eq=False)
class Probe:
    world: World
    child: str
    ready_after_s: float = 0.0
    crash_after_s: float = math.inf
    stop_takes_s: float = 0.0
    honours_stop: bool = True
    fails_on_stop: BaseException | None = None
    """Raised from run after a stop request (a final flush that fails)."""
    instance: int = attrs.field(init=False, default=0)
    _wake: trio.Event = attrs.field(init=False, factory=trio.Event)
    _exc: BaseException | None = attrs.field(init=False, default=None)
    _stop_asked: bool = attrs.field(init=False, default=False)
    ready: bool = attrs.field(init=False, default=False)
    ended: bool = attrs.field(init=False, default=False)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        w = self.world
        w.instances[self.child] += 1
        self.instance = w.instances[self.child]
        w.live[self.child] += 1
        w.max_live[self.child] = max(w.max_live[self.child], w.live[self.child])
        w.current[self.child] = self
        w.note("start", self.child, self.instance)
        how = "returned"
        try:
            await trio.sleep(self.ready_after_s)
            if w.fail_next_starts[self.child] > 0:
                w.fail_next_starts[self.child] -= 1
                how = "startup_crash"
                raise StartupCrash(f"{self.child}#{self.instance} failed to start")
            self.ready = True
            w.note("ready", self.child, self.instance)
            task_status.started()
            with trio.move_on_after(self.crash_after_s) as timer:
                await self._wake.wait()
            if timer.cancelled_caught:
                how = "crashed"
                raise Crash(f"{self.child}#{self.instance} crashed on its own")
            if self._exc is not None:
                how = "crashed"
                raise self._exc
            if self._stop_asked:
                if not self.honours_stop:
                    await trio.sleep_forever()
                await trio.sleep(self.stop_takes_s)
                if self.fails_on_stop is not None:
                    how = "failed_on_stop"
                    raise self.fails_on_stop
                how = "graceful"
        except trio.Cancelled:
            how = "cancelled"
            raise
        finally:
            self.ended = True
            w.live[self.child] -= 1
            w.note("end", self.child, self.instance, how)

    def request_stop(self) -> None:
        self.world.note("stop_requested", self.child, self.instance)
        self._stop_asked = True
        self._wake.set()

    def crash(self, exc: BaseException | None = None) -> None:
        self._exc = exc or Crash(f"{self.child}#{self.instance} crashed")
        self._wake.set()

    def finish(self) -> None:
        """Return normally from run."""
        self._wake.set()


@attrs.define(eq=False)
class CancelOnlyProbe:
    """A probe without request_stop: the supervisor can only cancel it."""

    world: World
    child: str

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        self.world.note("start", self.child, 1)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.world.note("end", self.child, 1, "cancelled")


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task in this Trio run, found by walking from the root task."""
    found: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found
