"""Shared test configuration. pytest-trio runs in trio_mode (see pyproject.toml).

Use the ``autojump_clock`` fixture (pytest-trio) for virtual time in-process; tests that touch
real sockets or threads use a MockClock with autojump_threshold around 0.05.
"""

pytest_plugins = ("tests.conftest_pubsub",)
