"""When to try again: full-jitter exponential backoff that honours ``Retry-After``.

Invariants:
- A delay is drawn from ``(0, min(cap_s, base_s * 2**attempt)]`` ("full jitter", AWS architecture
  blog) by the house's one `actors.Backoff` policy (``jitter=1``), from an injected
  `random.Random` so tests are reproducible; this module only adds the attempt count and
  ``Retry-After``.
- A server's ``Retry-After`` (delta seconds or an HTTP-date) is a floor: we never come back
  sooner than asked, and never later than ``retry_after_cap_s``.
- There is no total deadline: the disk is the buffer, so a 3-day outage is retried for 3 days.
"""

from __future__ import annotations

import email.utils
import random

import attrs

from actors import Backoff
from bessai.clock import WallClock


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None if absent or unparsable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


@attrs.define
class RetrySchedule:
    """One link's retry schedule (the attempt count and ``Retry-After``) over the house's one
    backoff policy, `actors.Backoff`; `reset` after a success."""

    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    base_s: float = 0.5
    cap_s: float = 60.0
    retry_after_cap_s: float = 600.0
    attempt: int = 0

    @property
    def policy(self) -> Backoff:
        """Full-jitter exponential: a delay anywhere in ``(0, ceiling]``."""
        return Backoff(initial_s=self.base_s, max_s=self.cap_s, multiplier=2.0, jitter=1.0)

    def next_delay(self, retry_after_s: float | None = None, *, floor_s: float = 0.0) -> float:
        """The wait before the next attempt; counts the attempt."""
        delay = self.policy.delay(min(self.attempt, 62), self.rng)
        self.attempt += 1
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_after_cap_s))
        return max(delay, floor_s)

    def reset(self) -> None:
        self.attempt = 0


def retry_after_from_headers(headers: object, wall_clock: WallClock) -> float | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    return parse_retry_after(get("retry-after"), wall_clock())
