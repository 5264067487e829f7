"""`bessai-run`'s stop is bounded even when a child's clean-up hangs past the deadline, and a stop
that ends in time is never cut short by the hard-stop timer.

The first test drives `Shutdown.begin` — what a signal or ``--duration`` calls — against a tree
whose stop request is ignored; the second runs `run_gateway` itself, as ``bessai-run
--simulator --duration`` does (the real tree, the in-process simulator, the real timer thread),
and proves the timer it armed can no longer fire once the tree has stopped. Only the exit is
replaced (`run.force_exit`, the module's seam for in-process tests): it would end pytest.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
from structlog.testing import capture_logs

from bessai.cli import run
from bessai.settings import BindAddress, get_settings


class HangingGateway:
    """A tree whose stop request is ignored (a clean-up stuck in a shielded scope)."""

    stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested = True


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []
    monkeypatch.setattr(run, "force_exit", codes.append)
    return codes


def test_a_stop_stuck_past_the_deadline_ends_the_process(monkeypatch, exits):
    monkeypatch.setattr(run, "HARD_STOP_MARGIN_S", 0.05)
    gateway = HangingGateway()
    shutdown = run.Shutdown(deadline_s=0.05)

    async def main() -> None:
        with trio.CancelScope() as cancel:
            shutdown.begin(gateway, cancel, reason="test")
        assert gateway.stop_requested
        assert shutdown.stopping
        assert shutdown.hard_stop is not None
        await trio.to_thread.run_sync(shutdown.hard_stop.join, 5.0)

    trio.run(main)
    assert exits == [run.EXIT_DEADLINE]


def test_run_gateway_disarms_the_hard_stop_once_the_tree_stopped_in_time(
        monkeypatch, tmp_path: Path, exits):
    # A short deadline and margin: if run_gateway left the timer armed, it would fire (and
    # "exit") about 2.3 s after the stop began, well within the join below.
    monkeypatch.setattr(run, "HARD_STOP_MARGIN_S", 0.3)
    settings = run.simulator_settings(attrs.evolve(get_settings(env={
        "SITE_ID": "stop-site", "INVERTER_IP": "127.0.0.1", "LOG_LEVEL": "WARNING",
        "SPOOL_PATH": str(tmp_path / "outbox.sqlite"), "SHUTDOWN_DEADLINE_S": "2"},
        env_file=None), status_bind=BindAddress("127.0.0.1", 0)), publish=False)
    args = run.build_parser().parse_args(["--simulator", "--duration", "1", "--no-screen"])
    shutdown = run.Shutdown(settings.shutdown_deadline_s)

    with capture_logs() as logs:
        code = trio.run(run.run_gateway, args, settings, None, shutdown)

    events = [e["event"] for e in logs]
    assert code == 0
    assert events.count("SHUTDOWN_REQUESTED") == 1  # the --duration stop armed the timer...
    assert "GATEWAY_STOPPED" in events
    assert shutdown.hard_stop is not None
    # ...a disarmed timer's thread ends at once; one left armed fires first, then ends
    shutdown.hard_stop.join(timeout=30.0)
    assert not shutdown.hard_stop.is_alive()
    assert exits == []
    assert "SHUTDOWN_DEADLINE_EXCEEDED" not in [e["event"] for e in logs]
