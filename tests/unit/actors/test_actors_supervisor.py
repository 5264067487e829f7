"""Supervisor behaviour in virtual time: start/stop order, strategies, restart types, intensity,
escalation, grace, backoff, dynamic children, introspection and the event hook."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import trio
import trio.testing

from actors import (
    Backoff,
    ChildSpec,
    ChildState,
    EventKind,
    ExitReason,
    Restart,
    ReturnedBeforeReady,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorNotRunning,
    UnknownChild,
    supervisor_spec,
)
from tests.unit.actors._probe import CancelOnlyProbe, Crash, World, all_tasks
from tests.unit.actors._running import run_beside

NO_BACKOFF = Backoff.none()


def specs(world: World, *ids: str, **kw) -> list[ChildSpec]:
    return [ChildSpec(i, world.spec_factory(i, **kw)) for i in ids]


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def crash_once_ready(world: World, child: str, times: int = 1):
    async def driver():
        for _ in range(times):
            await settle()
            world.current[child].crash()
    return driver


async def run_while(sup: Supervisor, driver) -> None:
    """Run ``sup`` in this task beside ``driver``; re-raise what ``sup.run`` raised, as is."""
    caught = await run_beside(sup, driver)
    if caught is not None:
        raise caught


# ---------------------------------------------------------------- start and stop order


async def test_children_start_in_order_each_after_the_previous_reported_ready(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b", "c", ready_after_s=1.0), name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == pytest.approx(3.0)  # ready only once all three are
        sup.request_stop()
    starts = [(e.child, e.at_s) for e in world.entries("start")]
    readies = [(e.child, e.at_s) for e in world.entries("ready")]
    assert starts == [("a", 0.0), ("b", 1.0), ("c", 2.0)]
    assert readies == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


async def test_request_stop_stops_children_one_at_a_time_in_reverse_start_order(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b", "c", stop_takes_s=1.0), name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.request_stop()
    ends = world.entries("end")
    assert [e.child for e in ends] == ["c", "b", "a"]
    assert [e.how for e in ends] == ["graceful"] * 3
    assert [e.at_s for e in ends] == [1.0, 2.0, 3.0]  # the next stop begins after the last ended
    requested = {e.child: e.at_s for e in world.entries("stop_requested")}
    assert requested == {"c": 0.0, "b": 1.0, "a": 2.0}


async def test_supervisor_run_returns_after_request_stop_and_leaves_no_task(autojump_clock):
    world = World()
    before = all_tasks()
    sup = Supervisor(children=specs(world, "a", "b"), name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert len(all_tasks()) > len(before)
        sup.request_stop()
    assert all_tasks() == before
    assert dict(world.live) == {"a": 0, "b": 0}
    assert [c.state for c in sup.which_children()] == [ChildState.STOPPED] * 2


async def test_request_stop_before_run_starts_nothing(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a"), name="s")
    sup.request_stop()
    with trio.fail_after(1):
        await sup.run()
    assert world.journal == []


# ---------------------------------------------------------------- strategies


async def test_one_for_one_restarts_only_the_failed_child(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b", "c"), backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["b"].crash()
        await settle()
        assert dict(world.instances) == {"a": 1, "b": 2, "c": 1}
        assert [e.child for e in world.entries("end")] == ["b"]
        sup.request_stop()


async def test_one_for_all_stops_siblings_in_reverse_then_restarts_all_in_order(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b", "c", "d", stop_takes_s=0.5),
                     strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.journal.clear()
        world.current["b"].crash()
        await trio.sleep(5)  # each sibling takes 0.5 s to stop
        assert [(e.what, e.child) for e in world.journal if e.what in ("end", "start")] == [
            ("end", "b"), ("end", "d"), ("end", "c"), ("end", "a"),
            ("start", "a"), ("start", "b"), ("start", "c"), ("start", "d"),
        ]
        assert dict(world.instances) == {"a": 2, "b": 2, "c": 2, "d": 2}
        sup.request_stop()


async def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b", "c", "d"),
                     strategy=Strategy.REST_FOR_ONE, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.journal.clear()
        world.current["b"].crash()
        await settle()
        assert [(e.what, e.child) for e in world.journal if e.what in ("end", "start")] == [
            ("end", "b"), ("end", "d"), ("end", "c"),
            ("start", "b"), ("start", "c"), ("start", "d"),
        ]
        assert dict(world.instances) == {"a": 1, "b": 2, "c": 2, "d": 2}
        sup.request_stop()


async def test_group_restart_waits_for_the_backoff_with_every_old_instance_gone(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b"), strategy=Strategy.ONE_FOR_ALL,
                     backoff=Backoff(initial_s=2.0, jitter=0.0), name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["a"].crash()
        await settle()
        assert [c.state for c in sup.which_children()] == [ChildState.BACKOFF] * 2
        assert dict(world.live) == {"a": 0, "b": 0}
        await trio.sleep(2.0)
        await settle()
        assert [e.at_s for e in world.entries("start")][-2:] == [2.0, 2.0]
        assert [c.state for c in sup.which_children()] == [ChildState.RUNNING] * 2
        sup.request_stop()


# ---------------------------------------------------------------- restart types


async def test_permanent_child_is_restarted_even_after_returning_normally(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a"), backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["a"].finish()
        await settle()
        assert world.instances["a"] == 2
        assert sup.child_info("a").state is ChildState.RUNNING
        sup.request_stop()


async def test_transient_child_is_restarted_after_a_failure_but_not_after_returning(
    autojump_clock,
):
    world = World()
    spec = ChildSpec("t", world.spec_factory("t"), restart=Restart.TRANSIENT)
    sup = Supervisor(children=[spec], backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["t"].crash()
        await settle()
        assert world.instances["t"] == 2
        world.current["t"].finish()
        await settle()
        assert world.instances["t"] == 2
        info = sup.child_info("t")
        assert info.state is ChildState.STOPPED
        assert info.restarts == 1
        sup.request_stop()


async def test_temporary_child_is_never_restarted_and_is_forgotten_when_it_ends(autojump_clock):
    world = World()
    spec = ChildSpec("tmp", world.spec_factory("tmp"), restart=Restart.TEMPORARY)
    sup = Supervisor(children=[*specs(world, "a"), spec], backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["tmp"].crash()
        await settle()
        assert world.instances["tmp"] == 1
        assert [c.id for c in sup.which_children()] == ["a"]
        sup.request_stop()


async def test_temporary_sibling_is_stopped_not_restarted_by_one_for_all(autojump_clock):
    world = World()
    spec = ChildSpec("tmp", world.spec_factory("tmp"), restart=Restart.TEMPORARY)
    sup = Supervisor(children=[*specs(world, "a"), spec], strategy=Strategy.ONE_FOR_ALL,
                     backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["a"].crash()
        await settle()
        assert dict(world.instances) == {"a": 2, "tmp": 1}
        assert world.entries("end", "tmp")[0].how == "graceful"
        assert [c.id for c in sup.which_children()] == ["a"]
        sup.request_stop()


async def test_child_failing_before_ready_counts_as_a_failure_and_is_retried(autojump_clock):
    world = World()
    world.fail_next_starts["b"] = 2
    events = []
    sup = Supervisor(children=specs(world, "a", "b", "c"), backoff=NO_BACKOFF, intensity=5,
                     name="s", on_event=events.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        # c waited for b's third attempt: ordered start holds across retries
        assert [e.child for e in world.entries("start")] == ["a", "b", "b", "b", "c"]
        failures = [e for e in events if e.reason is ExitReason.FAILED]
        assert [e.child_id for e in failures] == ["b", "b"]
        assert "StartupCrash" in sup.child_info("b").last_failure.exception_repr
        sup.request_stop()


async def test_child_returning_before_ready_is_a_failed_start(autojump_clock):
    async def quits(task_status=trio.TASK_STATUS_IGNORED):
        return

    sup = Supervisor(children=[ChildSpec.from_function("q", quits)], intensity=1,
                     backoff=NO_BACKOFF, name="s")
    with pytest.raises(SupervisorEscalation) as caught:
        await sup.run()
    assert isinstance(caught.value.last_exception, ReturnedBeforeReady)


async def test_factory_that_raises_counts_as_a_failed_start(autojump_clock):
    def broken():
        raise OSError("config file missing")

    sup = Supervisor(children=[ChildSpec("x", broken)], intensity=2, backoff=NO_BACKOFF,
                     name="s")
    with pytest.raises(SupervisorEscalation) as caught:
        await sup.run()
    assert caught.value.child_id == "x"
    assert isinstance(caught.value.last_exception, OSError)
    assert sup.child_info("x").restarts == 2


# ---------------------------------------------------------------- intensity and escalation


async def test_exceeding_intensity_stops_children_in_reverse_and_raises_one_escalation(
    autojump_clock,
):
    world = World()
    children = [*specs(world, "a"), ChildSpec("b", world.spec_factory("b", crash_after_s=1.0)),
                *specs(world, "c")]
    sup = Supervisor(children=children, intensity=2, period_s=10.0, backoff=NO_BACKOFF,
                     name="site")
    with pytest.raises(SupervisorEscalation) as caught:
        await sup.run()
    err = caught.value
    assert type(err) is SupervisorEscalation  # not an ExceptionGroup
    assert err.supervisor == "site"
    assert err.child_id == "b"
    assert isinstance(err.last_exception, Crash)
    assert "b#3" in str(err.last_exception)
    assert "'b'" in str(err)
    assert "Crash" in str(err)
    assert world.instances["b"] == 3  # two restarts allowed, the third failure escalates
    assert trio.current_time() == pytest.approx(3.0)
    assert world.order("end", how="graceful") == ["c", "a"]
    assert dict(world.live) == {"a": 0, "b": 0, "c": 0}


async def test_restarts_spread_wider_than_the_period_never_escalate(autojump_clock):
    world = World()
    sup = Supervisor(children=[ChildSpec("b", world.spec_factory("b", crash_after_s=6.0))],
                     intensity=1, period_s=5.0, backoff=NO_BACKOFF, name="s")
    with trio.move_on_after(30.5):
        await sup.run()
    assert world.instances["b"] == 6  # 5 crashes, never 2 within 5 s


async def test_zero_intensity_escalates_on_the_first_restart(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a"), intensity=0, name="s")
    with pytest.raises(SupervisorEscalation):
        await run_while(sup, crash_once_ready(world, "a"))
    assert world.instances["a"] == 1


async def test_escalation_through_two_nested_supervisors_is_one_unnested_error(autojump_clock):
    world = World()
    device = [ChildSpec("device_link", world.spec_factory("device_link", crash_after_s=1.0)),
              *specs(world, "watchdog")]
    tree = [*specs(world, "telemetry"),
            supervisor_spec("site", device, intensity=2, period_s=60.0, backoff=NO_BACKOFF),
            *specs(world, "uplink")]
    top = Supervisor(children=tree, intensity=0, name="gateway")
    with pytest.raises(SupervisorEscalation) as caught:
        await top.run()
    err = caught.value
    assert type(err) is SupervisorEscalation
    assert (err.supervisor, err.child_id) == ("gateway", "site")
    assert isinstance(err.last_exception, SupervisorEscalation)
    assert err.last_exception.child_id == "device_link"
    assert err.path == ("site", "device_link")
    assert isinstance(err.root_exception, Crash)
    assert "'site'" in str(err)
    assert "device_link" in str(err)
    # the inner supervisor stopped its own children, then the top one stopped the rest, reversed
    assert world.order("end", how="graceful") == ["watchdog", "uplink", "telemetry"]
    assert sum(world.live.values()) == 0


async def test_nursery_start_gets_the_escalation_itself_when_it_happens_before_ready(
    autojump_clock,
):
    async def never_ready(task_status=trio.TASK_STATUS_IGNORED):
        raise ValueError("bad config")

    sup = Supervisor(children=[ChildSpec.from_function("x", never_ready)], intensity=0,
                     name="s")
    async with trio.open_nursery() as nursery:
        with pytest.raises(SupervisorEscalation) as caught:
            await nursery.start(sup.run)
    assert isinstance(caught.value.last_exception, ValueError)


# ---------------------------------------------------------------- grace


async def test_actor_that_returns_within_its_grace_is_never_cancelled(autojump_clock):
    world = World()
    sup = Supervisor(children=[ChildSpec("a", world.spec_factory("a", stop_takes_s=4.0),
                                         grace_s=5.0)], name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.request_stop()
    (end,) = world.entries("end")
    assert (end.how, end.at_s) == ("graceful", 4.0)


async def test_actor_ignoring_the_stop_request_is_cancelled_when_its_grace_runs_out(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[ChildSpec("a", world.spec_factory("a", honours_stop=False),
                                         grace_s=5.0)], name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.request_stop()
    (end,) = world.entries("end")
    assert (end.how, end.at_s) == ("cancelled", 5.0)


async def test_zero_grace_cancels_at_once_without_asking(autojump_clock):
    world = World()
    sup = Supervisor(children=[ChildSpec("a", world.spec_factory("a"), grace_s=0)], name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.request_stop()
    assert world.entries("stop_requested") == []
    (end,) = world.entries("end")
    assert (end.how, end.at_s) == ("cancelled", 0.0)


async def test_actor_without_request_stop_is_cancelled_at_once(autojump_clock):
    world = World()
    sup = Supervisor(children=[ChildSpec("a", lambda: CancelOnlyProbe(world, "a"),
                                         grace_s=30.0)], name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.request_stop()
    (end,) = world.entries("end")
    assert end.at_s == 0.0


async def test_new_instance_starts_only_after_the_old_one_has_ended(autojump_clock):
    world = World()
    children = [ChildSpec("a", world.spec_factory("a", honours_stop=False), grace_s=3.0),
                *specs(world, "b")]
    sup = Supervisor(children=children, strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF,
                     name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["b"].crash()
        await trio.sleep(10)
        sup.request_stop()
    a_end = world.entries("end", "a")[0]
    a_second_start = world.entries("start", "a")[1]
    assert a_end.at_s == 3.0
    assert a_second_start.at_s >= a_end.at_s
    assert world.journal.index(a_end) < world.journal.index(a_second_start)
    assert max(world.max_live.values()) == 1


# ---------------------------------------------------------------- cancellation from outside


async def test_outside_cancellation_stops_the_whole_tree_in_reverse_order_with_grace(
    autojump_clock,
):
    world = World()
    site = [*specs(world, "link", "guard", stop_takes_s=1.0)]
    tree = [*specs(world, "telemetry", stop_takes_s=1.0), supervisor_spec("site", site),
            *specs(world, "uplink", stop_takes_s=1.0)]
    top = Supervisor(children=tree, name="gateway")
    before = all_tasks()
    with trio.move_on_after(10) as scope:
        await top.run()
    assert scope.cancelled_caught
    ends = world.entries("end")
    assert [e.child for e in ends] == ["uplink", "guard", "link", "telemetry"]
    assert [e.how for e in ends] == ["graceful"] * 4
    assert [e.at_s for e in ends] == [11.0, 12.0, 13.0, 14.0]
    assert all_tasks() == before


async def test_outside_cancellation_during_startup_stops_the_started_children(autojump_clock):
    world = World()
    top = Supervisor(children=specs(world, "a", "b", "c", ready_after_s=2.0), name="s")
    with trio.move_on_after(3):
        await top.run()
    assert [e.child for e in world.entries("start")] == ["a", "b"]
    assert [e.child for e in world.entries("end")] == ["b", "a"]
    assert sum(world.live.values()) == 0


# ---------------------------------------------------------------- backoff


async def test_backoff_doubles_between_consecutive_restarts_up_to_its_cap(autojump_clock):
    world = World()
    backoff = Backoff(initial_s=1.0, multiplier=2.0, max_s=5.0, jitter=0.0, reset_after_s=60)
    sup = Supervisor(children=[ChildSpec("a", world.spec_factory("a", crash_after_s=0.5))],
                     intensity=100, period_s=1.0, backoff=backoff, name="s")
    with trio.move_on_after(30):
        await sup.run()
    starts = [e.at_s for e in world.entries("start")]
    gaps = [round(b - a - 0.5, 6) for a, b in itertools.pairwise(starts)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


async def test_backoff_starts_over_after_a_quiet_period(autojump_clock):
    world = World()
    backoff = Backoff(initial_s=1.0, multiplier=2.0, max_s=30.0, jitter=0.0, reset_after_s=10)
    sup = Supervisor(children=specs(world, "a"), intensity=100, backoff=backoff, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["a"].crash()  # t=0: waits 1 s
        await trio.sleep(1.5)
        world.current["a"].crash()  # t=1.5: waits 2 s
        await trio.sleep(2.5)
        world.current["a"].crash()  # t=4: waits 4 s
        await trio.sleep(4.5)
        await trio.sleep(10)  # the instance started at t=8 runs quietly for 10.5 s
        world.current["a"].crash()  # t=18.5: healthy again, waits 1 s (not 8)
        await trio.sleep(1.5)
        sup.request_stop()
    assert [e.at_s for e in world.entries("start")] == [0.0, 1.0, 3.5, 8.0, 19.5]


def test_backoff_jitter_is_reproducible_with_a_seeded_random_and_stays_within_bounds():
    backoff = Backoff(initial_s=1.0, multiplier=2.0, max_s=8.0, jitter=0.5)
    first = [backoff.delay(n, random.Random(7)) for n in range(6)]
    again = [backoff.delay(n, random.Random(7)) for n in range(6)]
    assert first == again
    for n, delay in enumerate(first):
        ceiling = min(2.0**n, 8.0)
        assert ceiling * 0.5 <= delay <= ceiling
    rng = random.Random(1)
    assert len({backoff.delay(3, rng) for _ in range(20)}) > 1  # jitter really varies


def test_backoff_rejects_settings_that_make_no_sense():
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)
    with pytest.raises(ValueError, match="multiplier"):
        Backoff(multiplier=0.5)
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=-1)


# ---------------------------------------------------------------- dynamic children


async def test_add_child_starts_it_while_running_and_remove_child_stops_it(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a"), name="gateway")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.add_child(ChildSpec("site-1", world.spec_factory("site-1", ready_after_s=2)))
        assert trio.current_time() == 2.0  # add_child returned once the child was ready
        await sup.add_child(ChildSpec("site-2", world.spec_factory("site-2")))
        assert [c.id for c in sup.which_children()] == ["a", "site-1", "site-2"]
        assert sup.child_info("site-1").state is ChildState.RUNNING
        await sup.remove_child("site-1")
        assert world.entries("end", "site-1")[0].how == "graceful"
        assert [c.id for c in sup.which_children()] == ["a", "site-2"]
        world.current["site-2"].crash()  # an added child is supervised like the others
        await trio.sleep(1)  # default backoff: 0.1 s at most
        assert world.instances["site-2"] == 2
        sup.request_stop()
    assert world.order("end", how="graceful") == ["site-1", "site-2", "a"]


async def test_dynamic_children_refuse_duplicates_unknown_ids_and_stopped_supervisors(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=specs(world, "a"), name="s")
    with pytest.raises(SupervisorNotRunning, match="start it first"):
        await sup.add_child(ChildSpec("b", world.spec_factory("b")))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(ValueError, match="already has a child 'a'"):
            await sup.add_child(ChildSpec("a", world.spec_factory("a")))
        with pytest.raises(UnknownChild, match="has no child 'zz'"):
            await sup.remove_child("zz")
        sup.request_stop()


async def test_removed_child_in_backoff_is_never_restarted(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b"),
                     backoff=Backoff(initial_s=5.0, jitter=0.0), name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["b"].crash()
        await settle()
        assert sup.child_info("b").state is ChildState.BACKOFF
        await sup.remove_child("b")
        await trio.sleep(10)
        assert world.instances["b"] == 1
        sup.request_stop()


def test_child_ids_must_be_unique():
    world = World()
    with pytest.raises(ValueError, match="appears twice"):
        Supervisor(children=specs(world, "a", "a"))


def test_child_spec_rejects_negative_grace():
    with pytest.raises(ValueError, match="grace_s"):
        ChildSpec("a", World().spec_factory("a"), grace_s=-1)


# ---------------------------------------------------------------- introspection and events


async def test_which_children_reports_states_restart_counts_and_last_failure(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b"),
                     backoff=Backoff(initial_s=1.0, jitter=0.0), name="s")
    assert [c.state for c in sup.which_children()] == [ChildState.STOPPED] * 2
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(3)
        world.current["b"].crash(ConnectionError("inverter refused"))
        await settle()
        b = sup.child_info("b")
        assert b.state is ChildState.BACKOFF
        assert b.last_failure.exception_repr == "ConnectionError('inverter refused')"
        assert b.last_failure.at_s == 3.0
        await trio.sleep(1.5)
        a, b = sup.which_children()
        assert (a.state, a.restarts, a.last_failure, a.since_s) == (
            ChildState.RUNNING, 0, None, 0.0)
        assert (b.state, b.restarts, b.since_s) == (ChildState.RUNNING, 1, 4.0)
        sup.request_stop()


async def test_event_hook_sees_started_exited_restarted_and_escalated(autojump_clock):
    world = World()
    events = []
    sup = Supervisor(children=specs(world, "a"), intensity=1, backoff=NO_BACKOFF,
                     name="s", on_event=events.append)
    with pytest.raises(SupervisorEscalation):
        await run_while(sup, crash_once_ready(world, "a", times=2))
    kinds = [(e.kind, e.reason, e.restarts) for e in events]
    assert kinds == [
        (EventKind.STARTED, None, 0),
        (EventKind.EXITED, ExitReason.FAILED, 0),
        (EventKind.RESTARTED, None, 1),
        (EventKind.EXITED, ExitReason.FAILED, 1),
        (EventKind.ESCALATED, None, 1),
    ]
    assert all(e.supervisor == "s" and e.child_id == "a" for e in events)
    assert "Crash" in events[-1].exception_repr


async def test_a_raising_event_hook_cannot_crash_the_supervisor(autojump_clock, caplog):
    world = World()
    seen = []

    def hook(event):
        seen.append(event.kind)
        raise RuntimeError("telemetry is down")

    sup = Supervisor(children=specs(world, "a"), backoff=NO_BACKOFF, name="s", on_event=hook)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.current["a"].crash()
        await settle()
        assert sup.child_info("a").state is ChildState.RUNNING
        sup.request_stop()
    assert seen[:3] == [EventKind.STARTED, EventKind.EXITED, EventKind.RESTARTED]
    assert "on_event hook of supervisor 's' raised" in caplog.text


async def test_a_failing_request_stop_falls_back_to_cancellation(autojump_clock):
    class BadStop:
        async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            await trio.sleep_forever()

        def request_stop(self):
            raise RuntimeError("oops")

    sup = Supervisor(children=[ChildSpec("x", BadStop, grace_s=math.inf)], name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.request_stop()
    assert trio.current_time() == 0.0


async def test_stop_waits_until_every_child_has_stopped(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b", stop_takes_s=1.0), name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.stop()
        assert trio.current_time() == 2.0
        assert not sup.running
        assert sum(world.live.values()) == 0
        await sup.stop()  # stopping a stopped supervisor is harmless


async def test_a_failed_start_inside_a_group_restart_restarts_the_group_again(autojump_clock):
    world = World()
    sup = Supervisor(children=specs(world, "a", "b", "c"), strategy=Strategy.ONE_FOR_ALL,
                     intensity=5, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        world.fail_next_starts["b"] = 1
        world.current["a"].crash()
        await settle()
        sup.request_stop()
    starts = [(e.child, e.instance) for e in world.entries("start")]
    assert starts == [("a", 1), ("b", 1), ("c", 1),  # initial
                      ("a", 2), ("b", 2),            # b fails to start: c is never started
                      ("a", 3), ("b", 3), ("c", 2)]  # a stopped again, the group starts over
    assert max(world.max_live.values()) == 1
    assert sup.child_info("b").last_failure.exception_repr.startswith("StartupCrash")
