"""The `Supervisor`: starts children in order, restarts them by strategy, stops them in reverse.

Erlang/OTP's supervisor semantics, written for Trio. Invariants it keeps:

* **Ordered start.** A child is started only after the previous one reported ready through
  ``task_status.started()``; the supervisor itself reports ready once every child has.
  (A child added with ``add_child`` starts at once, after the children already there.)
* **Reverse stop with grace.** Children are stopped one at a time, last started first: each is
  asked (``request_stop()``), given its ``grace_s`` to return, then cancelled, and the next one
  is stopped only after it has ended. This holds for shutdown, for escalation, for the siblings
  of a ONE_FOR_ALL / REST_FOR_ONE restart, and for a cancellation from outside (the cleanup is
  shielded, so an outer deadline is overrun by the children's grace, by design).
* **No overlap.** The old instance of a child has always ended before its new one is built.
* **Isolation.** Each child runs in its own task under its own shielded cancel scope: a child's
  crash or cancellation never cancels a sibling; only the supervisor decides who stops.
* **Bounded restarts.** More than ``intensity`` restarts within ``period_s`` (counted per
  supervisor, as OTP does) make the supervisor stop all children in reverse order and raise one
  `SupervisorEscalation` to its parent, never an ExceptionGroup.
* **Backoff.** Restarts of a child wait per `Backoff` (jittered, exponential, reset after a quiet
  period) so a crash loop cannot spin; the wait happens with the old instance already gone.
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
from collections.abc import AsyncIterator, Iterable
from typing import Any

import attrs
import trio

from actors.actor import Actor
from actors.backoff import Backoff
from actors.errors import SupervisorEscalation, SupervisorNotRunning, UnknownChild
from actors.events import (
    ChildInfo,
    ChildState,
    EventHook,
    EventKind,
    ExitReason,
    Failure,
    SupervisorEvent,
)
from actors.spec import ChildSpec, Restart, Strategy

_log = logging.getLogger("actors.supervisor")

_LIVE = (ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPING)


def unwrap(exc: BaseException) -> BaseException:
    """Strip exception groups that hold a single exception (Trio's strict nurseries add them)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ReturnedBeforeReady(RuntimeError):
    """An actor's ``run`` returned without calling ``task_status.started()``."""


@attrs.define(eq=False)
class _Child:
    """The supervisor's bookkeeping for one child; mutated only under the supervisor's lock
    (or, for the ready transition, by the child's own `_ReadyStatus`)."""

    spec: ChildSpec
    state: ChildState = ChildState.STOPPED
    generation: int = 0
    instance: Actor | None = None
    scope: trio.CancelScope | None = None
    ended: trio.Event | None = None
    settled: trio.Event | None = None
    ready: bool = False
    error: BaseException | None = None
    stop_requested: bool = False
    restarts: int = 0
    streak: int = 0
    token: int = 0
    since_s: float | None = None
    last_failure: Failure | None = None

    @property
    def alive(self) -> bool:
        return self.ended is not None and not self.ended.is_set()

    def info(self) -> ChildInfo:
        return ChildInfo(
            id=self.spec.id,
            state=self.state,
            restart=self.spec.restart,
            restarts=self.restarts,
            last_failure=self.last_failure,
            since_s=self.since_s if self.state is ChildState.RUNNING else None,
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
        if child.state is ChildState.STARTING:
            child.state = ChildState.RUNNING
            child.since_s = trio.current_time()
            kind = EventKind.RESTARTED if child.generation > 1 else EventKind.STARTED
            self._supervisor._emit(kind, child)
        assert child.settled is not None
        child.settled.set()


def _unique_ids(_inst: object, _attr: attrs.Attribute, specs: tuple[ChildSpec, ...]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"children must be ChildSpec values, got {spec!r}")
        if spec.id in seen:
            raise ValueError(f"child id {spec.id!r} appears twice; ids must be unique")
        seen.add(spec.id)


def _positive(_inst: object, attr: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name}={value!r} must be > 0")


def _non_negative_int(_inst: object, attr: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{attr.name}={value!r} must be an int >= 0 (0: any restart escalates)")


@attrs.define(eq=False)
class Supervisor:
    """Runs children (`ChildSpec`) and keeps them running; itself an actor, so trees nest.

    ``intensity``/``period_s``: more than ``intensity`` restarts within ``period_s`` seconds
    make the supervisor give up and raise `SupervisorEscalation`. ``backoff``: the pause before
    each restart of a child. ``on_event``: called with every `SupervisorEvent` (exceptions it
    raises are logged and ignored). ``rng``: the randomness for backoff jitter; seed it in tests.
    """

    children: tuple[ChildSpec, ...] = attrs.field(
        default=(), converter=tuple, validator=_unique_ids
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
    _lock: trio.Lock | None = attrs.field(init=False, default=None, repr=False)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None, repr=False)
    _send: trio.MemorySendChannel | None = attrs.field(init=False, default=None, repr=False)
    _pending: list[_Pending] = attrs.field(init=False, factory=list, repr=False)
    _restart_times: collections.deque[float] = attrs.field(
        init=False, factory=collections.deque, repr=False
    )
    _token: int = attrs.field(init=False, default=0, repr=False)
    _running: bool = attrs.field(init=False, default=False, repr=False)
    _closing: bool = attrs.field(init=False, default=False, repr=False)
    _stop_requested: bool = attrs.field(init=False, default=False, repr=False)
    _escalation: SupervisorEscalation | None = attrs.field(init=False, default=None, repr=False)
    _start_wait: trio.CancelScope | None = attrs.field(init=False, default=None, repr=False)
    _finished: trio.Event | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self._records = [_Child(spec) for spec in self.children]

    # ------------------------------------------------------------------ public API

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, report ready, then supervise until stopped.

        Returns after ``request_stop()`` once every child has stopped. Raises
        `SupervisorEscalation` when restart intensity is exceeded (children already stopped).
        Cancelled from outside, it stops its children in reverse order with their grace first.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running; run it once")
        self._running = True
        self._records = [_Child(spec) for spec in self.children]
        self._pending.clear()
        self._restart_times.clear()
        self._closing = False  # _stop_requested is kept: a stop may arrive before run does
        self._escalation = None
        self._lock = trio.Lock()
        self._finished = trio.Event()
        send, receive = trio.open_memory_channel[Any](math.inf)
        self._send = send
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._manage(receive, task_status)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._shutdown()
        finally:
            self._nursery = None
            self._send = None
            self._running = False
            self._stop_requested = False
            send.close()
            receive.close()
            self._finished.set()
        if self._escalation is not None:
            raise self._escalation from self._escalation.last_exception

    def request_stop(self) -> None:
        """Ask the supervisor to stop its children (reverse order, with grace) and return."""
        self._stop_requested = True
        if self._start_wait is not None:
            self._start_wait.cancel()
        if self._send is not None:
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                self._send.send_nowait(_Wake())

    async def stop(self) -> None:
        """Request a stop and wait until ``run`` has ended (every child stopped).

        For the code that started the supervisor in its own nursery. If ``run`` escalates
        instead, the escalation goes to ``run``'s caller; ``stop`` still returns.
        """
        finished = self._finished
        self.request_stop()
        if finished is not None and self._running:
            await finished.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def add_child(self, spec: ChildSpec) -> None:
        """Add a child while running and start it now, after the children already there.

        Returns once it reported ready, or once its first start failed (the supervisor then
        handles that failure like any crash: restart by type, backoff, intensity). Do not call
        it from a child of this same supervisor before that child reported ready.
        """
        lock = self._require_running("add_child")
        async with lock:
            if self._closing or self._stop_requested:
                raise SupervisorNotRunning(
                    f"supervisor {self.name!r} is stopping; add {spec.id!r} to its successor"
                )
            if any(c.spec.id == spec.id for c in self._records):
                raise ValueError(
                    f"supervisor {self.name!r} already has a child {spec.id!r}; remove it first "
                    "or pick another id"
                )
            child = _Child(spec)
            self._records.append(child)
            self._spawn(child)
            settled = child.settled
        assert settled is not None
        await settled.wait()

    async def remove_child(self, child_id: str) -> None:
        """Stop a child (request, grace, then cancel) and forget it; it is never restarted."""
        lock = self._require_running("remove_child")
        async with lock:
            child = self._find(child_id)
            self._records.remove(child)
            await self._stop(child)

    def which_children(self) -> list[ChildInfo]:
        """Every child in start order, with its state, restart count and last failure."""
        return [c.info() for c in self._records]

    def child_info(self, child_id: str) -> ChildInfo:
        """One child's snapshot; raises `UnknownChild` if there is none with that id."""
        return self._find(child_id).info()

    @property
    def running(self) -> bool:
        return self._running

    # ------------------------------------------------------------------ the manager

    async def _manage(self, receive: trio.MemoryReceiveChannel[Any],
                      task_status: trio.TaskStatus[Any]) -> None:
        assert self._lock is not None
        self._schedule(list(self._records), trio.current_time())
        reported = False
        while True:
            async with self._lock:
                await self._run_due_restarts()
            if self._escalation is not None or self._stop_requested:
                return
            if not reported and all(
                c.state in (ChildState.RUNNING, ChildState.STOPPED) for c in self._records
            ):
                task_status.started()
                reported = True
            next_due = min((p.due_s for p in self._pending), default=math.inf)
            message = None
            with trio.move_on_at(next_due):
                message = await receive.receive()
            if isinstance(message, _Exited):
                async with self._lock:
                    await self._on_exited(message)
            if self._escalation is not None or self._stop_requested:
                return

    async def _on_exited(self, message: _Exited) -> None:
        child = message.child
        if (child.generation != message.generation or child not in self._records
                or child.state not in (ChildState.STARTING, ChildState.RUNNING)):
            return  # already handled (a sibling restart or a stop got there first)
        await self._handle_end(child, pending=[])

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
                continue  # removed or rescheduled while the lock was released
            generation = self._spawn(child)
            assert child.settled is not None
            async with self._unlocked():
                with trio.CancelScope() as self._start_wait:
                    await child.settled.wait()
                self._start_wait = None
            if self._stop_requested:
                return
            if child.generation != generation or child not in self._records or child.ready:
                continue
            if child.state is ChildState.STARTING:  # ended before reporting ready
                rest = [c for c in group[index + 1:] if self._waiting(c, pending.token)]
                await self._handle_end(child, pending=rest)
                return

    @contextlib.asynccontextmanager
    async def _unlocked(self) -> AsyncIterator[None]:
        """Let add/remove_child in while the manager waits on a child's start."""
        assert self._lock is not None
        self._lock.release()
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await self._lock.acquire()

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

    def _notify(self, message: Any) -> None:
        if self._send is not None:
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                self._send.send_nowait(message)

    # ------------------------------------------------------------------ decisions

    async def _handle_end(self, child: _Child, pending: list[_Child]) -> None:
        """A child's instance ended on its own: restart what the strategy says, or give up."""
        now = trio.current_time()
        ran_for = None if child.since_s is None or not child.ready else now - child.since_s
        error = child.error
        if error is None and not child.ready:
            error = ReturnedBeforeReady(
                f"child {child.spec.id!r} returned without calling task_status.started(); an "
                "actor must report ready before its work ends"
            )
        self._record_exit(child, ExitReason.FAILED if error else ExitReason.NORMAL, error)

        restart = child.spec.restart
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
            self._escalation = SupervisorEscalation(
                supervisor=self.name, child_id=child.spec.id, last_exception=error,
                intensity=self.intensity, period_s=self.period_s,
            )
            _log.error("supervisor_escalated supervisor=%s child=%s error=%r",
                       self.name, child.spec.id, error)
            self._emit(EventKind.ESCALATED, child, exception=error)
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
        to_restart: list[_Child] = []
        waiting = {id(c) for c in pending}
        for sibling in reversed(affected):
            if sibling is child:
                continue
            was_live = sibling.state in _LIVE or sibling.state is ChildState.BACKOFF
            await self._stop(sibling)
            if not was_live and id(sibling) not in waiting:
                continue  # finished (transient) siblings stay finished
            if sibling.spec.restart is Restart.TEMPORARY and sibling.generation > 0:
                self._records.remove(sibling)  # a temporary child is never restarted
            else:
                waiting.add(id(sibling))
        waiting.add(id(child))
        to_restart = [c for c in self._records if id(c) in waiting]
        self._schedule(to_restart, now + delay)

    def _schedule(self, children: list[_Child], due_s: float) -> None:
        self._token += 1
        for child in children:
            child.state = ChildState.BACKOFF
            child.token = self._token
        self._pending.append(_Pending(due_s, self._token, list(children)))

    async def _stop(self, child: _Child) -> None:
        """Request, wait the grace, cancel; returns once the instance has ended."""
        if not child.alive:
            if child.state in _LIVE:  # ended on its own; its exit message is now moot
                child.stop_requested = True
                self._record_exit(child, ExitReason.FAILED if child.error else ExitReason.NORMAL,
                                  child.error)
            elif child.state is ChildState.BACKOFF:
                child.state = ChildState.STOPPED
            return
        assert child.ended is not None
        assert child.scope is not None
        already_asked = child.stop_requested
        child.stop_requested = True
        child.state = ChildState.STOPPING
        grace = child.spec.grace_s
        request = getattr(child.instance, "request_stop", None)
        if grace > 0 and callable(request):
            asked = True
            if not already_asked:
                try:
                    request()
                except Exception:
                    asked = False
                    _log.exception("request_stop of child %r raised; cancelling it",
                                   child.spec.id)
            if asked:
                with trio.move_on_after(grace):
                    await child.ended.wait()
        child.scope.cancel()
        await child.ended.wait()
        self._record_exit(child, ExitReason.STOPPED, None)

    async def _shutdown(self) -> None:
        """Stop every child, last first. Runs shielded when the supervisor ends for any reason."""
        self._closing = True
        if self._lock is None:
            return
        async with self._lock:
            self._pending.clear()
            for child in reversed(list(self._records)):
                await self._stop(child)
                if child.spec.restart is Restart.TEMPORARY and child in self._records:
                    self._records.remove(child)

    # ------------------------------------------------------------------ helpers

    def _record_exit(self, child: _Child, reason: ExitReason,
                     error: BaseException | None) -> None:
        child.state = ChildState.STOPPED
        child.since_s = None
        if error is not None:
            child.last_failure = Failure(repr(error), trio.current_time(), error)
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

    def _require_running(self, what: str) -> trio.Lock:
        if not self._running or self._lock is None or self._nursery is None:
            raise SupervisorNotRunning(
                f"{what} needs supervisor {self.name!r} running; start it first "
                "(await nursery.start(supervisor.run))"
            )
        return self._lock


def supervisor_spec(id: str, children: Iterable[ChildSpec], **options: Any) -> ChildSpec:
    """A ChildSpec for a nested supervisor, with infinite grace so its children get theirs.

    ``options`` go to `Supervisor` (strategy, intensity, period_s, backoff, on_event, rng;
    ``name`` defaults to ``id``). Also accepts ``restart`` (default PERMANENT).
    """
    restart = options.pop("restart", Restart.PERMANENT)
    options.setdefault("name", id)
    specs = tuple(children)
    return ChildSpec(id=id, factory=lambda: Supervisor(children=specs, **options),
                     restart=restart, grace_s=math.inf)
