"""Clock trust: how far the gateway's wall clock is from Pub/Sub's, measured from its answers.

An edge box without a real-time clock can boot days in the past. The gateway then judges
command expiry wrong (an old command looks fresh). Every pull answer carries server time:

- the HTTP ``Date`` header (Google's front ends send it; 1 s resolution): a two-sided sample,
  ``skew = Date + 0.5 s - local``;
- each message's ``publishTime``: the server's clock when the message was published, so
  ``publishTime - local`` is a LOWER bound of the skew (a message may have waited in the
  subscription). A bound below zero proves nothing (a backlog after an outage), so without a
  ``Date`` header it counts as 0; the emulator sends no ``Date``, so there only a clock that is
  behind is detected.

``skew_s`` is server minus local: positive means the local clock is behind. Each answer that
carries any of these replaces the estimate (the latest evidence wins: after NTP fixes the
clock, the next answer clears the state).

States: trusted ⇄ untrusted, entered when ``|skew_s| > max_skew_s`` (``CLOCK_SKEW``, WARNING,
once) and left when ``|skew_s| <= max_skew_s * CLEAR_FRACTION`` (``CLOCK_SKEW_CLEARED``, once).
While untrusted, `server_now` is the local clock corrected by the skew, which the gate uses for
expiry; the gate refuses charge and discharge (``clock_untrusted``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import structlog

from bessai.clock import WallClock, system_wall_clock
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.settings import setting_default

log = structlog.get_logger("bessai.trust.skew")

DEFAULT_MAX_SKEW_S: float = setting_default("clock_skew_max_s")
CLEAR_FRACTION = 0.8
"""Leave the untrusted state only below 80 % of the limit, so a skew hovering at the limit does
not log an entering and a leaving event on every pull."""
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
_MAX_TIME_TEXT = 64


def parse_rfc3339(text: Any) -> float | None:
    """Epoch seconds from Pub/Sub's ``publishTime`` (nanosecond digits allowed); None if bad."""
    if not isinstance(text, str) or len(text) > _MAX_TIME_TEXT:
        return None
    match = _RFC3339.match(text)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    try:
        moment = dt.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def parse_http_date(text: Any) -> float | None:
    """Epoch seconds from an HTTP ``Date`` header; None if absent or malformed."""
    if not isinstance(text, str) or len(text) > _MAX_TIME_TEXT:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return moment.timestamp()


@attrs.define(eq=False)
class SkewTracker:
    """The measured clock skew and whether the wall clock is trusted (one per gateway)."""

    max_skew_s: float = DEFAULT_MAX_SKEW_S
    wall_clock: WallClock = system_wall_clock
    sink: MetricSink = NULL_SINK
    skew_s: float | None = None
    source: str | None = None
    measured_at: float | None = None
    """Local wall time of the last measurement."""
    untrusted: bool = False

    @property
    def trusted(self) -> bool:
        return not self.untrusted

    def observe_response(self, headers: Mapping[str, str], received: Iterable[Any]) -> None:
        """Take what a pull answer says about server time (never raises for its contents)."""
        publish_times: list[float] = []
        for item in received:
            message = item.get("message") if isinstance(item, Mapping) else None
            if isinstance(message, Mapping):
                moment = parse_rfc3339(message.get("publishTime"))
                if moment is not None:
                    publish_times.append(moment)
        self.observe(date=parse_http_date(headers.get("date")), publish_times=publish_times)

    def observe(self, *, date: float | None = None,
                publish_times: Iterable[float] = ()) -> None:
        """One answer's evidence, against the local clock now."""
        local = self.wall_clock()
        bound = max((t - local for t in publish_times if math.isfinite(t)), default=None)
        if date is not None and math.isfinite(date):
            skew, source = date + 0.5 - local, "date"
            if bound is not None and bound > skew:
                skew, source = bound, "publish_time"
        elif bound is not None:
            skew, source = max(bound, 0.0), "publish_time"
        else:
            return
        self.skew_s, self.source, self.measured_at = skew, source, local
        self.sink.gauge("bessai.clock.skew_s", skew)
        self._transition(skew)

    def _transition(self, skew: float) -> None:
        size = abs(skew)
        if not self.untrusted and size > self.max_skew_s:
            self.untrusted = True
            log.warning("CLOCK_SKEW", skew_s=round(skew, 3), limit_s=self.max_skew_s,
                        state="untrusted",
                        source=self.source,
                        local_clock="behind" if skew > 0 else "ahead",
                        effect="charge/discharge refused (clock_untrusted); expiry judged on "
                               "server time",
                        check="NTP/chrony on the host (ops/RUNBOOK.md, clock)")
        elif self.untrusted and size <= self.max_skew_s * CLEAR_FRACTION:
            self.untrusted = False
            log.warning("CLOCK_SKEW_CLEARED", skew_s=round(skew, 3), limit_s=self.max_skew_s,
                        source=self.source)
        self.sink.gauge("bessai.clock.untrusted", 1 if self.untrusted else 0)

    def server_now(self, local_wall: float | None = None) -> float:
        """Wall time to judge expiry by: the local clock, corrected by the skew while the clock
        is untrusted (within the limit the local clock is good enough and needs no server)."""
        local = self.wall_clock() if local_wall is None else local_wall
        if self.untrusted and self.skew_s is not None:
            return local + self.skew_s
        return local

    def status(self) -> dict[str, Any]:
        return {"skew_s": None if self.skew_s is None else round(self.skew_s, 3),
                "source": self.source,
                "max_skew_s": self.max_skew_s if math.isfinite(self.max_skew_s) else None,
                "trusted": self.trusted,
                "measured_at": self.measured_at}
