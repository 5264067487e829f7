"""What an embedder must be able to trust: one test (or more) per item of issue 11's "Why".

Each of these failed on the runtime before the fix (7d97f3f) and passes now. Names say the
promise; virtual time throughout, except where a real subprocess is the point.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing

import actors
from actors import (
    Backoff,
    ChildSpec,
    EventKind,
    ExitReason,
    Supervisor,
    SupervisorEscalation,
    SupervisorEvent,
    SupervisorNotRunning,
    supervisor_spec,
)
from tests.unit.actors._probe import World
from tests.unit.actors._running import start

ROOT = Path(__file__).resolve().parents[3]
NO_BACKOFF = Backoff.none()


def spec(world: World, cid: str, grace_s: float = 1.0, **behaviour: object) -> ChildSpec:
    return ChildSpec(cid, world.spec_factory(cid, **behaviour), grace_s=grace_s)


# ---------------------------------------------------------------- 1. failure while stopping


async def test_a_flush_that_fails_while_stopping_is_recorded_logged_and_evented(
    autojump_clock, caplog,
):
    world = World()
    events: list[SupervisorEvent] = []
    sup = Supervisor(children=[spec(world, "spool", fails_on_stop=OSError("disk full"))],
                     name="app", on_event=events.append)
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        await sup.stop()
    (exited,) = [e for e in events if e.kind is EventKind.EXITED]
    assert exited.reason is ExitReason.SHUTDOWN_ERROR
    assert exited.exception_repr == "OSError('disk full')"
    assert sup.child_info("spool").last_failure.exception_repr == "OSError('disk full')"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["child_shutdown_error supervisor=app child=spool "
                      "error=OSError('disk full')"]


# ---------------------------------------------------------------- 2. stop during start-up


async def test_a_stop_while_a_child_is_still_starting_lets_nursery_start_return(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "db"), spec(world, "device", ready_after_s=30.0)],
                     name="app")

    async def sigint_at_1s() -> None:
        await trio.sleep(1)
        sup.request_stop()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sigint_at_1s)
        await nursery.start(sup.run)  # used to raise RuntimeError from Trio
        assert trio.current_time() == 2.0  # the stop at 1 s, then device's 1 s grace
    assert sup.state is actors.SupervisorState.STOPPED
    assert [e.child for e in world.entries("end")] == ["device", "db"]


async def test_a_stop_requested_before_run_lets_nursery_start_return(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, "a")], name="app")
    sup.request_stop()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
    assert world.entries("start") == []


# ---------------------------------------------------------------- 3. add_child that fails


async def test_add_child_that_fails_to_start_raises_and_never_touches_its_siblings(
    autojump_clock,
):
    world = World()
    world.fail_next_starts["plugin"] = 1
    sup = Supervisor(children=[spec(world, "core")], intensity=0, name="app")
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        with pytest.raises(actors.StartFailed) as caught:
            await sup.add_child(spec(world, "plugin"))
        await trio.sleep(60)
        ids = [c.id for c in sup.which_children()]
        await sup.stop()
    assert isinstance(caught.value.__cause__, Exception)
    assert ids == ["core"]
    assert running.error is None
    assert len(world.entries("start", "core")) == 1


# ---------------------------------------------------------------- 4. stops never hold decisions


async def test_removing_a_slow_child_does_not_delay_a_crashed_siblings_restart(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, "slow", grace_s=30.0, stop_takes_s=29.0),
                               spec(world, "worker")], backoff=NO_BACKOFF, name="app")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        nursery.start_soon(sup.remove_child, "slow")
        await trio.sleep(1)
        world.current["worker"].crash()
        await trio.testing.wait_all_tasks_blocked()
        restarted_at = world.entries("ready", "worker")[-1].at_s
        await trio.sleep(30)
        await sup.stop()
    assert restarted_at == 1.0  # not after slow's 29 s stop


async def test_dynamic_children_stop_in_parallel_at_shutdown(autojump_clock):
    world = World()
    sup = Supervisor(name="app")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        for n in range(5):
            await sup.add_child(spec(world, f"conn{n}", grace_s=10.0, stop_takes_s=2.0))
        began = trio.current_time()
        await sup.stop()
        took = trio.current_time() - began
    assert took == 2.0  # one stop time, not 5 x 2 s
    assert [e.how for e in world.entries("end")] == ["graceful"] * 5


# ---------------------------------------------------------------- 5. a stop has a bound


async def test_an_outer_cancellation_cuts_an_infinite_grace_that_the_child_ignores(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "stubborn", grace_s=math.inf, honours_stop=False)],
                     name="app")
    with trio.move_on_after(60):
        async with trio.open_nursery() as nursery:
            await start(nursery, sup)
            await trio.sleep(1)
            sup.request_stop()  # ignored by the child; an inf grace waits forever...
            await trio.sleep(9)
            nursery.cancel_scope.cancel()  # ...until the app's deadline cancels
    assert trio.current_time() == 10.0
    assert [(e.how, e.at_s) for e in world.entries("end")] == [("cancelled", 10.0)]


async def test_a_deadline_after_request_stop_cuts_the_remaining_graces(autojump_clock):
    """The gateway's shutdown: request_stop, then a deadline on the scope around the tree.
    Past the deadline no child gets more grace: each is cancelled at once."""
    world = World()
    sup = Supervisor(children=[spec(world, "a", grace_s=20.0, stop_takes_s=15.0),
                               spec(world, "b", grace_s=20.0, stop_takes_s=15.0)], name="app")
    with trio.move_on_after(100) as deadline:
        async with trio.open_nursery() as nursery:
            await start(nursery, sup)
            sup.request_stop()
            deadline.deadline = trio.current_time() + 5.0
    assert [(e.child, e.how, e.at_s) for e in world.entries("end")] == [
        ("b", "cancelled", 5.0), ("a", "cancelled", 5.0)]


async def test_a_first_outer_cancellation_still_gives_finite_graces(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, "a", grace_s=20.0, stop_takes_s=3.0)], name="app")
    with trio.move_on_after(1):
        await sup.run()
    assert [(e.how, e.at_s) for e in world.entries("end")] == [("graceful", 4.0)]


async def test_a_bounded_shielded_flush_after_cancellation_is_no_overrun(autojump_clock):
    """The gateway's telemetry: cancelled at once (no request_stop), then a shielded flush with
    its own 5 s deadline. The default kill timeout leaves room for it."""

    async def telemetry(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                await trio.sleep_forever()  # a collector that does not answer

    events: list[SupervisorEvent] = []
    sup = Supervisor(children=[ChildSpec.from_function("telemetry", telemetry)], name="app",
                     on_event=events.append)
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        await sup.stop()
    assert running.error is None
    assert [e.reason for e in events if e.kind is EventKind.EXITED] == [ExitReason.STOPPED]
    assert trio.current_time() == 5.0


async def test_a_child_outliving_its_kill_timeout_is_reported_and_escalated(autojump_clock,
                                                                            caplog):
    ended = []

    async def shields_itself(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(100)  # a clean-up with no deadline of its own
            ended.append(trio.current_time())

    events: list[SupervisorEvent] = []
    child = ChildSpec("hung", lambda: actors.FunctionActor(shields_itself), grace_s=0,
                      kill_timeout_s=2.0)
    sup = Supervisor(children=[child], name="app", on_event=events.append)
    async with trio.open_nursery() as nursery:
        running = await start(nursery, sup)
        sup.request_stop()
        await running.done.wait()
    (overrun,) = [e for e in events if e.kind is EventKind.STOP_OVERRUN]
    assert (overrun.child_id, overrun.at_s) == ("hung", 2.0)
    assert any("child_stop_overrun" in r.getMessage() for r in caplog.records
               if r.levelno == logging.ERROR)
    assert isinstance(running.error, SupervisorEscalation)
    assert isinstance(running.error.last_exception, actors.StopOverrun)
    assert ended == [100.0]  # Trio cannot kill a task: run ended when it did


# ---------------------------------------------------------------- 6. types work for users


@pytest.mark.slow
def test_user_code_and_the_package_type_check_under_mypy_strict(tmp_path):
    user = tmp_path / "user_app.py"
    user.write_text(textwrap.dedent('''
        import trio
        from actors import (ChildSpec, DropOldestRing, LatestCell, Request, Supervisor,
                            call, open_mailbox, supervisor_spec)

        async def poll(port: int, *, task_status: trio.TaskStatus[None]
                       = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()

        async def main() -> None:
            sup = Supervisor(children=[ChildSpec.from_function("poll", poll, 502),
                                       supervisor_spec("site", [])])
            send, receive = open_mailbox[int](8)
            await send.send(1)
            n: int = await receive.receive()
            cell = LatestCell[float]()
            cell.set(1.5)
            ring = DropOldestRing[str](4)
            ring.push("x")
            calls, requests = open_mailbox[Request[str, int]](4)
            answer: int = await call(calls, "ping", timeout_s=1.0)
            ChildSpec.from_function("bad", poll, "502")  # type: ignore[arg-type]
            cell.set("no")  # type: ignore[arg-type]
            await send.send("no")  # type: ignore[arg-type]
            print(sup, n, answer, ring, requests)
    '''))
    # run from tmp_path: an embedder's view, --strict alone, not this repository's [tool.mypy]
    # (which `make test` applies to actors and bessai together)
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           str(ROOT / "actors"), str(user)],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    # strict has warn_unused_ignores: each deliberate mistake above must be caught, too
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ROOT / "actors" / "py.typed").exists()


# ---------------------------------------------------------------- 8. the smaller items


async def test_running_is_false_and_add_child_refused_from_the_moment_a_stop_is_requested(
    autojump_clock,
):
    world = World()
    sup = Supervisor(children=[spec(world, "a", grace_s=5.0, stop_takes_s=4.0)], name="app")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        assert sup.running
        sup.request_stop()
        assert not sup.running
        assert sup.stopping
        with pytest.raises(SupervisorNotRunning, match="stopping"):
            await sup.add_child(spec(world, "late"))
    assert not sup.stopping


async def test_add_child_interrupted_by_a_stop_raises_not_running(autojump_clock):
    world = World()
    sup = Supervisor(name="app")
    async with trio.open_nursery() as nursery:
        await start(nursery, sup)
        nursery.start_soon(_stop_later, sup)
        with pytest.raises(SupervisorNotRunning, match="while 'slow' was starting"):
            await sup.add_child(spec(world, "slow", ready_after_s=10.0, grace_s=0))
    assert world.live["slow"] == 0


async def _stop_later(sup: Supervisor) -> None:
    await trio.sleep(1)
    sup.request_stop()


async def test_a_nested_handle_refuses_while_the_nested_supervisor_is_down(autojump_clock):
    world = World()
    world.fail_next_starts["link"] = 1
    top = Supervisor(children=[supervisor_spec("site", [spec(world, "link")], intensity=0)],
                     backoff=Backoff(initial_s=5.0, jitter=0), name="app")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(top.run)
        await trio.sleep(1)  # the site escalated at 0 s; its restart waits 5 s of backoff
        with pytest.raises(SupervisorNotRunning):
            top.nested("site").which_children()
        assert top.nested("site").state is actors.SupervisorState.STOPPED
        with pytest.raises(actors.UnknownChild):
            top.nested("nope").resolve()
        await top.wait_ready()
        assert [c.id for c in top.nested("site").which_children()] == ["link"]
        await top.stop()


def test_from_function_passes_args_and_kwargs_and_refuses_task_status():
    async def fn(a: int, *, b: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        pass

    built = ChildSpec.from_function("f", fn, 1, b="x").factory()
    assert (built.args, built.kwargs) == ((1,), {"b": "x"})
    with pytest.raises(TypeError, match="task_status"):
        ChildSpec.from_function("f", fn, 1, b="x", task_status=None)


def test_child_failures_print_nothing_to_stderr_when_logging_is_unconfigured():
    code = textwrap.dedent('''
        import trio, actors
        events = []
        async def crash(task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            raise OSError("boom")
        async def main():
            sup = actors.Supervisor(children=[actors.ChildSpec.from_function("c", crash)],
                                    intensity=1, backoff=actors.Backoff.none(),
                                    on_event=events.append)
            try:
                await sup.run()
            except actors.SupervisorEscalation:
                pass
        trio.run(main)
        print(len(events))
    ''')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert int(done.stdout) >= 3  # the app saw the failures through on_event...
    assert done.stderr == ""  # ...and nothing was printed behind its back


async def test_a_nested_supervisor_is_reachable_through_a_handle_that_follows_restarts(
    autojump_clock,
):
    world = World()
    top = Supervisor(children=[supervisor_spec("site", [spec(world, "link")], intensity=0)],
                     backoff=NO_BACKOFF, name="app")
    async with trio.open_nursery() as nursery:
        await start(nursery, top)
        site = top.nested("site")
        await site.add_child(spec(world, "meter"))
        assert [c.id for c in site.which_children()] == ["link", "meter"]
        await site.remove_child("meter")
        assert [c.id for c in site.which_children()] == ["link"]
        world.current["link"].crash()  # the site escalates; the app restarts it
        await trio.testing.wait_all_tasks_blocked()
        assert top.child_info("site").restarts == 1
        assert site.child_info("link").state is actors.ChildState.RUNNING
        tree = top.which_children(recursive=True)
        await top.stop()
    assert [c.id for c in tree[0].children] == ["link"]
    assert site.state is actors.SupervisorState.STOPPED


async def test_wait_ready_returns_once_every_child_reported_ready(autojump_clock):
    world = World()
    sup = Supervisor(children=[spec(world, "a", ready_after_s=3.0)], name="app")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await sup.wait_ready()
        assert trio.current_time() == 3.0
        await sup.stop()


async def test_call_returns_the_reply_raises_the_servers_error_and_times_out(autojump_clock):
    send, receive = actors.open_mailbox[actors.Request[int, int]](4)

    async def server():
        async for request in receive:
            if request.body < 0:
                request.fail(ValueError("negative"))
            elif request.body == 0:
                continue  # never answered
            else:
                await trio.sleep(1)
                request.reply(request.body * 2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        assert await actors.call(send, 21, timeout_s=5) == 42
        with pytest.raises(ValueError, match="negative"):
            await actors.call(send, -1, timeout_s=5)
        with pytest.raises(actors.CallTimeout):
            await actors.call(send, 0, timeout_s=5)
        assert trio.current_time() == 6.0
        nursery.cancel_scope.cancel()


def test_docs_document_every_exported_name_otp_table_and_real_io_clock_advice():
    docs = (ROOT / "docs" / "actors.md").read_text()
    missing = [name for name in actors.__all__ if f"`{name}" not in docs]
    assert missing == []
    assert "OTP behaviour → actors behaviour" in docs
    assert "autojump_threshold=0.01" in docs
    assert "rng: random.Random = random.Random()" not in docs
    assert "rng=random.Random()" not in docs
