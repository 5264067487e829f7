"""`bessai-run`'s stop is bounded even when a child's clean-up hangs past the deadline."""

from __future__ import annotations

import threading

import trio

from bessai.cli import run


class HangingGateway:
    """A tree whose stop request is ignored (a clean-up stuck in a shielded scope)."""

    stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested = True


def test_a_stop_stuck_past_the_deadline_ends_the_process(monkeypatch):
    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    monkeypatch.setattr(run, "force_exit", fake_exit)
    monkeypatch.setattr(run, "HARD_STOP_MARGIN_S", 0.05)
    gateway = HangingGateway()

    async def main() -> None:
        with trio.CancelScope() as cancel:
            run._begin_stop(gateway, 0.05, cancel, {"stopping": False}, reason="test")
        assert gateway.stop_requested
        await trio.to_thread.run_sync(exited.wait, 5.0)

    trio.run(main)
    assert codes == [run.EXIT_DEADLINE]


def test_a_stop_that_finishes_in_time_is_not_cut_short(monkeypatch):
    codes: list[int] = []
    monkeypatch.setattr(run, "force_exit", codes.append)
    monkeypatch.setattr(run, "HARD_STOP_MARGIN_S", 0.3)

    state: dict = {"stopping": False}

    async def main() -> None:
        with trio.CancelScope() as cancel:
            run._begin_stop(HangingGateway(), 10.0, cancel, state, reason="test")
        await trio.sleep(0.5)

    trio.run(main)
    state["hard_stop"].cancel()  # what run_gateway does once the tree has stopped
    assert codes == []
