"""Shared test configuration. pytest-trio runs in trio_mode (see pyproject.toml).

Use the ``autojump_clock`` fixture (pytest-trio) for virtual time in-process; tests that touch
real sockets or threads use a MockClock with autojump_threshold around 0.05.
"""

pytest_plugins = ("tests.conftest_pubsub",)


import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_logging():
    """Every test starts and ends with structlog's defaults: a test that configures logging (the
    gateway, the CLI in-process) must not filter another test's captured log lines."""
    from bessai.observe.logs import reset_logging

    reset_logging()
    yield
    reset_logging()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """``host:port`` that accepts TCP connections (the kernel's backlog) and never answers: a
    black-holed cloud, a hung collector."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"
