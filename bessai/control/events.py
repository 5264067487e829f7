"""The control loop's outbox for critical events: never blocks the sender, holds a bounded number.

Safety and command events (SAFETY_BLOCK, COMMAND_REJECTED...) leave the local control loop
through here on their way to the spool. The loop must never wait on the cloud or the disk, so
`emit` cannot block; and these events must not be lost, so they are held here for as long as the
spool cannot take them (a full or read-only disk, a data branch that is restarting). They are
rare by construction (one per safety transition, hysteresis forbids chattering; one per command),
so the bound, ``max_held`` (10,000 by default), is reached only by a fault that lasts: then the
oldest held event that is not being delivered is dropped and counted, ``EVENTS_HOLD_FULL`` is
logged once, and when the hold has drained below half the bound ``EVENTS_HOLD_OK`` is logged
and one critical ``EVENTS_DROPPED`` event (how many, from when to when) is queued, so the loss
reaches the cloud too. Memory stays bounded whatever the fault.

Delivery is at-least-once: `forward` takes the oldest event, hands it to the consumer (the
spool's append), and removes it only once that returned. If the consumer fails, the event stays
first in line and `forward` raises; whoever restarts it (its supervisor) delivers it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog
import trio

from bessai.model import Event

log = structlog.get_logger("bessai.control.events")

MAX_HELD_EVENTS = 10_000

EventEmitter = Callable[[Event], None]
"""What the guard and the gate call to publish an event. Must return at once and never raise."""


@attrs.define(eq=False)
class EventOutbox:
    """A never-blocking queue of critical events with one consumer, bounded by ``max_held``."""

    pending: deque[Event] = attrs.field(factory=deque)
    emitted: int = 0
    delivered: int = 0
    max_held: int = MAX_HELD_EVENTS
    dropped: int = 0
    """Events dropped because the hold was full (each also counted in an EVENTS_DROPPED)."""
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _full: bool = False
    _first_lost: Event | None = None
    _last_lost: Event | None = None
    _lost_count: int = 0
    """The current overflow's drops (for its EVENTS_DROPPED event)."""

    def emit(self, event: Event) -> None:
        """Queue ``event``; returns at once (the EventEmitter). Never raises."""
        self.emitted += 1
        if len(self.pending) >= max(self.max_held, 2):
            # the head may be in delivery right now (`done` expects it): drop the next oldest
            victim = self.pending[1]
            del self.pending[1]
            self.dropped += 1
            self._lost_count += 1
            self._first_lost = self._first_lost or victim
            self._last_lost = victim
            if not self._full:
                self._full = True
                log.error("EVENTS_HOLD_FULL", held=len(self.pending), max_held=self.max_held,
                          action="the spool has not taken events for a long time (see "
                                 "SPOOL_DISK_FAULT / DATA_BRANCH_DEGRADED); the oldest held "
                                 "events are dropped and counted")
        self.pending.append(event)
        self._changed.set()

    def _check_drained(self) -> None:
        if not self._full or len(self.pending) > self.max_held // 2:
            return
        self._full = False
        first, last = self._first_lost, self._last_lost
        count, self._lost_count = self._lost_count, 0
        self._first_lost = self._last_lost = None
        assert first is not None
        assert last is not None
        log.warning("EVENTS_HOLD_OK", held=len(self.pending), dropped=count)
        self.emit(Event(name="EVENTS_DROPPED", site_id=first.site_id, device_id=first.device_id,
                        ts=last.ts, body={"count": count, "first_ts": first.ts,
                                          "last_ts": last.ts, "first_name": first.name,
                                          "reason": "hold_full"}))

    async def next(self) -> Event:
        """The oldest undelivered event, waiting for one if there is none. It stays queued
        until `done` is called for it."""
        while not self.pending:
            await self._changed.wait()
            self._changed = trio.Event()
        return self.pending[0]

    def done(self, event: Event) -> None:
        """Mark the oldest event delivered."""
        if not self.pending or self.pending[0] is not event:
            raise RuntimeError("done() must be called for the event next() returned, in order")
        self.pending.popleft()
        self.delivered += 1
        self._check_drained()

    def take_nowait(self) -> list[Event]:
        """Remove and return everything queued (tests, shutdown dumps)."""
        events = list(self.pending)
        self.delivered += len(events)
        self.pending.clear()
        return events

    async def forward(self, deliver: Callable[[Event], Awaitable[Any]], *,
                      task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver events oldest first until cancelled; an actor body for the gateway tree
        (``ChildSpec.from_function("events", outbox.forward, spool_append)``)."""
        task_status.started()
        while True:
            event = await self.next()
            await deliver(event)
            self.done(event)
