"""The device link: one device (unit id) on its endpoint's connection — polls, writes, unit state.

Job: poll one unit's snapshots at the fast and slow rates through the endpoint's
`bessai.device.ModbusConnection`, hand each snapshot on without ever blocking, and serve writes
from the safety guard, the watchdog and dispatch ahead of the next read.

Invariants:

* **The connection is not the link's.** The endpoint's connection (shared by every unit id
  behind one SDongle, SmartLogger or RS485 bus) owns connecting, the post-connect delay, the
  reconnect backoff and the one connection state (DEVICE_LINK_DOWN/UP). The gateway runs it as
  its own actor; a device link built on its own (``own_connection``, tests, tools) runs its
  private connection's owner inside itself. Every request goes through the connection's
  scheduler one at a time, so Huawei's one-client rule holds.
* **Writes go first, by priority** (`Priority`: SAFETY < HEARTBEAT < DISPATCH, lower first, all
  ahead of reads). With ``write_path="direct"`` (the default) a write waits only for the
  request in flight: the driver's priority lock hands the connection to the most urgent waiter
  between two requests, even in the middle of a poll. With ``"queue"`` (the benchmark's
  baseline), writes wait in this link's priority queue, drained before every poll. `write()`
  returns once the device acknowledged, or raises: `LinkDown` when there is no connection (so
  the caller can decide to wait with `wait_up()` or give up), the driver's own error when the
  device refused.
* **Publishing never blocks.** Each snapshot goes to every output callback (a latest-value cell's
  writer, a drop-oldest ring's push); they must return at once. A slow consumer cannot delay a
  poll or a write.
* **Device faults are states, not crashes.** While the connection is down the unit is down
  with the connection's reason, quietly (the connection already said DEVICE_LINK_DOWN). A unit
  that stops answering while its connection stays up (the other units answer) is
  DEVICE_UNIT_DOWN, retried after the same capped backoff policy; DEVICE_UNIT_UP when it
  answers again. Each is logged once per transition, never once per attempt, so a 30-minute or
  3-day outage neither crashes the actor nor floods the log. Only a bug escapes `run`.
* **Status is published.** Every change of the unit's `LinkStatus` is written into the
  tree-owned handle's `StatusCell` (`SiteContext.link`), which the status endpoint reads; when
  the instance ends the cell says so (restarting, with the error, or stopped); no one asks the
  instance.
* **The driver is a `Driver`** — a complete Protocol (`UniversalDriver` satisfies it, checked by
  mypy below); the link never probes a driver for what it can do.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import structlog
import trio

from actors import Backoff
from bessai.device.connection import RECONNECT_BACKOFF, ModbusConnection
from bessai.device.errors import ModbusProtocolError
from bessai.device.planner import ReadRequest
from bessai.device.profile import Poll
from bessai.link import Link, LinkState
from bessai.model import Snapshot
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.observe.tracing import NULL_TRACER, SpanHandle, Tracer

if TYPE_CHECKING:
    from bessai.control.context import LinkHandle
    from bessai.device.driver import UniversalDriver

log = structlog.get_logger("bessai.control.device_link")

LINK_FAULTS: tuple[type[BaseException], ...] = (
    ConnectionError, TimeoutError, OSError, ModbusProtocolError,
    trio.BrokenResourceError, trio.ClosedResourceError,
)
"""Errors that mean the connection is unusable: the link goes down and reconnects. Any other
exception from the driver (an exception response, a refused write) fails only that request."""


class Priority(enum.IntEnum):
    """Write priority; lower goes first. Reads come after every queued write."""

    SAFETY = 0
    HEARTBEAT = 1
    DISPATCH = 2


class LinkDown(ConnectionError):
    """The device link has no connection right now; the write was not sent."""

    def __init__(self, device_id: str, reason: str | None) -> None:
        self.device_id = device_id
        self.reason = reason
        super().__init__(f"device link to {device_id} is down ({reason or 'not connected yet'})"
                         " — the write was not sent; it reconnects by itself with backoff")


PollClass = Poll | str | None
"""A poll class as the driver's read plan takes it (None: every readable tag)."""

WritePath = Literal["direct", "queue"]


class Driver(Protocol):
    """Everything the device link asks of a driver. `bessai.device.UniversalDriver` is the one
    in production (mypy checks it satisfies this, below); a test's fake implements all of it."""

    @property
    def connection(self) -> ModbusConnection:
        """The endpoint's connection the driver's requests go through."""
        ...

    @property
    def unit_fault(self) -> Exception | None:
        """Set by `read_all` when this unit stopped answering (a timeout, a lost connection);
        the snapshot then carries the tags it could not read as invalid."""
        ...

    def plan(self, poll_class: PollClass = None) -> Sequence[ReadRequest]:
        """The coalesced Modbus requests one poll of ``poll_class`` sends."""
        ...

    async def connect(self) -> None: ...

    async def read_all(self, poll_class: PollClass = None) -> Snapshot: ...

    async def write_tag(self, name: str, value: float | int, *, priority: int = ...) -> None:
        """Write one tag; ``priority`` orders it on the connection (lower first, reads at 10)."""
        ...

    async def aclose(self) -> None:
        """Close a private connection (a shared one is its owner's to close)."""
        ...


if TYPE_CHECKING:
    def _universal_driver_is_a_driver(driver: UniversalDriver) -> Driver:
        return driver  # mypy fails here if UniversalDriver stops satisfying the Protocol


@attrs.frozen
class LinkStatus:
    """The link as an operator sees it. Times are Trio time; ``retry_at`` is set while down."""

    state: LinkState
    reason: str | None
    since: float
    retry_at: float | None = None
    last_snapshot_at: float | None = None

    def snapshot_age(self, now: float) -> float | None:
        return None if self.last_snapshot_at is None else now - self.last_snapshot_at


@attrs.define(eq=False)
class _WriteRequest:
    tag: str
    value: float | int
    priority: Priority
    done: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None
    abandoned: bool = False


@contextlib.contextmanager
def _fail_after(seconds: float, message: str) -> Iterator[None]:
    with trio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise TimeoutError(message)


def _poll_label(poll_class: PollClass) -> str:
    """A poll class as a metric/span label: ``None`` (every readable tag) is ``all``."""
    if poll_class is None:
        return "all"
    return poll_class.value if isinstance(poll_class, Poll) else poll_class


def _merge(previous: Snapshot | None, new: Snapshot) -> Snapshot:
    """The latest reading of every tag: ``new`` over ``previous`` (fast polls carry only fast
    tags; the safety guard and the gate want every tag's latest value)."""
    if previous is None:
        return new
    readings = dict(previous.readings)
    readings.update(new.readings)
    return attrs.evolve(new, readings=readings)


@attrs.define(eq=False)
class DeviceLink:
    """Polls and writes one device (unit id). Run it under the site supervisor (first child).

    ``outputs`` receive every polled snapshot as read (recorder ring, uplink); ``latest_outputs``
    receive the merged latest view (a latest-value cell for the safety guard). All must return
    at once. ``fast_poll`` / ``slow_poll`` are the driver's poll classes. ``own_connection``:
    run the driver's connection's owner here if nobody else does (False when the tree owns the
    connection). ``backoff`` / ``retry_cap_s``: retries of a unit that stopped answering while
    its connection stayed up.
    """

    driver: Driver
    site_id: str
    device_id: str
    fast_interval_s: float = 1.0
    slow_interval_s: float = 30.0
    outputs: Sequence[Callable[[Snapshot], Any]] = ()
    latest_outputs: Sequence[Callable[[Snapshot], Any]] = ()
    backoff: Backoff = RECONNECT_BACKOFF
    metrics: MetricSink = NULL_SINK
    tracer: Tracer = NULL_TRACER
    """One ``poll_cycle`` span per poll: device, poll class, requests, tags_ok, tags_failed,
    outcome (ok, partial, failed, link_fault)."""
    fast_poll: PollClass = "fast"
    slow_poll: PollClass = None
    call_timeout_s: float | None = None
    write_path: WritePath = attrs.field(default="direct", validator=attrs.validators.in_(
        ("direct", "queue")))
    """``direct``: writes go through the driver's priority lock from the caller's task;
    ``queue``: they wait in this link's queue, drained between polls (a benchmark baseline)."""
    handle: LinkHandle | None = None
    """The tree's handle: attached while running, given every status (its `StatusCell`)."""
    rng: random.Random = attrs.field(factory=random.Random)
    own_connection: bool = True
    retry_cap_s: float | None = None

    status: LinkStatus = attrs.field(init=False)
    unit: Link = attrs.field(init=False)
    latest: Snapshot | None = attrs.field(init=False, default=None)
    _queue: list[tuple[int, int, _WriteRequest]] = attrs.field(init=False, factory=list)
    _seq: itertools.count[int] = attrs.field(init=False, factory=itertools.count)
    _wake: trio.Event = attrs.field(init=False, factory=trio.Event)
    _up: trio.Event = attrs.field(init=False, factory=trio.Event)
    _stopping: bool = attrs.field(init=False, default=False)
    _attempt: int = attrs.field(init=False, default=0)
    _write_fault: str | None = attrs.field(init=False, default=None)
    _last_snapshot_at: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.status = LinkStatus(LinkState.CONNECTING, "starting", since=0.0)
        self.unit = Link(name=self.device_id, down_after=1, sink=self.metrics, log=log,
                         state=LinkState.CONNECTING, up_event="DEVICE_UNIT_UP",
                         down_event="DEVICE_UNIT_DOWN", reason_changed_event=None,
                         down_level="error", gauge=None, announce_first_up=False,
                         fields={"site": self.site_id, "device": self.device_id})

    # -- the public face --------------------------------------------------------------------

    @property
    def connection(self) -> ModbusConnection:
        return self.driver.connection

    @property
    def up(self) -> bool:
        return self.status.state is LinkState.UP and self.connection.connected

    async def write(self, tag: str, value: float | int, priority: Priority) -> None:
        """Write one tag ahead of the next read. Returns once the device acknowledged.

        Raises `LinkDown` at once if there is no connection, or the driver's error if the
        device refused. Cancelling the caller withdraws a write that was not sent yet.
        """
        if not self.up:
            raise LinkDown(self.device_id, self.status.reason)
        started = trio.current_time()
        try:
            if self.write_path == "direct":
                await self._write_direct(tag, value, priority)
            else:
                await self._write_queued(tag, value, priority)
        finally:  # submit → acknowledged (or failed), waiting included
            self.metrics.record("bessai.device.write_latency_s", trio.current_time() - started,
                                priority=priority.name.lower(), device=self.device_id)

    async def _write_queued(self, tag: str, value: float | int, priority: Priority) -> None:
        request = _WriteRequest(tag, value, priority)
        heapq.heappush(self._queue, (int(priority), next(self._seq), request))
        self._wake.set()
        try:
            await request.done.wait()
        except trio.Cancelled:
            request.abandoned = True
            raise
        if request.error is not None:
            raise request.error

    async def _write_direct(self, tag: str, value: float | int, priority: Priority) -> None:
        """Through the connection's scheduler, from the caller's task: the write goes out as
        soon as the request in flight is answered, not after the whole poll."""
        try:
            with self._deadline(f"write {tag}"):
                await self.driver.write_tag(tag, value, priority=int(priority))
        except LINK_FAULTS as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self.connection.connected:
                if self.status.state is not LinkState.DOWN:
                    # The unit did not answer but its connection stays (the other units
                    # answer): down now, so the next heartbeat waits for the unit instead of
                    # costing the shared connection another timeout right away.
                    self._unit_down(reason, self._next_delay())
                self._write_fault = reason
                self._wake.set()  # the poll task restarts (and retries after the delay)
            raise LinkDown(self.device_id, reason) from exc
        except Exception as exc:
            log.warning("device_write_failed", site=self.site_id, device=self.device_id,
                        tag=tag, value=value, error=str(exc))
            raise

    async def wait_up(self) -> None:
        """Return as soon as the link is up (at once if it already is)."""
        while not self.up:
            await self._up.wait()

    def request_stop(self) -> None:
        """Ask `run` to return (supervisor's graceful stop); a private connection closes."""
        self._stopping = True
        self._wake.set()

    # -- the actor ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll and serve writes until cancelled or asked to stop.

        Reports ready at once: a device that is down at start is a state (``connecting``), not a
        failed start, so the guard and the watchdog start beside it and block/wait as they must.
        """
        self._set_status(LinkState.CONNECTING, "starting")
        if self.handle is not None:
            self.handle.attach(self)
        task_status.started(self)
        # The cell says "restarting" (with the error) or "stopped" once this instance has ended:
        # the status endpoint never shows this instance's last state after that.
        with (self.handle.cell.running() if self.handle is not None
              else contextlib.nullcontext()):
            await self._run_until_stopped()

    async def _run_until_stopped(self) -> None:
        connection = self.connection
        try:
            async with trio.open_nursery() as nursery:
                if self.own_connection and not connection.owned:
                    connection.adopt(site_id=self.site_id, metrics=self.metrics)
                    await nursery.start(connection.run)
                nursery.start_soon(self._follow_connection)
                await self._poll_loop()
                nursery.cancel_scope.cancel()
        finally:
            self._set_status(LinkState.DOWN, "device link stopped")
            if self.handle is not None:
                self.handle.detach(self)
            self._fail_queued(LinkDown(self.device_id, "device link stopped"))
            if self.own_connection:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await self._close_driver()

    async def _follow_connection(self) -> None:
        """Mirror the connection's losses into the unit's state at once (writes then fail fast
        with the connection's reason instead of waiting for the next poll)."""
        connection = self.connection
        while True:
            await connection.wait_changed()
            if not connection.connected:
                self._connection_lost()
            self._wake.set()

    def _connection_lost(self) -> None:
        link = self.connection.link
        if link.state is LinkState.CONNECTING and link.failures == 0:
            return  # the first connect is under way: still "connecting"
        reason = link.reason or _describe(self.connection.last_error)
        retry = None if link.retry_at is None else max(0.0, link.retry_at - trio.current_time())
        if self.unit.state is not LinkState.DOWN or self.unit.reason != reason:
            if self.unit.state is not LinkState.DOWN:
                self.metrics.count("bessai.device.link_down", device=self.device_id)
            self.unit.failed(reason, retry or 0.0, announce=False)
        if (self.status.state, self.status.reason, self.status.retry_at) != (
                LinkState.DOWN, reason, link.retry_at):
            self._set_status(LinkState.DOWN, reason, link.retry_at)
        self._fail_queued(LinkDown(self.device_id, reason))

    async def _poll_loop(self) -> None:
        connection = self.connection
        while not self._stopping:
            if not connection.connected:
                self._connection_lost()
                with trio.move_on_after(1.0):  # re-read the connection's retry time now and then
                    await connection.wait_changed()
                continue
            try:
                await self._serve()
            except LINK_FAULTS as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if not connection.connected:
                    continue  # the connection's fault: its owner logs and reconnects
                retry_at = self.status.retry_at
                if (self.status.state is not LinkState.DOWN or retry_at is None
                        or retry_at <= trio.current_time()):
                    self._unit_down(reason, self._next_delay())
                    retry_at = self.status.retry_at
                assert retry_at is not None
                await self._sleep_unless_stopping(retry_at - trio.current_time())

    def _deadline(self, what: str, requests: int = 1) -> Any:
        """A last-resort bound on one driver call (the connection has its own request timeout);
        overrunning it is a link fault. A poll is several requests, each allowed the bound:
        a slow but answering device (Huawei: replies up to 10 s) is not a link fault."""
        if self.call_timeout_s is None:
            return contextlib.nullcontext()
        seconds = self.call_timeout_s * max(1, requests)
        return _fail_after(seconds, f"{what} took longer than {seconds:g} s (device link's "
                           f"call_timeout_s {self.call_timeout_s:g} s x {requests} requests)")

    def _requests_in(self, poll_class: PollClass) -> int:
        """How many requests a poll sends (the driver's read plan), at least 1."""
        return self._planned_requests(poll_class) or 1

    async def _serve(self) -> None:
        """Poll and write until a link fault (raised) or a stop request (returns)."""
        now = trio.current_time()
        next_fast = now
        next_slow = now
        connection = self.connection
        self._write_fault = None  # a fault from before this connection is not this unit's
        while not self._stopping:
            if not connection.connected:
                raise ConnectionError(_describe(connection.last_error))
            await self._drain_writes()
            if self._write_fault is not None:
                fault, self._write_fault = self._write_fault, None
                raise ConnectionError(f"a write failed: {fault}")
            now = trio.current_time()
            if now >= next_slow:
                await self._poll(self.slow_poll)
                next_slow = max(next_slow + self.slow_interval_s, trio.current_time())
                next_fast = max(next_fast + self.fast_interval_s, trio.current_time())
            elif now >= next_fast:
                await self._poll(self.fast_poll)
                next_fast = max(next_fast + self.fast_interval_s, trio.current_time())
            else:
                with trio.move_on_at(min(next_fast, next_slow)):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _drain_writes(self) -> None:
        while self._queue:
            _, _, request = heapq.heappop(self._queue)
            if request.abandoned:
                continue
            try:
                with self._deadline(f"write {request.tag}"):
                    await self.driver.write_tag(request.tag, request.value)
            except LINK_FAULTS as exc:
                request.error = LinkDown(self.device_id, f"{type(exc).__name__}: {exc}")
                request.done.set()
                raise
            except trio.Cancelled:
                request.error = LinkDown(self.device_id, "device link stopped")
                request.done.set()
                raise
            except Exception as exc:  # refused by the device or locally: this request only
                request.error = exc
                log.warning("device_write_failed", site=self.site_id, device=self.device_id,
                            tag=request.tag, value=request.value, error=str(exc))
            request.done.set()

    async def _poll(self, poll_class: PollClass) -> None:
        with self.tracer.span("poll_cycle", device=self.device_id, poll=_poll_label(poll_class),
                              requests=self._planned_requests(poll_class)) as span:
            await self._poll_traced(poll_class, span)

    def _planned_requests(self, poll_class: PollClass) -> int | None:
        """How many Modbus requests the driver's coalesced plan sends for this poll class (None
        if the profile cannot plan it: the poll itself then reports why)."""
        try:
            return len(self.driver.plan(poll_class))
        except Exception:
            return None

    async def _poll_traced(self, poll_class: PollClass, span: SpanHandle) -> None:
        started = trio.current_time()
        try:
            with self._deadline("read", self._requests_in(poll_class)):
                snapshot = await self.driver.read_all(poll_class=poll_class)
        except LINK_FAULTS:
            span.set(outcome="link_fault")
            raise
        except Exception as exc:  # e.g. a whole-poll exception response: the link is fine
            self.metrics.count("bessai.device.poll_errors", device=self.device_id)
            span.set(outcome="failed", error_type=type(exc).__name__)
            log.warning("device_poll_failed", site=self.site_id, device=self.device_id,
                        poll=_poll_label(poll_class), error=str(exc))
            return
        self.metrics.record("bessai.device.poll_latency_s", trio.current_time() - started,
                            poll=_poll_label(poll_class), device=self.device_id)
        ok = sum(1 for r in snapshot.readings.values() if r.valid)
        failed = len(snapshot.readings) - ok
        span.set(tags_ok=ok, tags_failed=failed, outcome="partial" if failed else "ok")
        fault = self.driver.unit_fault
        if fault is not None or not self.connection.connected:
            # The driver marks each failed request's tags invalid rather than raising; if the
            # unit stopped answering (or the connection went away) meanwhile, the unit is
            # down. Whatever was read before is still published: invalid readings block, they
            # are never skipped.
            if any(r.valid for r in snapshot.readings.values()):
                self._publish_all(snapshot)
            span.set(outcome="link_fault")
            raise ConnectionError(_describe(fault or self.connection.last_error))
        if not self.up:
            self._unit_up()
        self._publish_all(snapshot)

    def _publish_all(self, snapshot: Snapshot) -> None:
        self.latest = _merge(self.latest, snapshot)
        self._last_snapshot_at = snapshot.taken_at
        self.status = attrs.evolve(self.status, last_snapshot_at=snapshot.taken_at)
        if self.handle is not None:
            self.handle.publish(self.status)
        for output in self.outputs:
            self._publish(output, snapshot)
        for output in self.latest_outputs:
            self._publish(output, self.latest)

    def _publish(self, output: Callable[[Snapshot], Any], snapshot: Snapshot) -> None:
        try:
            output(snapshot)
        except Exception as exc:  # a broken consumer must not stop polling or safety
            self.metrics.count("bessai.device.publish_errors", device=self.device_id)
            log.error("snapshot_publish_failed", site=self.site_id, device=self.device_id,
                      output=getattr(output, "__qualname__", repr(output)), error=str(exc))

    # -- state and bookkeeping ----------------------------------------------------------------

    def _next_delay(self) -> float:
        """The wait before retrying a unit that stopped answering: the connection's backoff
        policy, capped by the device's comm-loss budget."""
        delay = self.backoff.delay(self._attempt, self.rng)
        self._attempt += 1
        return delay if self.retry_cap_s is None else min(delay, self.retry_cap_s)

    def _unit_up(self) -> None:
        self._attempt = 0
        self.connection.confirm_up()  # DEVICE_LINK_UP (once) in the same step as the unit's up
        self.unit.succeeded()
        self._set_status(LinkState.UP, None)

    def _unit_down(self, reason: str, delay: float) -> None:
        """This unit stopped answering while its connection stays up (other units answer)."""
        if self.unit.state is not LinkState.DOWN:
            self.metrics.count("bessai.device.link_down", device=self.device_id)
        self.unit.failed(reason, delay)
        self._set_status(LinkState.DOWN, reason, trio.current_time() + delay)
        self._fail_queued(LinkDown(self.device_id, reason))

    def _set_status(self, state: LinkState, reason: str | None,
                    retry_at: float | None = None) -> None:
        previous = self.status
        now = trio.current_time()
        since = previous.since if previous.state is state else now
        self.status = LinkStatus(state, reason, since, retry_at, self._last_snapshot_at)
        self.metrics.gauge("bessai.device.link_up", 1.0 if state is LinkState.UP else 0.0,
                           device=self.device_id)
        if state is LinkState.UP:
            self._up.set()
        elif self._up.is_set():
            self._up = trio.Event()
        if self.handle is not None:
            self.handle.publish(self.status)
            if previous.state is not state:
                self.handle.notify()

    def _fail_queued(self, error: BaseException) -> None:
        while self._queue:
            _, _, request = heapq.heappop(self._queue)
            request.error = error
            request.done.set()

    async def _sleep_unless_stopping(self, delay: float) -> None:
        with trio.move_on_after(delay):
            while not self._stopping:
                await self._wake.wait()
                self._wake = trio.Event()

    async def _close_driver(self) -> None:
        try:
            await self.driver.aclose()
        except Exception as exc:
            log.debug("device_close_failed", device=self.device_id, error=str(exc))


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "connection lost"
    return f"{type(error).__name__}: {error}"
