"""Waiting for a condition in a Trio test: on Trio's clock (virtual under a MockClock), or on the
real clock without blocking the event loop (what an SDK's own threads run on)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio


async def wait_for(predicate: Callable[[], Any], what: str = "the condition", *,
                   timeout_s: float = 600.0, step_s: float = 0.05) -> float:
    """Check ``predicate`` every ``step_s`` on Trio's clock until it holds; the Trio time it
    was seen to hold. Fails naming ``what`` after ``timeout_s`` (of Trio's clock)."""
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(step_s)
        return trio.current_time()
    raise AssertionError(f"not within {timeout_s} s (Trio's clock): {what}")


async def wait_real(condition: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Check ``condition`` every 20 ms of *real* time (sleeping in a worker thread, so a
    MockClock does not jump meanwhile) until it holds; fails after ``timeout_s`` real s."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout_s} real s")
        await trio.to_thread.run_sync(time.sleep, 0.02)
