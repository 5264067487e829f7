"""The `Supervisor`: starts children in order, restarts them by strategy, stops them in reverse.

Erlang/OTP's supervisor semantics, written for Trio. Invariants it keeps:

* **Ordered start.** A child is started only after the previous one reported ready through
  ``task_status.started()``; the supervisor itself reports ready once every child has.
  (A child added with ``add_child`` starts at once, after the children already there.)
* **Reverse stop, bounded.** At shutdown, children are stopped last started first, each after
  the previous one has ended (dynamic children, added by ``add_child``, go first and together,
  as OTP stops ``simple_one_for_one`` children). Each stop is: ``request_stop()``, the child's
  ``grace_s`` to return, cancellation, then its ``kill_timeout_s`` to end; past that the overrun
  is reported (`StopOverrun`) and the supervisor escalates. A cancellation from outside cuts
  infinite graces (and every grace when a stop was already under way): an outer deadline can
  always shorten a stop, down to the kill timeouts.
* **Stops never hold up decisions.** A stop runs in a task of its own: while a removed child
  takes its grace, the supervisor keeps restarting its siblings. A group restart (ONE_FOR_ALL,
  REST_FOR_ONE) stops the group in reverse order in the background, then starts it in order.
* **No overlap.** The old instance of a child has always ended before its new one is built.
* **Isolation.** Each child runs in its own task under its own shielded cancel scope: a child's
  crash or cancellation never cancels a sibling; only the supervisor decides who stops.
* **Bounded restarts.** More than ``intensity`` restarts within ``period_s`` (counted per
  supervisor, as OTP does) make the supervisor stop all children in reverse order and raise one
  `SupervisorEscalation` to its parent, never an ExceptionGroup.
* **Backoff.** Restarts of a child wait per `Backoff` (jittered, exponential, reset after a quiet
  period) so a crash loop cannot spin; the wait happens with the old instance already gone.
* **Nothing is lost.** A failure while a child stops is recorded (``SHUTDOWN_ERROR``, an ERROR
  log line, ``last_failure``); a failed ``add_child`` start is raised to its caller.
* **Nothing leaks.** When ``run`` ends, every task it started has ended.

A `Supervisor` is itself an actor (``run(task_status=...)`` and ``request_stop()``), so trees
nest: give a nested supervisor ``grace_s=math.inf`` so its own children get their grace.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import random
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from actors.actor import Actor
from actors.backoff import Backoff
from actors.errors import (
    ReturnedBeforeReady,
    StartFailed,
    StopOverrun,
    SupervisorEscalation,
    SupervisorNotRunning,
    UnknownChild,
)
from actors.events import (
    ChildInfo,
    ChildState,
    EventHook,
    EventKind,
    ExitReason,
    Failure,
    SupervisorEvent,
    SupervisorState,
)
from actors.spec import ChildSpec, Restart, Strategy

__all__ = ["ReturnedBeforeReady", "Supervisor", "SupervisorRef", "supervisor_spec"]

_log = logging.getLogger("actors.supervisor")

_LIVE = (ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPING)

# Why a stop happens; decides what a cancellation from outside cuts short.
_BY_REQUEST = "request"
_BY_ESCALATION = "escalation"
_BY_CANCELLATION = "cancellation"


def unwrap(exc: BaseException) -> BaseException:
    """Strip exception groups that hold a single exception (Trio's strict nurseries add them)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@attrs.define(eq=False)
class _Group:
    """One group restart in flight: its members are restarted together once stopped."""

    due_s: float


@attrs.define(eq=False)
class _Child:
    """The supervisor's bookkeeping for one child. Trio runs one task at a time, so each
    synchronous method below sees it consistent; awaits are where others may change it."""

    spec: ChildSpec
    dynamic: bool = False
    state: ChildState = ChildState.STOPPED
    generation: int = 0
    instance: Actor | None = None
    scope: trio.CancelScope | None = None
    ended: trio.Event | None = None
    settled: trio.Event | None = None
    ready: bool = False
    error: BaseException | None = None
    stop_requested: bool = False
    stop_done: trio.Event | None = None
    grace_scope: trio.CancelScope | None = None
    caller_starts: bool = False
    """``add_child`` is waiting for this start: a failure is the caller's, not a crash."""
    group: _Group | None = None
    restarts: int = 0
    streak: int = 0
    token: int = 0
    since_s: float | None = None
    last_failure: Failure | None = None

    @property
    def alive(self) -> bool:
        return self.ended is not None and not self.ended.is_set()

    def info(self, recursive: bool = False) -> ChildInfo:
        nested = self.instance if isinstance(self.instance, Supervisor) else None
        children: tuple[ChildInfo, ...] = ()
        if recursive and nested is not None and self.alive:
            children = tuple(nested.which_children(recursive=True))
        return ChildInfo(
            id=self.spec.id,
            state=self.state,
            restart=self.spec.restart,
            restarts=self.restarts,
            last_failure=self.last_failure,
            since_s=self.since_s if self.state is ChildState.RUNNING else None,
            is_supervisor=nested is not None,
            children=children,
        )


@attrs.frozen
class _Exited:
    child: _Child
    generation: int


@attrs.frozen
class _Wake:
    pass


@attrs.define(eq=False)
class _Pending:
    due_s: float
    token: int
    children: list[_Child]


class _ReadyStatus:
    """The ``task_status`` handed to a child: marks it ready (and wakes the supervisor)."""

    def __init__(self, supervisor: Supervisor, child: _Child, generation: int) -> None:
        self._supervisor = supervisor
        self._child = child
        self._generation = generation
        self._used = False

    def started(self, value: Any = None) -> None:
        if self._used:
            raise RuntimeError("task_status.started() called twice; call it once, when ready")
        self._used = True
        child = self._child
        if child.generation != self._generation:
            return
        child.ready = True
        child.caller_starts = False
        if child.state is ChildState.STARTING:
            child.state = ChildState.RUNNING
            child.since_s = trio.current_time()
            kind = EventKind.RESTARTED if child.generation > 1 else EventKind.STARTED
            self._supervisor._emit(kind, child)
        assert child.settled is not None
        child.settled.set()


def _to_specs(children: Iterable[ChildSpec]) -> tuple[ChildSpec, ...]:
    return tuple(children)


def _unique_ids(_inst: object, _attr: attrs.Attribute[tuple[ChildSpec, ...]],
                specs: tuple[ChildSpec, ...]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"children must be ChildSpec values, got {spec!r}")
        if spec.id in seen:
            raise ValueError(f"child id {spec.id!r} appears twice; ids must be unique")
        seen.add(spec.id)


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name}={value!r} must be > 0")


def _non_negative_int(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{attr.name}={value!r} must be an int >= 0 (0: any restart escalates)")


@attrs.define(eq=False)
class Supervisor:
    """Runs children (`ChildSpec`) and keeps them running; itself an actor, so trees nest.

    ``intensity``/``period_s``: more than ``intensity`` restarts within ``period_s`` seconds
    make the supervisor give up and raise `SupervisorEscalation`. ``backoff``: the pause before
    each restart of a child. ``on_event``: called with every `SupervisorEvent` (exceptions it
    raises are logged and ignored). ``rng``: the randomness for backoff jitter (each supervisor
    gets its own ``random.Random()`` by default); seed it in tests.
    """

    children: tuple[ChildSpec, ...] = attrs.field(
        default=(), converter=_to_specs, validator=_unique_ids
    )
    strategy: Strategy = attrs.field(
        default=Strategy.ONE_FOR_ONE, validator=attrs.validators.instance_of(Strategy)
    )
    intensity: int = attrs.field(default=3, validator=_non_negative_int)
    period_s: float = attrs.field(default=5.0, converter=float, validator=_positive)
    backoff: Backoff = attrs.field(factory=Backoff)
    name: str = "supervisor"
    on_event: EventHook | None = None
    rng: random.Random = attrs.field(factory=random.Random, repr=False)

    _records: list[_Child] = attrs.field(init=False, repr=False)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None, repr=False)
    _send: trio.MemorySendChannel[_Exited | _Wake] | None = attrs.field(
        init=False, default=None, repr=False)
    _pending: list[_Pending] = attrs.field(init=False, factory=list, repr=False)
    _restart_times: collections.deque[float] = attrs.field(
        init=False, factory=collections.deque, repr=False
    )
    _token: int = attrs.field(init=False, default=0, repr=False)
    _state: SupervisorState = attrs.field(init=False, default=SupervisorState.IDLE, repr=False)
    _state_changed: trio.Event = attrs.field(init=False, factory=trio.Event, repr=False)
    _closing: bool = attrs.field(init=False, default=False, repr=False)
    _stop_requested: bool = attrs.field(init=False, default=False, repr=False)
    _stop_cause: str | None = attrs.field(init=False, default=None, repr=False)
    _outer_cancelled: bool = attrs.field(init=False, default=False, repr=False)
    _cut_graces: bool = attrs.field(init=False, default=False, repr=False)
    _stopping: set[_Child] = attrs.field(init=False, factory=set, repr=False)
    _escalation: SupervisorEscalation | None = attrs.field(init=False, default=None, repr=False)
    _start_wait: trio.CancelScope | None = attrs.field(init=False, default=None, repr=False)
    _finished: trio.Event | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self._records = [_Child(spec) for spec in self.children]

    # ------------------------------------------------------------------ public API

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, report ready, then supervise until stopped.

        Returns after ``request_stop()`` once every child has stopped. A stop requested before
        every child was ready (or before ``run``) ends ``run`` normally too, after calling
        ``task_status.started()`` so that ``nursery.start(sup.run)`` returns: check
        ``sup.state`` or ``await sup.wait_ready()`` if you need to know which happened.
        Raises `SupervisorEscalation` when it gives up (children already stopped). Cancelled
        from outside, it stops its children in reverse order first (see the module docstring).
        """
        if self._state in (SupervisorState.STARTING, SupervisorState.RUNNING,
                           SupervisorState.STOPPING):
            raise RuntimeError(f"supervisor {self.name!r} is already running; run it once")
        self._records = [_Child(spec) for spec in self.children]
        self._pending.clear()
        self._restart_times.clear()
        self._stopping.clear()
        self._closing = False  # _stop_requested is kept: a stop may arrive before run does
        self._stop_cause = _BY_REQUEST if self._stop_requested else None
        self._outer_cancelled = False
        self._cut_graces = False
        self._escalation = None
        self._finished = trio.Event()
        self._set_state(SupervisorState.STOPPING if self._stop_requested
                        else SupervisorState.STARTING)
        send, receive = trio.open_memory_channel[_Exited | _Wake](math.inf)
        self._send = send
        watch = trio.CancelScope()
        reported = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._watch_outer_cancel, watch)
                try:
                    reported = await self._manage(receive, task_status)
                except trio.Cancelled:
                    self._begin_stopping(_BY_CANCELLATION)
                    raise
                finally:
                    with trio.CancelScope(shield=True):
                        await self._shutdown()
                    watch.cancel()
        finally:
            self._nursery = None
            self._send = None
            self._stop_requested = False
            send.close()
            receive.close()
            self._set_state(SupervisorState.STOPPED)
            self._finished.set()
        if self._escalation is not None:
            raise self._escalation from self._escalation.last_exception
        if not reported:
            task_status.started()

    def request_stop(self) -> None:
        """Ask the supervisor to stop its children (reverse order, bounded) and return."""
        self._stop_requested = True
        self._begin_stopping(_BY_REQUEST)
        self._interrupt()

    async def stop(self) -> None:
        """Request a stop and wait until ``run`` has ended (every child stopped).

        For the code that started the supervisor in its own nursery. If ``run`` escalates
        instead, the escalation goes to ``run``'s caller; ``stop`` still returns.
        """
        finished = self._finished
        self.request_stop()
        if finished is not None and self._state is not SupervisorState.STOPPED:
            await finished.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_ready(self) -> None:
        """Wait until every child has reported ready (the supervisor is ``RUNNING``).

        Works before ``run`` is called. Raises `SupervisorNotRunning` if the supervisor stops,
        or has stopped, before it got there.
        """
        while True:
            state = self._state
            if state is SupervisorState.RUNNING:
                await trio.lowlevel.checkpoint()
                return
            if state in (SupervisorState.STOPPING, SupervisorState.STOPPED):
                raise SupervisorNotRunning(
                    f"supervisor {self.name!r} is {state.value}; it will not become ready"
                )
            await self._state_changed.wait()

    async def add_child(self, spec: ChildSpec) -> None:
        """Add a child while running and start it now, after the children already there.

        Returns once it reported ready. If it fails before that (raises, or returns without
        ``task_status.started()``), raises `StartFailed` and forgets the spec, as OTP's
        ``start_child`` does: no restart, no restart intensity consumed. Do not call it from a
        child of this same supervisor before that child reported ready.
        """
        self._require_accepting("add_child", spec.id)
        if any(c.spec.id == spec.id for c in self._records):
            raise ValueError(
                f"supervisor {self.name!r} already has a child {spec.id!r}; remove it first "
                "or pick another id"
            )
        child = _Child(spec, dynamic=True, caller_starts=True)
        self._records.append(child)
        generation = self._spawn(child)
        settled = child.settled
        assert settled is not None
        try:
            await settled.wait()
        except BaseException:
            # The caller gave up waiting: the supervisor owns the outcome from now on.
            if child.caller_starts:
                child.caller_starts = False
                if child.ended is not None and child.ended.is_set() and not child.ready:
                    self._notify(_Exited(child, generation))
            raise
        if child.ready or child.generation != generation:
            return
        child.caller_starts = False
        if child.stop_requested:
            if self._closing:
                raise SupervisorNotRunning(
                    f"supervisor {self.name!r} stopped while {spec.id!r} was starting"
                )
            return  # removed, or taken into a group restart: the supervisor decided
        error = child.error or ReturnedBeforeReady(
            f"child {spec.id!r} returned without calling task_status.started()")
        if child in self._records:
            self._records.remove(child)
        self._record_exit(child, ExitReason.FAILED, error)
        raise StartFailed(supervisor=self.name, child_id=spec.id, exception=error) from error

    async def remove_child(self, child_id: str) -> None:
        """Stop a child (request, grace, cancel) and forget it; it is never restarted.

        Returns once the child has ended. The stop runs in a task of its own: the supervisor
        keeps making its other decisions (restarts of siblings) meanwhile.
        """
        self._require_accepting("remove_child", child_id)
        child = self._find(child_id)
        self._records.remove(child)
        await self._begin_stop(child).wait()

    def which_children(self, *, recursive: bool = False) -> list[ChildInfo]:
        """Every child in start order, with its state, restart count and last failure.

        ``recursive=True`` also fills ``ChildInfo.children`` for running nested supervisors:
        the whole tree in one value.
        """
        return [c.info(recursive) for c in self._records]

    def child_info(self, child_id: str) -> ChildInfo:
        """One child's snapshot; raises `UnknownChild` if there is none with that id."""
        return self._find(child_id).info()

    def nested(self, *path: str) -> SupervisorRef:
        """A handle to the nested supervisor at ``path`` (child ids, top down).

        The handle finds the supervisor's current instance on every use, so it stays valid
        across restarts of the nested supervisor; nothing keeps a dead instance alive.
        """
        if not path:
            raise ValueError("nested() needs the child id of a nested supervisor")
        return SupervisorRef(self, tuple(path))

    @property
    def state(self) -> SupervisorState:
        """IDLE, STARTING, RUNNING, STOPPING or STOPPED (see `SupervisorState`)."""
        return self._state

    @property
    def running(self) -> bool:
        """Starting or running, and not stopping: ``add_child`` is accepted."""
        return self._state in (SupervisorState.STARTING, SupervisorState.RUNNING)

    @property
    def stopping(self) -> bool:
        """A stop was requested (or it escalates, or was cancelled) and ``run`` has not ended."""
        return self._state is SupervisorState.STOPPING

    # ------------------------------------------------------------------ the manager

    async def _manage(self, receive: trio.MemoryReceiveChannel[_Exited | _Wake],
                      task_status: trio.TaskStatus[Any]) -> bool:
        """Make every decision, one at a time; returns whether it reported ready."""
        self._schedule(list(self._records), trio.current_time())
        reported = False
        while True:
            await self._run_due_restarts()
            if self._escalation is not None or self._stop_requested:
                return reported
            if not reported and all(
                c.state in (ChildState.RUNNING, ChildState.STOPPED) for c in self._records
            ):
                self._set_state(SupervisorState.RUNNING)
                task_status.started()
                reported = True
            next_due = min((p.due_s for p in self._pending), default=math.inf)
            message: _Exited | _Wake | None = None
            with trio.move_on_at(next_due):
                message = await receive.receive()
            if isinstance(message, _Exited):
                self._on_exited(message)

    def _on_exited(self, message: _Exited) -> None:
        child = message.child
        if (child.generation != message.generation or child not in self._records
                or child.caller_starts
                or child.state not in (ChildState.STARTING, ChildState.RUNNING)):
            return  # already handled (a stop, a group restart or add_child got there first)
        self._handle_end(child, pending=[])

    async def _run_due_restarts(self) -> None:
        while not (self._closing or self._escalation or self._stop_requested):
            now = trio.current_time()
            due = [p for p in self._pending if p.due_s <= now]
            if not due:
                return
            first = min(due, key=lambda p: p.due_s)
            self._pending.remove(first)
            await self._start_in_order(first)

    def _waiting(self, child: _Child, token: int) -> bool:
        return (child.token == token and child.state is ChildState.BACKOFF
                and child in self._records)

    async def _start_in_order(self, pending: _Pending) -> None:
        """Start a group one child at a time, each after the previous reported ready."""
        group = [c for c in pending.children if self._waiting(c, pending.token)]
        for index, child in enumerate(group):
            if self._closing or self._escalation is not None or self._stop_requested:
                return
            if not self._waiting(child, pending.token):
                continue  # removed or rescheduled meanwhile
            generation = self._spawn(child)
            assert child.settled is not None
            with trio.CancelScope() as self._start_wait:
                await child.settled.wait()
            self._start_wait = None
            if self._stop_requested or self._escalation is not None:
                return
            if child.generation != generation or child not in self._records or child.ready:
                continue
            if child.state is ChildState.STARTING:  # ended before reporting ready
                rest = [c for c in group[index + 1:] if self._waiting(c, pending.token)]
                self._handle_end(child, pending=rest)
                return

    def _spawn(self, child: _Child) -> int:
        """Build a fresh instance and start its task; the previous instance has ended."""
        assert self._nursery is not None
        assert not child.alive, "a child's old instance must end before its new one starts"
        child.generation += 1
        if child.generation > 1:
            child.restarts += 1
        child.state = ChildState.STARTING
        child.ready = False
        child.error = None
        child.stop_requested = False
        child.stop_done = None
        child.group = None
        child.since_s = None
        child.scope = trio.CancelScope(shield=True)
        child.ended = trio.Event()
        child.settled = trio.Event()
        try:
            child.instance = child.spec.factory()
        except Exception as exc:
            child.instance = None
            child.error = exc
            child.ended.set()
            child.settled.set()
            self._notify(_Exited(child, child.generation))
            return child.generation
        self._nursery.start_soon(self._run_child, child, child.generation, child.instance,
                                 name=f"{self.name}/{child.spec.id}")
        return child.generation

    async def _run_child(self, child: _Child, generation: int, instance: Actor) -> None:
        """The child's task: runs one instance, never lets its exception reach the nursery."""
        assert child.scope is not None
        assert child.ended is not None
        assert child.settled is not None
        status = _ReadyStatus(self, child, generation)
        try:
            with child.scope:
                await instance.run(task_status=status)
        except Exception as exc:
            child.error = unwrap(exc)
        finally:
            child.ended.set()
            child.settled.set()
            if not child.stop_requested:
                self._notify(_Exited(child, generation))

    def _notify(self, message: _Exited | _Wake) -> None:
        if self._send is not None:
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                self._send.send_nowait(message)

    def _interrupt(self) -> None:
        """Wake the manager now, even while it waits for a child's start."""
        if self._start_wait is not None:
            self._start_wait.cancel()
        self._notify(_Wake())

    # ------------------------------------------------------------------ decisions

    def _handle_end(self, child: _Child, pending: list[_Child]) -> None:
        """A child's instance ended on its own: restart what the strategy says, or give up."""
        now = trio.current_time()
        ran_for = None if child.since_s is None or not child.ready else now - child.since_s
        restart = child.spec.restart
        error = child.error
        if error is None and not child.ready and restart is Restart.PERMANENT:
            error = ReturnedBeforeReady(
                f"child {child.spec.id!r} returned without calling task_status.started(); a "
                "PERMANENT actor must report ready before its work ends"
            )
        self._record_exit(child, ExitReason.FAILED if error else ExitReason.NORMAL, error)

        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and error is None):
            if restart is Restart.TEMPORARY:
                self._records.remove(child)
            if pending:
                self._schedule(pending, now)
            return

        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] < now - self.period_s:
            self._restart_times.popleft()
        if len(self._restart_times) > self.intensity:
            self._escalate(child, error)
            return

        if ran_for is not None and ran_for >= self.backoff.reset_after_s:
            child.streak = 0
        delay = self.backoff.delay(child.streak, self.rng)
        child.streak += 1

        index = self._records.index(child)
        if self.strategy is Strategy.ONE_FOR_ONE:
            affected = [child]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            affected = list(self._records)
        else:
            affected = self._records[index:]
        group = _Group(now + delay)
        restart_ids = {id(c) for c in pending} | {id(child)}
        to_stop: list[_Child] = []
        temporaries: list[_Child] = []
        for sibling in reversed(affected):
            if sibling is child:
                continue
            in_flight = sibling.group is not None or id(sibling) in restart_ids
            if not (sibling.state in _LIVE or sibling.state is ChildState.BACKOFF or in_flight):
                continue  # finished (transient) siblings stay finished
            if sibling.spec.restart is Restart.TEMPORARY and sibling.generation > 0:
                temporaries.append(sibling)  # a temporary child is never restarted
            else:
                restart_ids.add(id(sibling))
            to_stop.append(sibling)
            if sibling.alive and sibling.stop_done is None:
                sibling.stop_requested = True  # its turn comes; its end is no crash
                sibling.state = ChildState.STOPPING
            elif sibling.state is ChildState.BACKOFF:
                sibling.token = 0  # an older pending restart must not start it
        members = [c for c in self._records if id(c) in restart_ids]
        for member in members:
            member.group = group
        if not to_stop:  # nothing to stop first (ONE_FOR_ONE, or the group is down already)
            for member in members:
                member.group = None
            self._schedule(members, group.due_s)
            return
        child.state = ChildState.BACKOFF
        child.token = 0
        assert self._nursery is not None
        self._nursery.start_soon(self._restart_group, group, to_stop, temporaries, members,
                                 name=f"{self.name}/restart:{child.spec.id}")

    async def _restart_group(self, group: _Group, to_stop: list[_Child],
                             temporaries: list[_Child], members: list[_Child]) -> None:
        """Stop the group last-first (in the background), then schedule its ordered start."""
        for sibling in to_stop:
            await self._begin_stop(sibling).wait()
        for temporary in temporaries:
            if temporary in self._records:
                self._records.remove(temporary)
        if self._closing or self._escalation is not None:
            return
        mine = [c for c in self._records if c in members and c.group is group]
        for member in mine:
            member.group = None
        if mine:
            self._schedule(mine, max(group.due_s, trio.current_time()))
            self._notify(_Wake())

    def _escalate(self, child: _Child, error: BaseException | None) -> None:
        if self._escalation is not None:
            return
        self._escalation = SupervisorEscalation(
            supervisor=self.name, child_id=child.spec.id, last_exception=error,
            intensity=self.intensity, period_s=self.period_s,
        )
        _log.error("supervisor_escalated supervisor=%s child=%s error=%r",
                   self.name, child.spec.id, error)
        self._emit(EventKind.ESCALATED, child, exception=error)
        self._begin_stopping(_BY_ESCALATION)
        self._interrupt()

    def _schedule(self, children: list[_Child], due_s: float) -> None:
        self._token += 1
        for child in children:
            child.state = ChildState.BACKOFF
            child.token = self._token
        self._pending.append(_Pending(due_s, self._token, list(children)))

    # ------------------------------------------------------------------ stopping

    def _begin_stop(self, child: _Child) -> trio.Event:
        """Start stopping a child in a task of its own; the event is set once it has ended.

        Idempotent: a child already being stopped returns the same event.
        """
        if child.stop_done is not None:
            return child.stop_done
        done = trio.Event()
        if not child.alive:
            if child.state in _LIVE:  # ended on its own; its exit message is now moot
                child.stop_requested = True
                self._record_exit(child, ExitReason.FAILED if child.error else ExitReason.NORMAL,
                                  child.error)
            elif child.state is ChildState.BACKOFF:
                child.state = ChildState.STOPPED
            done.set()
            return done
        assert self._nursery is not None
        child.stop_requested = True
        child.state = ChildState.STOPPING
        child.stop_done = done
        self._stopping.add(child)
        self._nursery.start_soon(self._stop_child, child, done,
                                 name=f"{self.name}/stop:{child.spec.id}")
        return done

    def _grace_is_cut(self, child: _Child) -> bool:
        return self._cut_graces or (self._outer_cancelled and math.isinf(child.spec.grace_s))

    async def _stop_child(self, child: _Child, done: trio.Event) -> None:
        """Request, grace, cancel, kill timeout; record how it ended. Shielded: a stop that
        began always finishes (an outer cancellation only cuts the grace)."""
        assert child.ended is not None
        assert child.scope is not None
        with trio.CancelScope(shield=True):
            grace = child.spec.grace_s
            request = getattr(child.instance, "request_stop", None)
            if grace > 0 and callable(request) and not self._grace_is_cut(child):
                try:
                    request()
                except Exception:
                    _log.exception("request_stop of child %r raised; cancelling it",
                                   child.spec.id)
                else:
                    with trio.CancelScope(deadline=trio.current_time() + grace) as cut:
                        child.grace_scope = cut
                        await child.ended.wait()
                    child.grace_scope = None
            child.scope.cancel()
            kill_timeout = (math.inf if isinstance(child.instance, Supervisor)
                            else child.spec.kill_timeout_s)
            with trio.move_on_after(kill_timeout):
                await child.ended.wait()
            if not child.ended.is_set():
                self._report_overrun(child)
                await child.ended.wait()
            error = child.error
            if error is not None:
                _log.error("child_shutdown_error supervisor=%s child=%s error=%r",
                           self.name, child.spec.id, error)
                self._record_exit(child, ExitReason.SHUTDOWN_ERROR, error, log=False)
            else:
                self._record_exit(child, ExitReason.STOPPED, None)
            self._stopping.discard(child)
            done.set()

    def _report_overrun(self, child: _Child) -> None:
        overrun = StopOverrun(supervisor=self.name, child_id=child.spec.id,
                              kill_timeout_s=child.spec.kill_timeout_s)
        child.last_failure = Failure(repr(overrun), trio.current_time(), overrun)
        _log.error("child_stop_overrun supervisor=%s child=%s kill_timeout_s=%g",
                   self.name, child.spec.id, child.spec.kill_timeout_s)
        self._emit(EventKind.STOP_OVERRUN, child, exception=overrun)
        self._escalate(child, overrun)

    def _begin_stopping(self, cause: str) -> None:
        if self._stop_cause is None:
            self._stop_cause = cause
        if self._state in (SupervisorState.STARTING, SupervisorState.RUNNING):
            self._set_state(SupervisorState.STOPPING)

    async def _watch_outer_cancel(self, watch: trio.CancelScope) -> None:
        """Notice a cancellation from outside, which shielded stops cannot see, and cut graces:
        infinite ones always, every one if a stop was already under way."""
        with watch:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                if not watch.cancel_called:
                    self._outer_cancelled = True
                    if self._stop_cause in (_BY_REQUEST, _BY_ESCALATION):
                        self._cut_graces = True
                    for child in list(self._stopping):
                        if child.grace_scope is not None and self._grace_is_cut(child):
                            child.grace_scope.cancel()
                raise

    async def _shutdown(self) -> None:
        """Stop every child, last first (dynamic ones first, together). Runs shielded."""
        self._closing = True
        self._pending.clear()
        if self._nursery is None:
            return
        dynamic = [c for c in self._records if c.dynamic]
        for done in [self._begin_stop(c) for c in reversed(dynamic)]:
            await done.wait()
        for child in reversed([c for c in self._records if not c.dynamic]):
            await self._begin_stop(child).wait()
        for child in list(self._records):
            if child.spec.restart is Restart.TEMPORARY:
                self._records.remove(child)
        while self._stopping:  # removed children still taking their grace
            stop_done = next(iter(self._stopping)).stop_done
            assert stop_done is not None
            await stop_done.wait()

    # ------------------------------------------------------------------ helpers

    def _set_state(self, state: SupervisorState) -> None:
        self._state = state
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()

    def _record_exit(self, child: _Child, reason: ExitReason,
                     error: BaseException | None, log: bool = True) -> None:
        child.state = ChildState.STOPPED
        child.since_s = None
        if error is not None:
            child.last_failure = Failure(repr(error), trio.current_time(), error)
            if log:
                _log.warning("child_failed supervisor=%s child=%s error=%r",
                             self.name, child.spec.id, error)
        self._emit(EventKind.EXITED, child, reason=reason, exception=error)

    def _emit(self, kind: EventKind, child: _Child | None, *, reason: ExitReason | None = None,
              exception: BaseException | None = None) -> None:
        if self.on_event is None:
            return
        event = SupervisorEvent(
            kind=kind,
            supervisor=self.name,
            child_id=child.spec.id if child else None,
            at_s=trio.current_time(),
            restarts=child.restarts if child else 0,
            reason=reason,
            exception_repr=repr(exception) if exception is not None else None,
            exception=exception,
        )
        try:
            self.on_event(event)
        except Exception:
            _log.exception("on_event hook of supervisor %r raised on %s; ignored",
                           self.name, kind.value)

    def _find(self, child_id: str) -> _Child:
        for child in self._records:
            if child.spec.id == child_id:
                return child
        known = ", ".join(repr(c.spec.id) for c in self._records) or "none"
        raise UnknownChild(f"supervisor {self.name!r} has no child {child_id!r} (has: {known})")

    def _require_accepting(self, what: str, child_id: str) -> None:
        if self._state is SupervisorState.STOPPING or self._closing:
            raise SupervisorNotRunning(
                f"supervisor {self.name!r} is stopping; {what}({child_id!r}) is refused"
            )
        if not self.running or self._nursery is None:
            raise SupervisorNotRunning(
                f"{what} needs supervisor {self.name!r} running; start it first "
                "(await nursery.start(supervisor.run))"
            )


@attrs.frozen
class SupervisorRef:
    """A handle to a nested supervisor, found by path from a root on every use.

    ``Supervisor.nested("site")`` builds one. Each call resolves the path again, so the handle
    follows restarts of the nested supervisor and never answers for a dead instance; while the
    nested supervisor is not running, calls raise `SupervisorNotRunning`.
    """

    root: Supervisor
    path: tuple[str, ...]

    def resolve(self) -> Supervisor:
        """The nested supervisor's current instance."""
        sup = self.root
        for depth, child_id in enumerate(self.path):
            child = sup._find(child_id)
            where = "/".join(self.path[:depth + 1])
            if child.instance is None or not child.alive:
                raise SupervisorNotRunning(f"{where!r} is not running ({child.state.value})")
            if not isinstance(child.instance, Supervisor):
                raise TypeError(f"{where!r} is not a supervisor")
            sup = child.instance
        return sup

    @property
    def state(self) -> SupervisorState:
        """The nested supervisor's state; STOPPED while it is not running."""
        try:
            return self.resolve().state
        except SupervisorNotRunning:
            return SupervisorState.STOPPED

    def which_children(self, *, recursive: bool = False) -> list[ChildInfo]:
        """`Supervisor.which_children` of the current instance."""
        return self.resolve().which_children(recursive=recursive)

    def child_info(self, child_id: str) -> ChildInfo:
        """`Supervisor.child_info` of the current instance."""
        return self.resolve().child_info(child_id)

    async def add_child(self, spec: ChildSpec) -> None:
        """`Supervisor.add_child` on the current instance (lost if that instance restarts:
        dynamic children belong to an instance, as in OTP)."""
        await self.resolve().add_child(spec)

    async def remove_child(self, child_id: str) -> None:
        """`Supervisor.remove_child` on the current instance."""
        await self.resolve().remove_child(child_id)

    async def wait_ready(self) -> None:
        """`Supervisor.wait_ready` of the current instance."""
        await self.resolve().wait_ready()


def supervisor_spec(id: str, children: Iterable[ChildSpec], **options: Any) -> ChildSpec:
    """A ChildSpec for a nested supervisor, with infinite grace so its children get theirs.

    ``options`` go to `Supervisor` (strategy, intensity, period_s, backoff, on_event, rng;
    ``name`` defaults to ``id``). Also accepts ``restart`` (default PERMANENT).
    """
    restart = options.pop("restart", Restart.PERMANENT)
    options.setdefault("name", id)
    specs = tuple(children)

    def build() -> Supervisor:
        return Supervisor(children=specs, **options)

    return ChildSpec(id=id, factory=build, restart=restart, grace_s=math.inf)
