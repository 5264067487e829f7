"""Wall clocks for data timestamps.

Scheduling in the gateway always uses Trio's clock (`trio.current_time`, `trio.sleep`), so that
every actor runs under `trio.testing.MockClock`. Data needs *wall* time (epoch seconds) for its
timestamps, and that must come from somewhere tests can control: a `WallClock` is a zero-argument
callable returning epoch seconds, injected wherever a timestamp is stamped.

`trio_wall_clock` follows the Trio clock from a fixed epoch, so under MockClock a 3-day virtual
outage also moves data timestamps by 3 days.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

WallClock = Callable[[], float]
"""Returns the current wall time in seconds since the Unix epoch."""


def system_wall_clock() -> float:
    """The real wall clock; for production only."""
    return time.time()  # wall-clock


def trio_wall_clock(epoch_at_zero: float = 1_767_225_600.0) -> WallClock:
    """A wall clock that advances with Trio's clock (virtual under MockClock).

    ``epoch_at_zero`` is the wall time that Trio time 0 maps to (default 2026-01-01T00:00:00Z).
    Must be called from inside a Trio run.
    """
    offset = epoch_at_zero

    def now() -> float:
        return offset + trio.current_time()

    return now
