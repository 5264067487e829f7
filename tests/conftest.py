"""Shared test configuration. pytest-trio runs in trio_mode (see pyproject.toml).

Use the ``autojump_clock`` fixture (pytest-trio) for virtual time in-process; tests that touch
real sockets or threads use a MockClock with autojump_threshold around 0.05.
"""

pytest_plugins = ("tests.conftest_pubsub",)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_logging():
    """Every test starts and ends with structlog's defaults: a test that configures logging (the
    gateway, the CLI in-process) must not filter another test's captured log lines."""
    from bessai.observe.logs import reset_logging

    reset_logging()
    yield
    reset_logging()
