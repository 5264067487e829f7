"""Fixtures shared by the end-to-end tests (real processes, the real clock)."""

from __future__ import annotations

import socket
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


@pytest.fixture
def black_hole() -> Iterator[str]:
    """``host:port`` that accepts connections and never answers (a black-holed cloud, a hung
    collector)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"
