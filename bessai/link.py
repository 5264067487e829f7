"""The one link state machine: connecting, up, degraded, down, probing — logged once per transition.

Every link the gateway keeps (a device connection, one device unit on it, the Pub/Sub publish
path, the commands pull) tracks its health with a :class:`Link`, so operators read the same
states, the same fields and the same "once per transition" rule everywhere::

    connecting ──failure──▶ down
        │                    ▲ ▲
     success                 │ └──failure── probing ◀──probe── down
        ▼                    │                │
        up ──failure──▶ degraded ──(down_after consecutive failures)──┘
        ▲                    │                │
        └──── success ───────┴────────────────┘

Invariants:

- the down event (``LINK_DOWN``, ``DEVICE_LINK_DOWN``, ...) is logged once when the link goes
  down, with the reason and the next retry time; the up event once when it comes back, with how
  long it was down (WARNING), or at INFO on the very first connection; attempts in between are
  debug lines, never one warning per attempt;
- a transition made with ``announce=False`` (a unit that is down only because its connection
  is, whose connection already said so) changes the state quietly, and so does its recovery;
- a configuration fault (``fatal``) takes the link straight down; it is not a network blip;
- a peer that answers but refuses everything (`Link.rejecting`) is ``degraded`` with the
  reason, never ``up``: reachable, but nothing gets through;
- only Trio's clock is read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs
import structlog
import trio

from bessai.observe.sink import NULL_SINK, MetricSink


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    PROBING = "probing"


LINK_STATE_VALUES = {LinkState.DOWN: 0, LinkState.CONNECTING: 0, LinkState.PROBING: 1,
                     LinkState.DEGRADED: 2, LinkState.UP: 3}
"""The link-state gauges: 0 down (or not connected yet), 1 probing, 2 degraded, 3 up."""


@attrs.define
class Link:
    """Tracks one link's health. ``name`` tells links apart (``pubsub``, ``commands``, a device
    connection's ``host:port``, a unit's device id); ``fields`` are added to every event line
    (``site=``, ``device=``)."""

    name: str = "pubsub"
    down_after: int = 3
    sink: MetricSink = NULL_SINK
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    state: LinkState = LinkState.UP
    reason: str | None = None
    failures: int = 0
    down_since: float | None = None
    transitions: int = 0
    up_event: str = "LINK_UP"
    down_event: str = "LINK_DOWN"
    reason_changed_event: str | None = "LINK_DOWN_REASON_CHANGED"
    """Logged (WARNING) when a down link fails for a new reason; None: a debug line."""
    down_level: str = "warning"
    gauge: str | None = "bessai.uplink.link_state"
    fields: dict[str, Any] = attrs.field(factory=dict)
    since: float | None = None
    """Trio time of the last state change (None before the first)."""
    retry_at: float | None = None
    """While down: Trio time of the next attempt."""
    announced: bool = True
    """Whether the current down state was logged (a quiet down recovers quietly)."""
    announce_first_up: bool = True
    """Log the up event at INFO on the first success (False: a debug line)."""
    on_change: Callable[[], None] | None = attrs.field(default=None, repr=False)
    """Called after every change of state or reason (the owner publishes its status cell)."""

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _set(self, state: LinkState) -> None:
        if state != self.state:
            self.transitions += 1
            self.since = _now()
        self.state = state
        if self.gauge is not None:
            self.sink.gauge(self.gauge, LINK_STATE_VALUES[state], link=self.name)

    @property
    def is_up(self) -> bool:
        return self.state in (LinkState.UP, LinkState.DEGRADED)

    @property
    def is_down(self) -> bool:
        return self.state in (LinkState.DOWN, LinkState.PROBING)

    def status(self) -> dict[str, Any]:
        """For the status endpoint: state, reason, how long it has been down, failures."""
        now = trio.current_time()
        down_for = (now - self.down_since) if self.down_since is not None else None
        return {"link": self.name, "state": str(self.state), "reason": self.reason,
                "down_for_s": None if down_for is None else round(down_for, 1),
                "consecutive_failures": self.failures}

    def retry_in_s(self) -> float | None:
        """While down: seconds until the next attempt."""
        if self.retry_at is None or not self.is_down:
            return None
        return round(max(0.0, self.retry_at - trio.current_time()), 3)

    def probing(self) -> None:
        """A probe is about to go out (only from down)."""
        if self.state == LinkState.DOWN:
            self._set(LinkState.PROBING)
            self._changed()

    def rejecting(self, reason: str) -> None:
        """The peer answers but refuses what is sent (Pub/Sub answering 400 to everything):
        degraded, not down — it is reachable, so no probing — with the reason shown in /status
        until something is accepted."""
        if not self.is_down:
            self._set(LinkState.DEGRADED)
        self.reason = reason
        self._changed()

    def succeeded(self) -> None:
        if self.state is LinkState.UP and self.failures == 0:
            return  # the hot path: nothing changes
        if self.is_down:
            now = _now()
            down_for = now - (self.down_since if self.down_since is not None else now)
            if self.announced:
                self.log.warning(self.up_event, link=self.name, down_for_s=round(down_for, 1),
                                 previous_reason=self.reason, **self.fields)
            else:
                self.log.debug(self.up_event.lower(), link=self.name, **self.fields)
            self.down_since = None
        elif self.state is LinkState.CONNECTING:
            if self.announce_first_up:
                self.log.info(self.up_event, link=self.name, **self.fields)
            else:
                self.log.debug(self.up_event.lower(), link=self.name, **self.fields)
        elif self.state == LinkState.DEGRADED:
            self.log.info("link_recovered", link=self.name, **self.fields)
        self.failures = 0
        self.reason = None
        self.retry_at = None
        self.announced = True
        self._set(LinkState.UP)
        self._changed()

    def failed(self, reason: str, retry_in_s: float, *, fatal: bool = False,
               announce: bool = True) -> None:
        """Record a failed attempt; ``fatal`` (config fault) takes the link down at once.
        ``announce=False``: go down without the operator line (someone else already said it)."""
        self.failures += 1
        previous = self.state
        self.retry_at = _now() + retry_in_s
        if self.is_down:
            self._set(LinkState.DOWN)
            if announce and not self.announced:
                self._announce_down(reason, retry_in_s, previous)
            elif reason != self.reason and self.reason_changed_event and self.announced:
                self.log.warning(self.reason_changed_event, link=self.name, reason=reason,
                                 previous_reason=self.reason, retry_in_s=round(retry_in_s, 2),
                                 **self.fields)
            else:
                self.log.debug("link_retry_failed", link=self.name, reason=reason,
                               retry_in_s=round(retry_in_s, 2), failures=self.failures,
                               **self.fields)
        elif fatal or self.failures >= self.down_after or previous is LinkState.CONNECTING:
            self.down_since = _now()
            self._set(LinkState.DOWN)
            if announce:
                self._announce_down(reason, retry_in_s, previous)
            else:
                self.announced = False
                self.log.debug(self.down_event.lower(), link=self.name, reason=reason,
                               **self.fields)
        else:
            self._set(LinkState.DEGRADED)
            self.log.debug("link_degraded", link=self.name, reason=reason,
                           retry_in_s=round(retry_in_s, 2), failures=self.failures,
                           **self.fields)
        self.reason = reason
        self._changed()

    def _announce_down(self, reason: str, retry_in_s: float, previous: LinkState) -> None:
        self.announced = True
        getattr(self.log, self.down_level)(
            self.down_event, link=self.name, reason=reason, retry_in_s=round(retry_in_s, 2),
            failures=self.failures, was=str(previous), **self.fields)


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # outside Trio (a status read from a thread, a unit test)
        return 0.0
