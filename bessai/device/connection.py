"""The owner of one Modbus endpoint: one connection, shared by every unit id behind it.

A `ModbusConnection` is the only thing that opens, uses and closes the stream to one physical
endpoint (a TCP ``host:port``; later an RTU-over-TCP port or a serial port). Every device (unit
id) on that endpoint makes its requests through it, so an SDongle or SmartLogger that keeps only
its newest client sees exactly one client.

Invariants:

- **One owner, one lifecycle, one state.** ``run`` (the actor, under the tree) connects, waits
  the post-connect delay, and after a failure reconnects with ONE capped, jittered backoff
  (`actors.Backoff`, capped by ``reconnect_cap_s`` — derived from the devices' own comm-loss
  timeout so a device that comes back is reconnected and heartbeated before it gives up). Its
  `bessai.link.Link` is the one state operators see: ``DEVICE_LINK_DOWN`` / ``DEVICE_LINK_UP``
  once per transition per connection; up means a unit's whole poll came back on it
  (`confirm_up`), so a gateway that accepts connections but never answers does not flap.
  While an owner runs, a request made with no connection fails at once
  (``DeviceConnectionError``, naming the next reconnect); only an unowned connection (a CLI
  tool, a test) opens on demand.
- **One request in flight, by priority, fair between units.** Requests wait in a scheduler
  ordered by (priority, the unit served least recently, arrival): safety and heartbeat writes
  first, then dispatch writes, then reads, and among reads the units take turns, so a unit
  with a backlog cannot starve the others.
- **A failing unit does not take its neighbours down.** Each request has its unit's own
  timeout. A timeout closes the connection only when every unit on it has timed out since the
  last reply (so a single device that goes silent is reconnected as before, while one silent
  unit behind an SDongle does not cost the others their connection); a late reply that arrives
  after a timeout is recognised by its transaction id and discarded.
- Every request ends within its timeout with the reply bytes or a typed error; garbage or a lost
  peer closes the connection so nothing stale can be taken for a later answer; ``cooldown_s``
  separates the end of one request from the start of the next.
- Only Trio's clock; no asyncio, no threads.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import structlog
import trio
from pymodbus.pdu import ModbusPDU

from actors import Backoff
from bessai.device.errors import (
    DeviceConnectionError,
    ModbusExceptionResponse,
    ModbusProtocolError,
    ModbusTimeout,
)
from bessai.device.framing import Framing, MbapFraming
from bessai.link import Link, LinkState
from bessai.observe.sink import NULL_SINK, MetricSink

log = structlog.get_logger("bessai.device.connection")

T = TypeVar("T")

StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]

PRIORITY_CONNECT = -1
PRIORITY_WRITE = 0
PRIORITY_READ = 10

RECONNECT_BACKOFF = Backoff(initial_s=1.0, max_s=60.0, multiplier=2.0, jitter=0.5)
"""Reconnects: 1 s doubling to a 60 s cap (lowered by `reconnect_cap_s`), each delay cut by up to
half at random (so a fleet that lost its devices together does not reconnect in lock-step)."""


def reconnect_cap_s(device_timeout_s: float | None) -> float | None:
    """The longest reconnect wait that still lets a returning device be heartbeated in time.

    A device drops its session (Huawei: 60 s without a heartbeat) counting from the last
    heartbeat before the outage. After it returns, the gateway needs up to one reconnect wait,
    the post-connect delay, one poll and the heartbeat itself; a twelfth of the device's timeout
    (Huawei: 5 s) leaves most of the budget to the outage itself. Never below 1 s.
    """
    if device_timeout_s is None or device_timeout_s <= 0:
        return None
    return max(1.0, device_timeout_s / 12.0)


def tcp_stream_factory(host: str, port: int = 502) -> StreamFactory:
    """A factory opening a TCP connection to ``host:port`` (what production uses)."""

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    connect.host = host  # type: ignore[attr-defined]
    connect.port = port  # type: ignore[attr-defined]
    return connect


@attrs.define
class ClientStats:
    """Counters for telemetry and benchmarks."""

    requests: int = 0
    errors: int = 0
    connects: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@attrs.define(eq=False)
class _Waiter:
    priority: int
    seq: int
    unit: int
    event: trio.Event = attrs.field(factory=trio.Event)
    cancelled: bool = False


class _Scheduler:
    """Grants the connection to one request at a time: lowest (priority, when the waiter's unit
    was last served, arrival) first — at equal priority the unit served least recently goes
    first (round robin between units, whatever their backlog)."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[_Waiter] = []
        self._seq = 0
        self._grants: dict[int, int] = {}
        self._clock = 0

    @asynccontextmanager
    async def hold(self, priority: int, unit: int = -1) -> AsyncIterator[None]:
        if not self._held and not self._waiters:
            self._held = True
            self._grant(unit)
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                self._release()
                raise
        else:
            self._seq += 1
            waiter = _Waiter(priority, self._seq, unit)
            self._waiters.append(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.event.is_set():  # ownership was handed to us as we were cancelled
                    self._release()
                else:
                    waiter.cancelled = True
                    self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _grant(self, unit: int) -> None:
        self._clock += 1
        self._grants[unit] = self._clock

    def _release(self) -> None:
        if self._waiters:
            grants = self._grants
            best = min(self._waiters,
                       key=lambda w: (w.priority, grants.get(w.unit, 0), w.seq))
            self._waiters.remove(best)
            self._grant(best.unit)
            best.event.set()  # ownership passes directly; _held stays True
            return
        self._held = False


@attrs.define(eq=False)
class ModbusConnection:
    """One endpoint's connection, shared by its units. See the module docstring.

    ``connect`` opens a stream (``tcp_stream_factory``, a serial port, an in-memory simulator);
    ``peer`` names the endpoint in logs and status (``192.168.1.50:502``).
    """

    connect: StreamFactory
    peer: str = "device"
    framing: Framing = attrs.field(factory=MbapFraming)
    timeout_s: float = 10.0
    post_connect_delay_s: float = 1.0
    cooldown_s: float = 0.05
    backoff: Backoff = RECONNECT_BACKOFF
    reconnect_cap_s: float | None = None
    rng: random.Random = attrs.field(factory=random.Random)
    site_id: str | None = None
    metrics: MetricSink = NULL_SINK
    stats: ClientStats = attrs.field(factory=ClientStats)
    link: Link = attrs.field(init=False)
    last_error: Exception | None = attrs.field(init=False, default=None)
    units: dict[int, str] = attrs.field(init=False, factory=dict)
    """Unit id → device id of every device using this connection."""
    _stream: trio.abc.Stream | None = attrs.field(init=False, default=None)
    _buf: bytearray = attrs.field(init=False, factory=bytearray)
    _scheduler: _Scheduler = attrs.field(init=False, factory=_Scheduler)
    _tid: int = attrs.field(init=False, default=0)
    _last_done_at: float = attrs.field(init=False, default=-math.inf)
    _attempt: int = attrs.field(init=False, default=0)
    _timed_out: set[int] = attrs.field(init=False, factory=set)
    _owned: bool = attrs.field(init=False, default=False)
    _fault_pending: bool = attrs.field(init=False, default=False)
    _stopping: bool = attrs.field(init=False, default=False)
    _closed: bool = attrs.field(init=False, default=False)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self.link = Link(name=self.peer, down_after=1, sink=self.metrics, log=log,
                         state=LinkState.CONNECTING, up_event="DEVICE_LINK_UP",
                         down_event="DEVICE_LINK_DOWN", reason_changed_event=None,
                         down_level="error", gauge="bessai.device.connection_state",
                         fields=self._fields())

    @property
    def host(self) -> str | None:
        return getattr(self.connect, "host", None)

    @property
    def port(self) -> int | None:
        return getattr(self.connect, "port", None)

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.site_id is not None:
            fields["site"] = self.site_id
        if self.units:
            fields["device"] = ",".join(self.units.values())
            fields["units"] = ",".join(str(u) for u in self.units)
        return fields

    def adopt(self, *, site_id: str | None, metrics: MetricSink) -> None:
        """A private connection takes its owner's site id and telemetry sink."""
        if self.site_id is None:
            self.site_id = site_id
        if self.metrics is NULL_SINK:
            self.metrics = self.link.sink = metrics
        self.link.fields = self._fields()

    def register(self, unit_id: int, device_id: str | None = None) -> None:
        """A device (unit id) that makes its requests through this connection."""
        if not 0 <= unit_id <= 255:
            raise ValueError(f"unit_id {unit_id} is not 0..255 — Huawei: 1 via SDongle, 0 direct")
        self.units[unit_id] = device_id or self.units.get(unit_id) or f"unit{unit_id}"
        self.link.fields = self._fields()

    # ---- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._stream is not None

    @property
    def owned(self) -> bool:
        """Whether an owner (``run``) manages this connection's lifecycle right now."""
        return self._owned

    @property
    def next_attempt_at(self) -> float:
        """Trio time of the next reconnect attempt (-inf when none is scheduled)."""
        at = self.link.retry_at
        return -math.inf if at is None or self.connected else at

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self) -> None:
        """Return once a connection is open (at once if it is)."""
        while self._stream is None:
            await self._changed.wait()

    async def wait_changed(self) -> None:
        """Return at the next connect or disconnect."""
        await self._changed.wait()

    def status(self) -> dict[str, Any]:
        """For the status endpoint: the connection's one link state, its units, counters."""
        view = self.link.status()
        view.update(connection=self.peer, transport=self.framing.name,
                    units={str(u): d for u, d in self.units.items()},
                    retry_in_s=self.link.retry_in_s(), connects=self.stats.connects)
        return view

    # ---- the owner -------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping = True
        self._notify()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connection until cancelled or asked to stop: connect, reconnect after faults.

        Reports ready at once: an unreachable device is a state (``connecting``/``down``), not a
        failed start. Re-entrant: a restarted owner takes the same connection object over.
        """
        if self._owned:
            raise RuntimeError(f"the connection to {self.peer} already has an owner")
        self._owned = True
        self._stopping = False
        self._closed = False
        task_status.started(self)
        try:
            while not self._stopping:
                if self._stream is None:
                    try:
                        async with self._scheduler.hold(PRIORITY_CONNECT):
                            await self._open()
                    except DeviceConnectionError as exc:
                        await self._wait_retry(exc)
                        continue
                await self._changed.wait()  # dropped (by a request's fault) or stopping
                if self._stream is None and not self._stopping and self._fault_pending:
                    await self._wait_retry(self.last_error)
        finally:
            self._stopping = True  # requests in flight fail without a link transition
            self._owned = False
            await self._close_stream()
            self._notify()

    def _retry_delay(self) -> float:
        delay = self.backoff.delay(self._attempt, self.rng)
        self._attempt += 1
        if self.reconnect_cap_s is not None:
            delay = min(delay, self.reconnect_cap_s)
        return delay

    async def _wait_retry(self, error: Exception | None) -> None:
        delay = self._retry_delay()
        was_down = self.link.is_down
        self.link.failed(_describe(error), delay)
        if not was_down:
            self.metrics.count("bessai.device.connection_down", connection=self.peer)
        self._notify()  # the units republish the reason and the retry time
        with trio.move_on_after(delay):
            while not self._stopping:
                await self._changed.wait()

    async def _open(self) -> None:
        if self._stream is not None:
            return
        if self._closed and not self._owned:
            raise DeviceConnectionError("the client was closed", self.host, self.port)
        try:
            with trio.fail_after(self.timeout_s):
                stream = await self.connect()
        except trio.TooSlowError as exc:
            self.last_error = DeviceConnectionError(
                f"connect timed out after {self.timeout_s:g} s", self.host, self.port)
            raise self.last_error from exc
        except (OSError, trio.BrokenResourceError) as exc:
            self.last_error = DeviceConnectionError(f"cannot connect ({exc})", self.host,
                                                    self.port)
            raise self.last_error from exc
        try:
            if self.post_connect_delay_s > 0:  # Huawei drops requests sent right after connect
                await trio.sleep(self.post_connect_delay_s)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            raise
        self._stream = stream
        self._buf.clear()
        self._timed_out.clear()
        self.framing.reset()
        self.stats.connects += 1
        log.debug("modbus_connected", peer=self.peer, units=sorted(self.units))
        self._notify()

    async def connect_now(self) -> None:
        """Open the connection now if it is closed (raises DeviceConnectionError)."""
        async with self._scheduler.hold(PRIORITY_CONNECT):
            try:
                await self._open()
            except DeviceConnectionError as exc:
                if not self._owned:
                    self.link.failed(_describe(exc), 0.0)
                raise

    async def _drop(self, reason: Exception, *, fault: bool = True) -> None:
        """Close the connection after a fault; the owner reconnects after the backoff.
        ``fault=False``: closed because a request was abandoned (cancelled), not a link fault."""
        if fault:
            self.last_error = reason
        self._fault_pending = fault
        await self._close_stream()
        log.debug("modbus_connection_dropped", peer=self.peer, reason=str(reason))
        if fault and not self._owned and not self._stopping:
            self.link.failed(_describe(reason), 0.0)
        self._notify()

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._buf.clear()
        if stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def aclose(self) -> None:
        """Close the connection; later requests raise DeviceConnectionError (unowned use)."""
        self._closed = True
        self._stopping = True
        await self._close_stream()
        self._notify()

    # ---- requests --------------------------------------------------------------------------

    async def request(self, request: ModbusPDU, unit: int, check: Callable[[int, bytes], T], *,
                      priority: int = PRIORITY_READ, timeout_s: float | None = None) -> T:
        """Send ``request`` to ``unit``; return ``check(reply unit, reply PDU bytes)``.

        ``check`` (`ModbusClient`'s) matches the reply to the request: a ``ModbusProtocolError``
        it raises closes the connection like garbage on the wire; an exception reply it raises
        (``ModbusReadError``...) is an answer, the link stays up. Also raises ``ModbusTimeout``
        or ``DeviceConnectionError``."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        async with self._scheduler.hold(priority, unit):
            if self._stream is None:
                if self._closed and not self._owned:
                    raise DeviceConnectionError("the client was closed", self.host, self.port)
                if self._stopping and not self._owned:
                    # Its owner ended (stopped, or restarting after a crash): it reconnects,
                    # never a request on the side.
                    raise DeviceConnectionError("link down (the connection's owner is not "
                                                "running)", self.host, self.port)
                if self._owned:
                    wait = self.next_attempt_at - trio.current_time()
                    when = f"; next reconnect in {wait:.1f} s" if wait > 0 else ""
                    raise DeviceConnectionError(f"link down ({_describe(self.last_error)}){when}",
                                                self.host, self.port)
                try:
                    await self._open()
                except DeviceConnectionError as exc:
                    self.link.failed(_describe(exc), 0.0)
                    raise
            cooldown = self._last_done_at + self.cooldown_s - trio.current_time()
            if cooldown > 0:
                await trio.sleep(cooldown)
            self._tid = self._tid % 0xFFFF + 1
            self.stats.requests += 1
            try:
                with trio.move_on_after(timeout) as scope:
                    reply = await self._exchange(request, unit, self._tid)
                    result = self._checked(check, reply)
                if scope.cancelled_caught:
                    err = ModbusTimeout(request.function_code, getattr(request, "address", 0),
                                        timeout)
                    self.stats.errors += 1
                    self._timed_out.add(unit)
                    if not self.units or set(self.units) <= self._timed_out \
                            or not self.framing.survives_timeout:
                        await self._drop(err)
                    else:
                        log.debug("modbus_unit_timeout", peer=self.peer, unit=unit)
                    raise err
            except ModbusProtocolError as err:
                self.stats.errors += 1
                if self.framing.drops_on_garbage:
                    await self._drop(err)
                else:
                    self._buf.clear()
                raise
            except DeviceConnectionError as err:
                self.stats.errors += 1
                await self._drop(err)
                raise
            except trio.Cancelled:
                # Abandoned mid-exchange: a late reply must not meet the next request.
                await self._drop(DeviceConnectionError("request cancelled mid-exchange"),
                                 fault=False)
                raise
            finally:
                self._last_done_at = trio.current_time()
            self._answered()
            return result

    def _checked(self, check: Callable[[int, bytes], T], reply: tuple[int, bytes]) -> T:
        try:
            return check(*reply)
        except ModbusExceptionResponse:
            self.stats.errors += 1
            self._answered()  # the device answered: the link is up
            raise

    def _answered(self) -> None:
        self._timed_out.clear()
        self._attempt = 0
        if not self._owned:  # a tool's connection: any answer means up
            self.confirm_up()

    def confirm_up(self) -> None:
        """The connection works: a unit's whole poll came back on it (its device link says so;
        one stray answer from a half-working gateway is not enough). Logs DEVICE_LINK_UP once
        per transition."""
        if self.link.state is not LinkState.UP:
            self.link.succeeded()

    async def _exchange(self, request: ModbusPDU, unit: int, tid: int) -> tuple[int, bytes]:
        stream = self._stream
        assert stream is not None
        frame = self.framing.build(request, unit, tid)
        await self.framing.before_send()
        self.framing.clear_stale(self._buf)
        try:
            await stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise DeviceConnectionError(f"send failed ({exc!r})", self.host, self.port) from exc
        self.stats.bytes_sent += len(frame)
        self.framing.sent(frame)
        while True:
            parsed = self.framing.parse(self._buf)
            if parsed is not None:
                got_tid, got_unit, pdu = parsed
                if self.framing.matches(got_tid, tid):
                    return got_unit, pdu
                if self.framing.is_stale(got_tid, tid):
                    log.debug("modbus_stale_reply_discarded", peer=self.peer, tid=got_tid)
                    continue
                raise ModbusProtocolError(f"reply transaction id {got_tid} does not match "
                                          f"request {tid}")
            try:
                data = await self.framing.receive(stream, self._buf)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise DeviceConnectionError(f"receive failed ({exc!r})", self.host,
                                            self.port) from exc
            if not data:
                raise DeviceConnectionError("the device closed the connection", self.host,
                                            self.port)
            self.stats.bytes_received += len(data)
            self._buf += data


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "not connected"
    return f"{type(error).__name__}: {error}"
