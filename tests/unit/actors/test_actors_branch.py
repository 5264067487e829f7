"""IsolatedBranch: a branch's escalation becomes a degraded state, never its parent's crash."""

from __future__ import annotations

import random

import trio

from actors import Backoff, ChildSpec, IsolatedBranch, Supervisor


class Crashes:
    """Crashes ``after_s`` after each start while ``crashing[0]`` is true."""

    def __init__(self, crashing: list[bool], after_s: float = 0.0) -> None:
        self.crashing, self.after_s = crashing, after_s

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep(self.after_s)
        if self.crashing[0]:
            raise RuntimeError("the disk is full")
        await trio.sleep_forever()


def branch(crashing: list[bool], states: list, **kwargs) -> IsolatedBranch:
    def build() -> Supervisor:
        return Supervisor(children=[ChildSpec("events", lambda: Crashes(crashing, 0.5))],
                          intensity=3, period_s=60, backoff=Backoff.none(), name="data")

    return IsolatedBranch(build, backoff=Backoff(initial_s=1, max_s=30, reset_after_s=120),
                          on_state=lambda d, e: states.append(d), rng=random.Random(1), **kwargs)


async def test_a_crash_looping_branch_never_escalates_and_its_sibling_keeps_running(
        autojump_clock):
    states: list = []
    b = branch([True], states)
    ticks = 0
    parent = Supervisor(children=[ChildSpec("data", lambda: b)], intensity=0, period_s=60,
                        name="top")

    async def control_loop() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(1)
            ticks += 1

    async with trio.open_nursery() as n:
        await n.start(parent.run)
        n.start_soon(control_loop)
        await trio.sleep(3600)
        assert parent.running  # intensity 0: any escalation into it would have ended it
        assert parent.child_info("data").restarts == 0
        assert b.escalations >= 100  # one an at most 30 s apart (the capped backoff)
        assert states == [True]  # one entering event for the whole hour
        assert ticks >= 3599
        parent.request_stop()
        n.cancel_scope.cancel()


async def test_a_branch_that_heals_reports_recovered_once(autojump_clock):
    states: list = []
    crashing = [True]
    b = branch(crashing, states)
    async with trio.open_nursery() as n:
        await n.start(b.run)
        await trio.sleep(10)
        assert b.degraded
        assert states == [True]
        crashing[0] = False
        await trio.sleep(200)
        assert not b.degraded
        assert states == [True, False]
        assert [c.state.value for c in b.which_children()] == ["running"]
        b.request_stop()


async def test_a_branch_that_cannot_start_still_lets_its_parent_go_on(autojump_clock):
    class FailsToStart:
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            raise OSError("read-only file system")

    def build() -> Supervisor:
        return Supervisor(children=[ChildSpec("spool", FailsToStart)], intensity=1,
                          period_s=60, backoff=Backoff.none(), name="data")

    later_started = trio.Event()

    class Later:
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            later_started.set()
            await trio.sleep_forever()

    b = IsolatedBranch(build, rng=random.Random(1))
    parent = Supervisor(children=[ChildSpec("data", lambda: b), ChildSpec("site", Later)],
                        intensity=0, name="top")
    async with trio.open_nursery() as n:
        await n.start(parent.run)
        with trio.fail_after(5):
            await later_started.wait()
        assert b.degraded
        parent.request_stop()


async def test_a_stop_during_the_backoff_ends_the_branch_at_once(autojump_clock):
    b = branch([True], [])
    async with trio.open_nursery() as n:
        await n.start(b.run)
        await trio.sleep(5)
        stopped_at = trio.current_time()
        b.request_stop()
    assert trio.current_time() - stopped_at < 1
