"""Fixtures shared by the end-to-end tests (real processes, the real clock)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.procs import Proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Every process a test starts; killed at teardown (newest first) whatever happened."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.kill()
