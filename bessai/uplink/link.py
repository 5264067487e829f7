"""The link state machine: up, degraded, down, probing — logged once per transition.

    up ──failure──▶ degraded ──(down_after consecutive failures)──▶ down ◀──failure── probing
     ▲                 │                                             │                  │
     └────success──────┴──────────────── success ────────────────────┴──── probe ───────┘

Invariants:
- ``LINK_DOWN`` is logged once when the link goes down (with the reason and the next retry
  time) and ``LINK_UP`` once when it comes back (with how long it was down); attempts in between
  are debug lines, never one warning per attempt.
- While down, the uplink sends one probe message at a time, never a full batch.
- A configuration fault (403/404) takes the link straight down; it is not a network blip.
- A peer that answers but refuses every message (Pub/Sub answering 400 to all) is ``degraded``
  with the reason (`rejecting`), never ``up``: reachable, but nothing gets through.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import structlog
import trio

from bessai.observe.sink import NULL_SINK, MetricSink


class LinkState(enum.StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    PROBING = "probing"


LINK_STATE_VALUES = {LinkState.DOWN: 0, LinkState.PROBING: 1, LinkState.DEGRADED: 2,
                     LinkState.UP: 3}
"""The ``bessai.uplink.link_state`` gauge: 0 down, 1 probing, 2 degraded, 3 up."""


@attrs.define
class Link:
    """Tracks one link's health; ``name`` tells the uplink's link from the commands link."""

    name: str = "pubsub"
    down_after: int = 3
    sink: MetricSink = NULL_SINK
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    state: LinkState = LinkState.UP
    reason: str | None = None
    failures: int = 0
    down_since: float | None = None
    transitions: int = 0

    def _set(self, state: LinkState) -> None:
        if state != self.state:
            self.transitions += 1
        self.state = state
        self.sink.gauge("bessai.uplink.link_state", LINK_STATE_VALUES[state], link=self.name)

    @property
    def is_down(self) -> bool:
        return self.state in (LinkState.DOWN, LinkState.PROBING)

    def status(self) -> dict[str, Any]:
        """For the status endpoint: state, reason, how long it has been down, failures."""
        down_for = (trio.current_time() - self.down_since) if self.down_since is not None else None
        return {"link": self.name, "state": str(self.state), "reason": self.reason,
                "down_for_s": None if down_for is None else round(down_for, 1),
                "consecutive_failures": self.failures}

    def probing(self) -> None:
        """A probe is about to go out (only from down)."""
        if self.state == LinkState.DOWN:
            self._set(LinkState.PROBING)

    def succeeded(self) -> None:
        if self.is_down:
            now = trio.current_time()
            down_for = now - (self.down_since if self.down_since is not None else now)
            self.log.warning("LINK_UP", link=self.name, down_for_s=round(down_for, 1),
                             previous_reason=self.reason)
            self.down_since = None
        elif self.state == LinkState.DEGRADED:
            self.log.info("link_recovered", link=self.name)
        self.failures = 0
        self.reason = None
        self._set(LinkState.UP)

    def rejecting(self, reason: str) -> None:
        """The peer answers but refuses what is sent: degraded (not down: it is reachable, so
        no probing), with the reason shown in /status until a message is accepted."""
        if not self.is_down:
            self._set(LinkState.DEGRADED)
        self.reason = reason

    def failed(self, reason: str, retry_in_s: float, *, fatal: bool = False) -> None:
        """Record a failed attempt; ``fatal`` (config fault) takes the link down at once."""
        self.failures += 1
        previous = self.state
        if self.is_down:
            self._set(LinkState.DOWN)
            if reason != self.reason:
                self.log.warning("LINK_DOWN_REASON_CHANGED", link=self.name, reason=reason,
                                 previous_reason=self.reason, retry_in_s=round(retry_in_s, 2))
            else:
                self.log.debug("link_probe_failed", link=self.name, reason=reason,
                               retry_in_s=round(retry_in_s, 2), failures=self.failures)
        elif fatal or self.failures >= self.down_after:
            self.down_since = trio.current_time()
            self._set(LinkState.DOWN)
            self.log.warning("LINK_DOWN", link=self.name, reason=reason,
                             retry_in_s=round(retry_in_s, 2), failures=self.failures,
                             was=str(previous))
        else:
            self._set(LinkState.DEGRADED)
            self.log.debug("link_degraded", link=self.name, reason=reason,
                           retry_in_s=round(retry_in_s, 2), failures=self.failures)
        self.reason = reason
