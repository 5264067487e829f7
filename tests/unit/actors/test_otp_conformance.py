"""OTP conformance: the scenarios of Erlang/OTP's ``supervisor_SUITE`` that apply to Trio.

Each test names the OTP test case it follows (lib/stdlib/test/supervisor_SUITE.erl) and checks
the same promise in virtual time. Where `actors` deliberately differs from OTP, the test says
so and proves the documented behaviour instead (docs/actors.md, "OTP behaviour → actors
behaviour"). OTP cases with no Trio meaning (code_change, global names, map child specs,
``count_children`` memory, exit reason ``shutdown`` of a worker) are left out.
"""

from __future__ import annotations

import math

import attrs
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
    StartFailed,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorEvent,
    SupervisorNotRunning,
    SupervisorState,
    supervisor_spec,
)
from tests.unit.actors._probe import Crash, World
from tests.unit.actors._running import start

NO_BACKOFF = Backoff.none()


def spec(world: World, cid: str, restart: Restart = Restart.PERMANENT, grace_s: float = 1.0,
         **behaviour: object) -> ChildSpec:
    return ChildSpec(cid, world.spec_factory(cid, **behaviour), restart=restart,
                     grace_s=grace_s)


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def instances(world: World, cid: str) -> int:
    return len(world.entries("start", cid))


# ---------------------------------------------------------------- start


async def test_sup_start_normal_an_empty_supervisor_starts_and_stops(autojump_clock):
    sup = Supervisor(name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        assert sup.state is SupervisorState.RUNNING
        await sup.stop()
    assert running.error is None
    assert sup.state is SupervisorState.STOPPED


async def test_sup_start_fail_divergence_a_failed_first_start_is_retried_within_intensity(
    autojump_clock,
):
    """OTP: a child failing in the supervisor's init fails start_link (failed_to_start_child).
    actors (decided, docs): a failed first start is a crash like any other: retried with
    backoff, counted against intensity, so a peer that is not up yet at boot does not take the
    tree down; intensity=0 gives OTP's answer."""
    world = World()
    world.fail_next_starts["a"] = 2
    sup = Supervisor(children=[spec(world, "a")], intensity=3, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        assert sup.state is SupervisorState.RUNNING
        await sup.stop()
    assert running.error is None
    assert instances(world, "a") == 3

    strict = World()
    strict.fail_next_starts["a"] = 1
    sup0 = Supervisor(children=[spec(strict, "a")], intensity=0, name="s0")
    async with trio.open_nursery() as nursery:
        with pytest.raises(SupervisorEscalation) as caught:
            await nursery.start(sup0.run)
    assert "failed to start" in str(caught.value.last_exception)


async def test_sup_start_ignore_child_a_transient_that_returns_before_ready_is_done(
    autojump_clock,
):
    """OTP: a child whose init returns ``ignore`` is kept, not running, and the next starts.
    actors (decided, docs): a TRANSIENT or TEMPORARY actor that returns without reporting
    ready finished its one-shot job: NORMAL, not restarted; the next sibling starts."""
    world = World()
    done = []

    async def one_shot(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        done.append(trio.current_time())

    job = ChildSpec.from_function("migrate", one_shot)
    job = attrs.evolve(job, restart=Restart.TRANSIENT)
    sup = Supervisor(children=[job, spec(world, "b")], intensity=0, name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        await trio.sleep(10)
        states = {c.id: c.state for c in sup.which_children()}
        await sup.stop()
    assert running.error is None
    assert done == [0.0]
    assert states == {"migrate": ChildState.STOPPED, "b": ChildState.RUNNING}
    assert sup.child_info("migrate").last_failure is None


async def test_sup_start_child_returns_error_add_child_raises_and_drops_the_spec(
    autojump_clock,
):
    world = World()
    world.fail_next_starts["bad"] = 1
    events: list[SupervisorEvent] = []
    sup = Supervisor(children=[spec(world, "a")], intensity=0, name="s",
                     on_event=events.append)
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        with pytest.raises(StartFailed) as caught:
            await sup.add_child(spec(world, "bad"))
        await trio.sleep(60)
        ids = [c.id for c in sup.which_children()]
        a_alive = world.current["a"].ready and not world.current["a"].ended
        await sup.stop()
    assert caught.value.child_id == "bad"
    assert "failed to start" in repr(caught.value.exception)
    assert ids == ["a"]
    assert a_alive
    assert instances(world, "a") == 1
    assert instances(world, "bad") == 1  # never restarted
    assert running.error is None  # intensity 0, yet no escalation
    assert [e.reason for e in events if e.child_id == "bad"] == [ExitReason.FAILED]


# ---------------------------------------------------------------- stop


async def test_sup_stop_infinity_an_infinite_shutdown_waits_for_the_child(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, "a", grace_s=math.inf, stop_takes_s=100.0)],
                     name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.stop()
    (end,) = world.entries("end", "a")
    assert (end.how, end.at_s) == ("graceful", 100.0)


async def test_sup_stop_timeout_a_child_that_does_not_stop_is_cancelled_after_its_shutdown(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "a", grace_s=1.0),
                               spec(world, "b", grace_s=1.0, honours_stop=False)], name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.stop()
    assert [(e.child, e.how, e.at_s) for e in world.entries("end")] == [
        ("b", "cancelled", 1.0), ("a", "graceful", 1.0)]


async def test_sup_stop_brutal_kill_zero_grace_cancels_without_asking(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, "a", grace_s=0.0)], name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.stop()
    assert world.entries("stop_requested") == []
    assert [e.how for e in world.entries("end")] == ["cancelled"]


async def test_child_adm_add_which_remove_and_refuse_duplicates(autojump_clock):
    world = World()
    sup = Supervisor(name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.add_child(spec(world, "c1"))
        await sup.add_child(spec(world, "c2"))
        with pytest.raises(ValueError, match="already has a child 'c1'"):
            await sup.add_child(spec(world, "c1"))
        assert [c.id for c in sup.which_children()] == ["c1", "c2"]
        await sup.remove_child("c1")
        assert [c.id for c in sup.which_children()] == ["c2"]
        await sup.stop()
    assert [e.child for e in world.entries("end")] == ["c1", "c2"]


# ---------------------------------------------------------------- restart types


@pytest.mark.parametrize(("ending", "restart", "restarted"), [
    ("normal", Restart.PERMANENT, True), ("normal", Restart.TRANSIENT, False),
    ("normal", Restart.TEMPORARY, False),
    ("abnormal", Restart.PERMANENT, True), ("abnormal", Restart.TRANSIENT, True),
    ("abnormal", Restart.TEMPORARY, False)])
async def test_permanent_transient_temporary_normal_and_abnormal(autojump_clock, ending, restart,
                                                                 restarted):
    """OTP permanent_normal, transient_normal, temporary_normal, permanent_abnormal,
    transient_abnormal, temporary_abnormal: a normal exit restarts only a permanent child, a
    crash a permanent or transient one; a temporary child is forgotten either way."""
    world = World()
    sup = Supervisor(children=[spec(world, "c", restart=restart)], backoff=NO_BACKOFF,
                     name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        if ending == "normal":
            world.current["c"].finish()
        else:
            world.current["c"].crash()
        await trio.sleep(1)
        ids = [c.id for c in sup.which_children()]
        await sup.stop()
    assert instances(world, "c") == (2 if restarted else 1)
    assert ids == ([] if restart is Restart.TEMPORARY else ["c"])


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_temporary_bystander_is_stopped_not_restarted_and_costs_no_intensity(
    autojump_clock, strategy,
):
    world = World()
    sup = Supervisor(children=[spec(world, "child1"),
                               spec(world, "child2", restart=Restart.TEMPORARY)],
                     strategy=strategy, intensity=1, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        world.current["child1"].finish()
        await trio.sleep(1)
        ids = [c.id for c in sup.which_children()]
        await sup.stop()
    assert running.error is None
    assert ids == ["child1"]
    assert instances(world, "child2") == 1


async def test_do_not_save_child_specs_for_temporary_children(autojump_clock):
    world = World()
    sup = Supervisor(name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.add_child(spec(world, "t", restart=Restart.TEMPORARY))
        world.current["t"].crash()
        await settle()
        ids = [c.id for c in sup.which_children()]
        await sup.stop()
    assert ids == []


async def test_divergence_a_finished_transient_sibling_stays_finished_in_a_group_restart(
    autojump_clock,
):
    """OTP restarts every non-temporary child of the group, even a transient one that had
    finished. actors (decided, docs): a transient child that returned has done its job; a
    sibling's crash does not make it run again."""
    world = World()
    sup = Supervisor(children=[spec(world, "job", restart=Restart.TRANSIENT),
                               spec(world, "a"), spec(world, "b")],
                     strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        world.current["job"].finish()
        await settle()
        world.current["b"].crash()
        await trio.sleep(5)
        await sup.stop()
    assert instances(world, "job") == 1
    assert (instances(world, "a"), instances(world, "b")) == (2, 2)


# ---------------------------------------------------------------- intensity and period


async def test_multiple_restarts_spread_over_more_than_the_period_never_escalate(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "child1")], intensity=1, period_s=1.0,
                     backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        for _ in range(4):
            world.current["child1"].crash()
            await trio.sleep(2.1)
        await sup.stop()
    assert running.error is None
    assert instances(world, "child1") == 5


async def test_hanging_restart_loop_a_child_that_keeps_failing_to_start_escalates(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "a"), spec(world, "b")], intensity=3, period_s=60,
                     backoff=Backoff(initial_s=0.5, jitter=0), name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        world.fail_next_starts["b"] = 100
        world.current["b"].crash()
        await running.done.wait()
    assert isinstance(running.error, SupervisorEscalation)
    assert running.error.child_id == "b"
    assert instances(world, "b") == 4  # the first, then 3 restarts that failed to start
    assert world.live == {"a": 0, "b": 0}


# ---------------------------------------------------------------- strategies


async def test_one_for_one_restarts_only_the_failed_child(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, "child1"), spec(world, "child2")],
                     backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        world.current["child1"].crash()
        await settle()
        await sup.stop()
    assert (instances(world, "child1"), instances(world, "child2")) == (2, 1)


@pytest.mark.parametrize("strategy", list(Strategy))
async def test_escalation_stops_every_child_and_raises_one_error(autojump_clock, strategy):
    """OTP one_for_one_escalation, one_for_all_escalation, rest_for_one_escalation."""
    world = World()
    sup = Supervisor(children=[spec(world, "child1"), spec(world, "child2"),
                               spec(world, "child3")],
                     strategy=strategy, intensity=2, period_s=3600, backoff=NO_BACKOFF,
                     name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        for _ in range(3):
            await settle()
            world.current["child2"].crash(Crash("again"))
        await running.done.wait()
    assert isinstance(running.error, SupervisorEscalation)
    assert repr(running.error.root_exception) == "Crash('again')"
    assert sum(world.live.values()) == 0
    assert sup.state is SupervisorState.STOPPED


async def test_one_for_all_stops_the_others_last_first_then_starts_all_in_order(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, c) for c in ("child1", "child2", "child3")],
                     strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        mark = len(world.journal)
        world.current["child1"].crash()
        await settle()
        after = world.journal[mark:]
        await sup.stop()
    assert [(e.what, e.child) for e in after if e.what in ("end", "start")] == [
        ("end", "child1"), ("end", "child3"), ("end", "child2"),
        ("start", "child1"), ("start", "child2"), ("start", "child3")]
    assert max(world.max_live.values()) == 1


async def test_one_for_all_other_child_fails_restart_the_group_is_restarted_again(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "child1"), spec(world, "child2")],
                     strategy=Strategy.ONE_FOR_ALL, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        world.fail_next_starts["child2"] = 1
        world.current["child1"].crash()
        await trio.sleep(1)
        ends = [(e.child, e.how) for e in world.entries("end")]
        await sup.stop()
    assert running.error is None
    # child1 restarted, child2's restart failed, so child1 was stopped and both started again
    assert ends == [("child1", "crashed"), ("child2", "graceful"), ("child2", "startup_crash"),
                    ("child1", "graceful")]
    assert (instances(world, "child1"), instances(world, "child2")) == (3, 3)


async def test_rest_for_one_restarts_the_failed_child_and_those_after_it(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, c) for c in ("child1", "child2", "child3")],
                     strategy=Strategy.REST_FOR_ONE, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        world.current["child2"].crash()
        await settle()
        await sup.stop()
    assert [instances(world, c) for c in ("child1", "child2", "child3")] == [1, 2, 2]


async def test_rest_for_one_other_child_fails_restart(autojump_clock):
    """A failed start inside the group restart is a crash of that child: REST_FOR_ONE then
    restarts it and those after it (child2, already running again, is left alone)."""
    world = World()
    sup = Supervisor(children=[spec(world, c) for c in ("child1", "child2", "child3")],
                     strategy=Strategy.REST_FOR_ONE, backoff=NO_BACKOFF, name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        world.fail_next_starts["child3"] = 1
        world.current["child2"].crash()
        await trio.sleep(1)
        await sup.stop()
    assert running.error is None
    assert [instances(world, c) for c in ("child1", "child2", "child3")] == [1, 2, 3]


# ---------------------------------------------------------------- dynamic children


async def test_simple_one_for_one_shutdown_dynamic_children_stop_together(autojump_clock):
    """OTP simple_one_for_one_shutdown: shutdown takes about one child's shutdown time, not
    the sum, and a child that overruns its shutdown is killed (here: cancelled)."""
    world = World()
    sup = Supervisor(name="s")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.add_child(spec(world, "d1", grace_s=2.0, stop_takes_s=1.0))
        await sup.add_child(spec(world, "d2", grace_s=2.0, stop_takes_s=1.0))
        await sup.add_child(spec(world, "d3", grace_s=2.0, stop_takes_s=5.0))
        began = trio.current_time()
        await sup.stop()
        took = trio.current_time() - began
    assert took == 2.0
    assert sorted((e.child, e.how) for e in world.entries("end")) == [
        ("d1", "graceful"), ("d2", "graceful"), ("d3", "cancelled")]


async def test_simple_one_for_one_escalation_of_a_dynamic_child(autojump_clock):
    world = World()
    sup = Supervisor(intensity=0, name="s")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        await sup.add_child(spec(world, "d1"))
        await sup.add_child(spec(world, "d2"))
        world.current["d1"].crash()
        await running.done.wait()
    assert isinstance(running.error, SupervisorEscalation)
    assert running.error.child_id == "d1"
    assert world.live == {"d1": 0, "d2": 0}


# ---------------------------------------------------------------- trees


async def test_tree_a_nested_supervisor_that_escalates_is_restarted_by_its_parent(
    autojump_clock,
):
    world = World()
    site = supervisor_spec("site", [spec(world, "link"), spec(world, "guard")], intensity=0,
                           backoff=NO_BACKOFF)
    top = Supervisor(children=[spec(world, "telemetry"), site], backoff=NO_BACKOFF,
                     name="top")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, top)
        world.current["guard"].crash()
        await settle()
        tree = top.which_children(recursive=True)
        await top.stop()
    assert running.error is None
    assert [instances(world, c) for c in ("telemetry", "link", "guard")] == [1, 2, 2]
    site_info = tree[1]
    assert site_info.is_supervisor
    assert site_info.restarts == 1
    assert [c.id for c in site_info.children] == ["link", "guard"]
    assert all(c.state is ChildState.RUNNING for c in site_info.children)


async def test_count_children_the_tree_view_counts_supervisors_and_workers(autojump_clock):
    world = World()
    top = Supervisor(children=[spec(world, "w1"),
                               supervisor_spec("sub", [spec(world, "w2"), spec(world, "w3")])],
                     name="top")
    async with trio.open_nursery() as nursery:
        await start(nursery, top)
        tree = top.which_children(recursive=True)
        await top.stop()

    def count(infos):
        sups = sum(1 for i in infos if i.is_supervisor)
        workers = sum(1 for i in infos if not i.is_supervisor)
        for info in infos:
            s, w = count(info.children)
            sups, workers = sups + s, workers + w
        return sups, workers

    assert count(tree) == (1, 3)


# ---------------------------------------------------------------- stop during start, failure
# during stop (OTP: a supervisor that gets an exit signal during init terminates the children
# started so far; supervisor.erl reports a child's bad exit while terminating as shutdown_error)


async def test_stop_during_start_ends_run_cleanly_with_started_children_stopped(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "a"), spec(world, "b", ready_after_s=10.0),
                               spec(world, "c")], name="s")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_at, sup, 1.0)
        await nursery.start(sup.run)  # returns: never Trio's "exited without started()"
        assert sup.state is SupervisorState.STOPPED
    assert [e.child for e in world.entries("start")] == ["a", "b"]
    assert [e.child for e in world.entries("end")] == ["b", "a"]
    with pytest.raises(SupervisorNotRunning):
        await sup.wait_ready()


async def _stop_at(sup: Supervisor, at_s: float) -> None:
    await trio.sleep_until(at_s)
    sup.request_stop()


async def test_shutdown_error_is_reported_and_the_shutdown_goes_on_in_order(autojump_clock,
                                                                             caplog):
    world = World()
    events: list[SupervisorEvent] = []
    sup = Supervisor(children=[spec(world, "a"), spec(world, "flusher",
                                                      fails_on_stop=OSError("disk full")),
                               spec(world, "c")],
                     name="s", on_event=events.append)
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.stop()
    assert [e.child for e in world.entries("end")] == ["c", "flusher", "a"]
    exits = {e.child_id: e for e in events if e.kind is EventKind.EXITED}
    assert exits["flusher"].reason is ExitReason.SHUTDOWN_ERROR
    assert isinstance(exits["flusher"].exception, OSError)
    assert exits["a"].reason is exits["c"].reason is ExitReason.STOPPED
    assert sup.child_info("flusher").last_failure.exception_repr == "OSError('disk full')"
    assert any(r.levelname == "ERROR" and "child_shutdown_error" in r.getMessage()
               and "flusher" in r.getMessage() for r in caplog.records)
