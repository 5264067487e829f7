"""The control loop's outbox for critical events: never blocks the sender, never drops an event.

Safety and command events (SAFETY_BLOCK, COMMAND_REJECTED...) leave the local control loop
through here on their way to the spool. The loop must never wait on the cloud, so `emit` cannot
block; and these events must never be lost, so the buffer is not bounded by a count. That is
safe because they are rare by construction: a safety rule emits one event per transition and
hysteresis forbids chattering; a command emits one event per command received.

Delivery is at-least-once: `forward` takes the oldest event, hands it to the consumer (the
spool's append), and removes it only once that returned. If the consumer fails, the event stays
first in line and `forward` raises; whoever restarts it (its supervisor) delivers it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from bessai.model import Event

EventEmitter = Callable[[Event], None]
"""What the guard and the gate call to publish an event. Must return at once and never raise."""


@attrs.define(eq=False)
class EventOutbox:
    """A never-blocking, never-dropping queue of critical events with one consumer."""

    pending: deque[Event] = attrs.field(factory=deque)
    emitted: int = 0
    delivered: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def emit(self, event: Event) -> None:
        """Queue ``event``; returns at once (the EventEmitter)."""
        self.emitted += 1
        self.pending.append(event)
        self._changed.set()

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
