"""Property test: random trees under random crash schedules keep the supervision invariants.

Hypothesis draws a supervisor (strategy, restart types, intensity, period, backoff, grace, how
each child stops) and a schedule of crashes, normal returns and failed starts; the scenario runs
in virtual time. Whatever the draw:

* never two live instances of one child (the old one has ended before the new one starts);
* children stopped by the supervisor are stopped in reverse start order;
* restart intensity is never exceeded silently: a window with more than ``intensity`` restarts
  ends in exactly one `SupervisorEscalation`, and without one no window exceeds it;
* once the tree has ended no instance is live and no task is left behind.
"""

from __future__ import annotations

import random

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    Backoff,
    ChildSpec,
    ChildState,
    EventKind,
    ExitReason,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    UnknownChild,
)
from tests.unit.actors._probe import World, all_tasks

child_settings = st.tuples(
    st.sampled_from(list(Restart)),
    st.sampled_from([0.0, 0.3, 1.0]),  # grace_s
    st.sampled_from([0.0, 0.2, 2.0]),  # stop_takes_s (2.0 > every grace: will be cancelled)
    st.booleans(),  # honours_stop
)
schedule = st.lists(
    st.tuples(
        st.sampled_from([0.01, 0.05, 0.2, 0.7, 3.0]),  # pause before the action
        st.integers(0, 3),  # which child (mod n)
        st.sampled_from(["crash", "crash", "return", "fail_next_start"]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    children=st.lists(child_settings, min_size=1, max_size=4),
    strategy=st.sampled_from(list(Strategy)),
    intensity=st.integers(0, 4),
    period_s=st.sampled_from([0.5, 2.0, 10.0]),
    backoff_s=st.sampled_from([0.0, 0.05, 0.4]),
    seed=st.integers(0, 2**16),
    chaotic=st.booleans(),
    actions=schedule,
)
def test_random_crash_schedules_keep_the_supervision_invariants(
    children, strategy, intensity, period_s, backoff_s, seed, chaotic, actions
):
    trio.run(
        _scenario, children, strategy, intensity, period_s, backoff_s, seed, chaotic, actions,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def _scenario(children, strategy, intensity, period_s, backoff_s, seed, chaotic, actions):
    world = World()
    events = []
    ids = [f"c{i}" for i in range(len(children))]
    restart_of = {}
    specs = []
    for cid, (restart, grace_s, stop_takes_s, honours) in zip(ids, children, strict=True):
        restart_of[cid] = restart
        specs.append(ChildSpec(
            cid, world.spec_factory(cid, stop_takes_s=stop_takes_s, honours_stop=honours),
            restart=restart, grace_s=grace_s,
        ))
    sup = Supervisor(
        children=specs, strategy=strategy, intensity=intensity, period_s=period_s,
        backoff=Backoff(initial_s=backoff_s, max_s=2.0, jitter=0.5, reset_after_s=5.0),
        rng=random.Random(seed), on_event=events.append, name="s",
    )
    before = all_tasks()

    def idle() -> bool:
        return all(c.state not in (ChildState.STARTING, ChildState.STOPPING)
                   for c in sup.which_children())

    async def driver():
        for pause, index, action in actions:
            await trio.sleep(pause)
            await trio.testing.wait_all_tasks_blocked()
            cid = ids[index % len(ids)]
            if action == "fail_next_start":
                world.fail_next_starts[cid] += 1
                continue
            try:
                state = sup.child_info(cid).state
            except UnknownChild:
                continue  # a temporary child that has ended
            probe = world.current.get(cid)
            if state is not ChildState.RUNNING or probe is None or probe.ended:
                continue
            if not chaotic and not idle():
                continue  # exact mode: one failure at a time, so every exit is a decision
            if action == "crash":
                probe.crash()
            else:
                probe.finish()
        await trio.sleep(0.01)
        sup.request_stop()

    escalation = None
    with trio.fail_after(100_000):  # virtual: only a hang would reach it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver)
            try:
                await sup.run()
            except SupervisorEscalation as exc:
                escalation = exc
            nursery.cancel_scope.cancel()

    # never two live instances of a child
    assert all(n <= 1 for n in world.max_live.values()), dict(world.max_live)
    # nothing live, nothing left running
    assert all(n == 0 for n in world.live.values()), dict(world.live)
    assert all_tasks() == before

    # supervisor-initiated stops between two starts go strictly backwards in start order
    batch: list[int] = []
    for entry in world.journal:
        if entry.what == "start":
            batch = []
        elif entry.what == "end" and entry.how in ("graceful", "cancelled"):
            position = ids.index(entry.child)
            assert not batch or position < batch[-1], world.journal
            batch.append(position)

    # intensity: decisions are exits that the restart type says to restart
    decisions = [
        e for e in events
        if e.kind is EventKind.EXITED
        and (
            (e.reason is ExitReason.FAILED and restart_of[e.child_id] is not Restart.TEMPORARY)
            or (e.reason is ExitReason.NORMAL and restart_of[e.child_id] is Restart.PERMANENT)
        )
    ]
    escalated = [e for e in events if e.kind is EventKind.ESCALATED]
    assert len(escalated) == (1 if escalation else 0)
    exceeded_at = None
    times: list[float] = []
    for event in decisions:
        times.append(event.at_s)
        if len([t for t in times if t >= event.at_s - period_s]) > intensity:
            exceeded_at = event
            break
    if escalation is not None:
        # the supervisor's own count is a subset of ours: it cannot give up before we see it
        assert exceeded_at is not None
        assert escalated[0].at_s >= exceeded_at.at_s
        assert escalation.intensity == intensity
        assert escalation.child_id == escalated[0].child_id
    if not chaotic:
        # exact: exceeding is escalated at once, by the child that exceeded it
        if exceeded_at is None:
            assert escalation is None
        else:
            assert escalation is not None
            assert (escalated[0].at_s, escalated[0].child_id) == (
                exceeded_at.at_s, exceeded_at.child_id)
            assert decisions[-1] is exceeded_at  # nothing restarted after giving up
