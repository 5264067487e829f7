"""The control loop's outbox for critical events: never blocks the sender, never drops an event.

Safety and command events (SAFETY_BLOCK, COMMAND_REJECTED...) leave the local control loop
through here on their way to the spool. The loop must never wait on the cloud, so sending cannot
block; and these events must never be lost, so the buffer is not bounded by a count. That is
safe because they are rare by construction: a safety rule emits one event per transition and
hysteresis forbids chattering; a command emits one event per command received.

If the receiving side has gone (the spool is restarting), the event is kept in ``pending`` and
handed over by the next ``emit`` after a new receiver is attached, so a restart of the consumer
does not lose it either.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import attrs
import structlog
import trio

from bessai.model import Event

log = structlog.get_logger("bessai.control.events")

EventEmitter = Callable[[Event], None]
"""What the guard and the gate call to publish an event. Must return at once and never raise."""


@attrs.define
class EventOutbox:
    """A never-blocking, never-dropping hand-off of critical events to one consumer.

    ``emit`` is the EventEmitter; the consumer iterates ``receive()``'s channel.
    """

    _send: trio.MemorySendChannel[Event] | None = None
    _receive: trio.MemoryReceiveChannel[Event] | None = None
    pending: deque[Event] = attrs.field(factory=deque)
    emitted: int = 0

    def receive(self) -> trio.MemoryReceiveChannel[Event]:
        """The consumer's end. Calling it again (after a consumer restart) attaches a new channel
        and flushes whatever could not be delivered to the old one."""
        self._send, self._receive = trio.open_memory_channel[Event](math.inf)
        self._flush()
        return self._receive

    def emit(self, event: Event) -> None:
        self.emitted += 1
        self.pending.append(event)
        self._flush()

    def _flush(self) -> None:
        if self._send is None:
            return
        while self.pending:
            try:
                self._send.send_nowait(self.pending[0])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.warning("event_consumer_gone", pending=len(self.pending))
                self._send = None
                return
            self.pending.popleft()
