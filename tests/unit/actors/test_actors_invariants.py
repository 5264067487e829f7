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

import math
import random

import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
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
    SupervisorNotRunning,
    UnknownChild,
)
from tests.unit.actors._probe import World, all_tasks
from tests.unit.actors._running import run_beside

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
        st.sampled_from(["crash", "crash", "crash", "return", "fail_next_start"]),
    ),
    min_size=3,
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

    with trio.fail_after(100_000):  # virtual: only a hang would reach it
        escalation = await run_beside(sup, driver)

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
    event(f"escalated={bool(escalation)}, restart decisions={min(len(decisions), 5)}")
    assert len(escalated) == (1 if escalation else 0)
    exceeded_at = None
    times: list[float] = []
    for decision in decisions:
        times.append(decision.at_s)
        if len([t for t in times if t >= decision.at_s - period_s]) > intensity:
            exceeded_at = decision
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


# ---------------------------------------------------------------- a nested, dynamic tree

tree_actions = st.lists(
    st.tuples(
        st.sampled_from([0.01, 0.1, 0.5, 2.0]),
        st.sampled_from(["crash", "crash", "return", "add", "remove", "fail_next_start"]),
        st.integers(0, 7),
    ),
    min_size=3,
    max_size=25,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top_strategy=st.sampled_from(list(Strategy)),
    sub_strategy=st.sampled_from(list(Strategy)),
    top_intensity=st.integers(0, 3),
    sub_intensity=st.integers(0, 3),
    stop_takes=st.lists(st.sampled_from([0.0, 0.3, 3.0]), min_size=8, max_size=8),
    seed=st.integers(0, 2**16),
    cancel_from_outside=st.booleans(),
    actions=tree_actions,
)
def test_nested_dynamic_trees_never_overlap_leak_or_stop_out_of_order(
    top_strategy, sub_strategy, top_intensity, sub_intensity, stop_takes, seed,
    cancel_from_outside, actions,
):
    trio.run(
        _tree_scenario, top_strategy, sub_strategy, top_intensity, sub_intensity, stop_takes,
        seed, cancel_from_outside, actions, clock=trio.testing.MockClock(autojump_threshold=0),
    )


async def _tree_scenario(top_strategy, sub_strategy, top_intensity, sub_intensity, stop_takes,
                         seed, cancel_from_outside, actions):
    world = World()
    rng = random.Random(seed)
    backoff = Backoff(initial_s=0.05, max_s=1.0, jitter=0.5, reset_after_s=3.0)

    def probe(cid, n):
        return ChildSpec(cid, world.spec_factory(cid, stop_takes_s=stop_takes[n]), grace_s=1.0)

    subs: list[Supervisor] = []

    def make_sub():
        sub = Supervisor(children=[probe("q0", 0), probe("q1", 1)], strategy=sub_strategy,
                         intensity=sub_intensity, period_s=2.0, backoff=backoff, rng=rng,
                         name="site")
        subs.append(sub)
        return sub

    top = Supervisor(
        children=[probe("p0", 2), ChildSpec("site", make_sub, grace_s=math.inf), probe("p1", 3)],
        strategy=top_strategy, intensity=top_intensity, period_s=2.0, backoff=backoff, rng=rng,
        name="top",
    )
    before = all_tasks()
    dynamic: list[str] = []
    added = 0
    outcome: dict[str, object] = {}

    async def driver(cancel_scope):
        nonlocal added
        for pause, action, index in actions:
            await trio.sleep(pause)
            await trio.testing.wait_all_tasks_blocked()
            if not top.running:
                return
            if action == "add":
                added += 1
                cid = f"d{added}"
                dynamic.append(cid)
                try:
                    await top.add_child(probe(cid, 4 + added % 4))
                except SupervisorNotRunning:
                    return  # the tree is escalating: refusing is the documented answer
                continue
            if action == "remove":
                if dynamic:
                    cid = dynamic.pop(index % len(dynamic))
                    try:
                        await top.remove_child(cid)
                    except SupervisorNotRunning:
                        return
                    except Exception as exc:  # e.g. UnknownChild: would be a bug
                        outcome["remove_error"] = exc
                continue
            live = [p for p in world.current.values() if p.ready and not p.ended]
            if not live:
                continue
            target = live[index % len(live)]
            if action == "fail_next_start":
                world.fail_next_starts[target.child] += 1
            elif action == "crash":
                target.crash()
            else:
                target.finish()
        # quiesce (no more faults), then stop the whole tree
        await trio.sleep(30)
        await trio.testing.wait_all_tasks_blocked()
        outcome["live_at_stop"] = [p.child for p in world.current.values()
                                   if p.ready and not p.ended]
        outcome["stop_at"] = trio.current_time()
        if cancel_from_outside:
            cancel_scope.cancel()
        else:
            top.request_stop()

    with trio.fail_after(100_000):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as tree_scope:
                nursery.start_soon(driver, tree_scope)
                try:
                    await top.run()
                except SupervisorEscalation as exc:
                    outcome["escalation"] = exc
            nursery.cancel_scope.cancel()

    event("tree escalated" if "escalation" in outcome else "tree stopped on request")
    event(f"dynamic children added: {min(added, 3)}{'+' if added >= 3 else ''}")
    assert "remove_error" not in outcome, outcome
    assert all(n <= 1 for n in world.max_live.values()), dict(world.max_live)
    assert all(n == 0 for n in world.live.values()), dict(world.live)
    assert all_tasks() == before
    assert not any(sub.running for sub in subs)

    if "stop_at" in outcome and "escalation" not in outcome:
        # everything live at the stop ends: dynamic children first (together, as OTP stops
        # simple_one_for_one children), then the static ones last started first, depth first
        order = ["p0", "q0", "q1", "p1"]
        ended = [e.child for e in world.journal
                 if e.what == "end" and e.at_s >= outcome["stop_at"]]
        assert sorted(ended) == sorted(outcome["live_at_stop"])
        dynamic_ended = [c for c in ended if c.startswith("d")]
        assert ended[:len(dynamic_ended)] == dynamic_ended, ended
        static_ended = ended[len(dynamic_ended):]
        assert static_ended == sorted(static_ended, key=order.index, reverse=True), ended
