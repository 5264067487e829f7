"""The device link: the one actor that owns a device's Modbus connection.

Job: keep one connection to the device (through the driver), poll snapshots at the fast and slow
rates, hand each snapshot on without ever blocking, and serve writes from the safety guard, the
watchdog and dispatch ahead of the next read.

Invariants:

* **One connection, requests serialized.** Only this actor's driver talks to the device, so
  Huawei's one-client rule holds; every request goes through the driver's client one at a time.
* **Writes go first, by priority** (`Priority`: SAFETY < HEARTBEAT < DISPATCH, lower first, all
  ahead of reads). With `UniversalDriver` (``write_path="direct"``, chosen automatically) a
  write waits only for the request in flight: its client's priority lock hands the connection
  to the most urgent waiter between two requests, even in the middle of a poll. With a driver
  that takes no priority (``"queue"``), writes wait in this link's priority queue, drained
  before every poll. `write()` returns once the device acknowledged, or raises: `LinkDown` when
  there is no connection (so the caller can decide to wait with `wait_up()` or give up), the
  driver's own error when the device refused.
* **Publishing never blocks.** Each snapshot goes to every output callback (a latest-value cell's
  writer, a drop-oldest ring's push); they must return at once. A slow consumer cannot delay a
  poll or a write.
* **Device faults are states, not crashes.** A connection error or timeout puts the link in
  ``down`` with a reason; reconnects follow capped, jittered exponential backoff. DEVICE_LINK_DOWN
  and DEVICE_LINK_UP are logged once per transition, never once per attempt, so a 30-minute or
  3-day outage neither crashes the actor nor floods the log. Only a bug escapes `run`.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import inspect
import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import structlog
import trio

from actors import Backoff
from bessai.device.errors import ModbusProtocolError
from bessai.model import Snapshot
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.observe.tracing import NULL_TRACER, Tracer

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


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


class LinkDown(ConnectionError):
    """The device link has no connection right now; the write was not sent."""

    def __init__(self, device_id: str, reason: str | None) -> None:
        self.device_id = device_id
        self.reason = reason
        super().__init__(f"device link to {device_id} is down ({reason or 'not connected yet'})"
                         " — the write was not sent; it reconnects by itself with backoff")


class Driver(Protocol):
    """What the device link needs from `bessai.device.UniversalDriver`."""

    async def connect(self) -> None: ...

    async def read_all(self, poll_class: Any = None) -> Snapshot: ...

    async def write_tag(self, name: str, value: float | int, **kwargs: Any) -> Any:
        """``priority=`` is passed when the driver accepts it (see `DeviceLink.write_path`)."""


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


RECONNECT_BACKOFF = Backoff(initial_s=1.0, max_s=60.0, multiplier=2.0, jitter=0.5)
"""Reconnects: 1 s doubling to a 60 s cap, each delay cut by up to half at random (so a fleet
that lost its devices together does not reconnect in lock-step)."""


@attrs.define(eq=False)
class _WriteRequest:
    tag: str
    value: float | int
    priority: Priority
    done: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None
    abandoned: bool = False


@contextlib.contextmanager
def _fail_after(seconds: float, message: str) -> Any:
    with trio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise TimeoutError(message)


def _accepts_priority(driver: Any) -> bool:
    """Whether the driver's write_tag takes ``priority=`` (UniversalDriver: its client's
    priority lock orders requests, lower first, reads at 10)."""
    try:
        return "priority" in inspect.signature(driver.write_tag).parameters
    except (TypeError, ValueError):
        return False


def _driver_error(driver: Any) -> str | None:
    client = getattr(driver, "client", None)
    error = getattr(client, "last_error", None)
    return None if error is None else f"{type(error).__name__}: {error}"


def _poll_label(poll_class: Any) -> str:
    """A poll class as a metric/span label: ``None`` (every readable tag) is ``all``."""
    if poll_class is None:
        return "all"
    return str(getattr(poll_class, "value", poll_class))


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
    """Owns one device's connection. Run it under the site supervisor (first child).

    ``outputs`` receive every polled snapshot as read (recorder ring, uplink); ``latest_outputs``
    receive the merged latest view (a latest-value cell for the safety guard). All must return
    at once. ``fast_poll`` / ``slow_poll`` are the driver's poll classes.
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
    fast_poll: Any = "fast"
    slow_poll: Any = None
    call_timeout_s: float | None = None
    write_path: str = attrs.field(default="auto", validator=attrs.validators.in_(
        ("auto", "direct", "queue")))
    handle: Any = None  # a context.LinkHandle: attached while running, notified on changes
    rng: random.Random = attrs.field(factory=random.Random)

    status: LinkStatus = attrs.field(init=False)
    latest: Snapshot | None = attrs.field(init=False, default=None)
    _queue: list[tuple[int, int, _WriteRequest]] = attrs.field(init=False, factory=list)
    _seq: itertools.count = attrs.field(init=False, factory=itertools.count)
    _wake: trio.Event = attrs.field(init=False, factory=trio.Event)
    _up: trio.Event = attrs.field(init=False, factory=trio.Event)
    _stopping: bool = attrs.field(init=False, default=False)
    _attempt: int = attrs.field(init=False, default=0)
    _write_fault: str | None = attrs.field(init=False, default=None)
    _direct: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self.status = LinkStatus(LinkState.CONNECTING, "starting", since=0.0)
        if self.write_path == "auto":
            self._direct = _accepts_priority(self.driver)
        else:
            self._direct = self.write_path == "direct"

    # -- the public face --------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.status.state is LinkState.UP

    async def write(self, tag: str, value: float | int, priority: Priority) -> None:
        """Write one tag ahead of the next read. Returns once the device acknowledged.

        Raises `LinkDown` at once if there is no connection, or the driver's error if the
        device refused. Cancelling the caller withdraws a write that was not sent yet.
        """
        if not self.up:
            raise LinkDown(self.device_id, self.status.reason)
        started = trio.current_time()
        try:
            if self._direct:
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
        """Through the client's priority lock, from the caller's task: the write goes out as
        soon as the request in flight is answered, not after the whole poll."""
        try:
            with self._deadline(f"write {tag}"):
                await self.driver.write_tag(tag, value, priority=int(priority))
        except LINK_FAULTS as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._write_fault = reason
            self._wake.set()  # the I/O task takes the link down on its next turn
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
        """Ask `run` to close the connection and return (supervisor's graceful stop)."""
        self._stopping = True
        self._wake.set()

    # -- the actor ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, poll and serve writes until cancelled or asked to stop.

        Reports ready at once: a device that is down at start is a state (``connecting``), not a
        failed start, so the guard and the watchdog start beside it and block/wait as they must.
        """
        self._set_status(LinkState.CONNECTING, "starting")
        if self.handle is not None:
            self.handle.attach(self)
        task_status.started(self)
        try:
            while not self._stopping:
                try:
                    await self._connect()
                    await self._serve()
                except LINK_FAULTS as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    delay = self.backoff.delay(self._attempt, self.rng)
                    self._attempt += 1
                    self._go_down(reason, delay)
                    # The driver is not closed here: its client already dropped the broken
                    # connection, and a closed driver cannot reconnect. It is closed when the
                    # link ends.
                    await self._sleep_unless_stopping(delay)
        finally:
            self._set_status(LinkState.DOWN, "device link stopped")
            if self.handle is not None:
                self.handle.detach(self)
            self._fail_queued(LinkDown(self.device_id, "device link stopped"))
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await self._close_driver()

    async def _connect(self) -> None:
        log.debug("device_connect", site=self.site_id, device=self.device_id)
        with self._deadline("connect"):
            await self.driver.connect()
        # Not up yet: a device that accepts the connection but never answers (a hung SDongle)
        # must not flap up/down. The link is up once a poll came back on this connection.

    def _deadline(self, what: str, requests: int = 1) -> Any:
        """A last-resort bound on one driver call (the driver has its own request timeout);
        overrunning it is a link fault. A poll is several requests, each allowed the bound:
        a slow but answering device (Huawei: replies up to 10 s) is not a link fault."""
        if self.call_timeout_s is None:
            return contextlib.nullcontext()
        seconds = self.call_timeout_s * max(1, requests)
        return _fail_after(seconds, f"{what} took longer than {seconds:g} s (device link's "
                           f"call_timeout_s {self.call_timeout_s:g} s x {requests} requests)")

    def _requests_in(self, poll_class: Any) -> int:
        """How many requests a poll sends (the driver's read plan), 1 if the driver has none."""
        plan = getattr(self.driver, "plan", None)
        if plan is None:
            return 1
        try:
            return len(plan(poll_class))
        except Exception:  # a driver without a usable plan: the plain bound
            return 1

    async def _serve(self) -> None:
        """Poll and write until a link fault (raised) or a stop request (returns)."""
        now = trio.current_time()
        next_fast = now
        next_slow = now
        while not self._stopping:
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

    async def _poll(self, poll_class: Any) -> None:
        with self.tracer.span("poll_cycle", device=self.device_id, poll=_poll_label(poll_class),
                              requests=self._planned_requests(poll_class)) as span:
            await self._poll_traced(poll_class, span)

    def _planned_requests(self, poll_class: Any) -> int | None:
        """How many Modbus requests the driver's coalesced plan sends for this poll class."""
        plan = getattr(self.driver, "plan", None)
        if plan is None:
            return None
        try:
            return len(plan(poll_class))
        except Exception:
            return None

    async def _poll_traced(self, poll_class: Any, span: Any) -> None:
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
        if not getattr(self.driver, "connected", True):
            # The driver marks each failed request's tags invalid rather than raising; if the
            # connection itself went away meanwhile, the link is down. Whatever was read before
            # it went is still published: invalid readings block, they are never skipped.
            if any(r.valid for r in snapshot.readings.values()):
                self._publish_all(snapshot)
            span.set(outcome="link_fault")
            raise ConnectionError(_driver_error(self.driver) or "connection lost during a poll")
        if not self.up:
            self._attempt = 0
            self._set_status(LinkState.UP, None)
        self._publish_all(snapshot)

    def _publish_all(self, snapshot: Snapshot) -> None:
        self.latest = _merge(self.latest, snapshot)
        self.status = attrs.evolve(self.status, last_snapshot_at=snapshot.taken_at)
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

    def _set_status(self, state: LinkState, reason: str | None,
                    retry_at: float | None = None) -> None:
        previous = self.status
        now = trio.current_time()
        since = previous.since if previous.state is state else now
        self.status = LinkStatus(state, reason, since, retry_at, previous.last_snapshot_at)
        self.metrics.gauge("bessai.device.link_up", 1.0 if state is LinkState.UP else 0.0,
                           device=self.device_id)
        if state is LinkState.UP:
            self._up.set()
            if previous.state is LinkState.DOWN:  # a recovery: say how long it was down
                log.warning("DEVICE_LINK_UP", site=self.site_id, device=self.device_id,
                            down_for_s=round(now - previous.since, 3))
            elif previous.state is not LinkState.UP:  # first connection
                log.info("DEVICE_LINK_UP", site=self.site_id, device=self.device_id)
        elif self._up.is_set():
            self._up = trio.Event()
        if self.handle is not None and previous.state is not state:
            self.handle.notify()

    def _go_down(self, reason: str, delay: float) -> None:
        was = self.status.state
        retry_at = trio.current_time() + delay
        if was is LinkState.DOWN:
            # Still down: keep the first reason's time, refresh the reason and retry time, quietly.
            self.status = attrs.evolve(self.status, reason=reason, retry_at=retry_at)
            log.debug("device_reconnect_failed", site=self.site_id, device=self.device_id,
                      reason=reason, retry_in_s=round(delay, 3))
        else:
            self._set_status(LinkState.DOWN, reason, retry_at)
            log.error("DEVICE_LINK_DOWN", site=self.site_id, device=self.device_id,
                      reason=reason, retry_in_s=round(delay, 3))
            self.metrics.count("bessai.device.link_down", device=self.device_id)
        self._fail_queued(LinkDown(self.device_id, reason))

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
        close = getattr(self.driver, "aclose", None) or getattr(self.driver, "close", None)
        if close is None:
            return
        try:
            result = close()
            if hasattr(result, "__await__"):
                await result
        except Exception as exc:
            log.debug("device_close_failed", device=self.device_id, error=str(exc))
