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
    skip = pytest.mark.skip(reason="long chaos scenario: runs in `make chaos` "
                                   "(python -m bench.chaos) or with BESSAI_CHAOS_LONG=1")
    for item in items:
        if "chaos_long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def clock() -> MockClock:
    """Virtual time; real I/O (emulator requests, SQLite threads) freezes it while in flight."""
    return MockClock(autojump_threshold=0)
