"""Chaos tests: whole-gateway scenarios from bench.chaos.scenarios, in virtual time.

The long scenarios (72 h, 2 h flapping, SIGKILL of real processes...) are marked ``chaos_long``
and skipped unless ``BESSAI_CHAOS_LONG=1``; ``make chaos`` (python -m bench.chaos) runs them all
and writes bench/CHAOS.md.
"""

from __future__ import annotations

import os

import pytest
from trio.testing import MockClock

LONG = os.environ.get("BESSAI_CHAOS_LONG") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG:
        return
    for item in items:
        if "chaos_long" in item.keywords:
            scenario = getattr(item, "callspec", None) and item.callspec.params.get("scenario")
            why = getattr(scenario, "long_reason", "") or "long"
            item.add_marker(pytest.mark.skip(
                reason=f"long chaos scenario ({why}): runs in `make chaos` "
                       "(python -m bench.chaos) or with BESSAI_CHAOS_LONG=1"))


@pytest.fixture
def clock() -> MockClock:
    """Virtual time; real I/O (emulator requests, SQLite threads) freezes it while in flight."""
    return MockClock(autojump_threshold=0)
