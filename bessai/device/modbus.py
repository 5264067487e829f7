"""Modbus TCP client on Trio, built on pymodbus's transport-free framer and PDU classes.

pymodbus's own clients are asyncio-only. This client reuses its socket framer
(``FramerSocket``) and PDU classes (``pymodbus.pdu``) and does the I/O itself over any
``trio.abc.Stream`` obtained from a factory (the seam tests and the simulator plug into).

Invariants:

- one request in flight per connection: requests are serialized by a priority lock (lower
  ``priority`` first, FIFO within a priority), so a heartbeat write can go ahead of queued reads;
- every request finishes within ``timeout_s`` (send + reply) with a result or a typed error:
  ``ModbusReadError``/``ModbusWriteError`` (exception reply), ``ModbusTimeout``,
  ``ModbusProtocolError`` (garbage, or a reply whose transaction id, unit id, function, address or
  length does not match the request), ``DeviceConnectionError`` (a builtin ``ConnectionError``);
- after a timeout, protocol error or lost peer the connection is closed, so a late or corrupt
  reply can never be taken for the answer to a later request; the next request reconnects,
  no sooner than the capped, jittered exponential backoff allows;
- ``cooldown_s`` separates the end of one request from the start of the next, and nothing is sent
  for ``post_connect_delay_s`` after a connect (Huawei needs about 1 s);
- only Trio's clock is used; no asyncio loop, no threads.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import structlog
import trio
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from bessai.device.errors import (
    DeviceConnectionError,
    ModbusProtocolError,
    ModbusReadError,
    ModbusTimeout,
    ModbusWriteError,
)
from bessai.device.profile import Table

log = structlog.get_logger("bessai.device.modbus")

StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]

FC_READ_HOLDING = 0x03
FC_READ_INPUT = 0x04
FC_WRITE_SINGLE = 0x06
FC_WRITE_MULTIPLE = 0x10
MAX_READ_COUNT = 125
MAX_WRITE_COUNT = 123
MBAP_HEADER = 7
MAX_ADU = 260  # MBAP (7) + PDU (253)

PRIORITY_WRITE = 0
PRIORITY_READ = 10


def tcp_stream_factory(host: str, port: int = 502) -> StreamFactory:
    """A factory opening a TCP connection to ``host:port`` (what production uses)."""

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    connect.host = host  # type: ignore[attr-defined]
    connect.port = port  # type: ignore[attr-defined]
    return connect


@attrs.frozen
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits ``min(cap, initial * factor**n)``
    scaled by a random factor in ``[1 - jitter, 1]`` (so peers that failed together spread out).
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * rng.random())


class _PriorityLock:
    """A lock granted by (priority, arrival): lower priority value first, FIFO within one."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[list] = []  # [priority, seq, event, cancelled]
        self._seq = itertools.count()

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        if not self._held and not self._waiters:
            self._held = True
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                self._release()
                raise
        else:
            entry = [priority, next(self._seq), trio.Event(), False]
            heapq.heappush(self._waiters, entry)
            try:
                await entry[2].wait()
            except BaseException:
                if entry[2].is_set():  # ownership was handed to us as we were cancelled
                    self._release()
                else:
                    entry[3] = True
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            entry = heapq.heappop(self._waiters)
            if not entry[3]:
                entry[2].set()  # ownership passes directly; _held stays True
                return
        self._held = False


@attrs.define
class ClientStats:
    """Counters for telemetry and benchmarks."""

    requests: int = 0
    errors: int = 0
    connects: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class ModbusClient:
    """A Modbus TCP client for one device over streams from ``connect``.

    Requests connect on demand; use ``async with`` or :meth:`aclose` to close. See the module
    docstring for the guarantees.
    """

    def __init__(
        self,
        connect: StreamFactory,
        *,
        unit_id: int = 1,
        timeout_s: float = 10.0,
        post_connect_delay_s: float = 1.0,
        cooldown_s: float = 0.05,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        peer: str | None = None,
    ) -> None:
        if not 0 <= unit_id <= 255:
            raise ValueError(f"unit_id {unit_id} is not 0..255 — Huawei: 1 via SDongle, 0 direct")
        self._connect = connect
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.post_connect_delay_s = post_connect_delay_s
        self.cooldown_s = cooldown_s
        self.backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        host = getattr(connect, "host", None)
        port = getattr(connect, "port", None)
        self._host, self._port = host, port
        self.peer = peer or (f"{host}:{port}" if host is not None else "device")
        self._stream: trio.abc.Stream | None = None
        self._buf = bytearray()
        self._lock = _PriorityLock()
        self._framer = FramerSocket(DecodePDU(is_server=False))
        self._tid = 0
        self._last_done_at = -math.inf
        self._failures = 0
        self._next_attempt_at = -math.inf
        self.last_error: Exception | None = None
        self.stats = ClientStats()
        self._closed = False

    # ---- connection --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._stream is not None

    @property
    def next_attempt_at(self) -> float:
        """Trio time before which a reconnect is not attempted (backoff)."""
        return self._next_attempt_at

    async def connect(self) -> None:
        """Open the connection now (ignoring backoff); raise DeviceConnectionError on failure."""
        async with self._lock.hold(PRIORITY_WRITE):
            await self._open()

    async def connect_with_backoff(self, *, max_attempts: int | None = None) -> None:
        """Keep trying to connect, waiting the backoff delay between failures."""
        attempts = 0
        while True:
            wait = self._next_attempt_at - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            try:
                await self.connect()
                return
            except DeviceConnectionError:
                attempts += 1
                if max_attempts is not None and attempts >= max_attempts:
                    raise

    async def _open(self) -> None:
        if self._stream is not None:
            return
        if self._closed:
            raise DeviceConnectionError("the client was closed", self._host, self._port)
        try:
            with trio.fail_after(self.timeout_s):
                stream = await self._connect()
        except trio.TooSlowError as exc:
            self._note_failure()
            raise DeviceConnectionError(f"connect timed out after {self.timeout_s:g} s",
                                        self._host, self._port) from exc
        except (OSError, trio.BrokenResourceError) as exc:
            self._note_failure()
            raise DeviceConnectionError(f"cannot connect ({exc})", self._host,
                                        self._port) from exc
        try:
            if self.post_connect_delay_s > 0:  # Huawei drops requests sent right after connect
                await trio.sleep(self.post_connect_delay_s)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            raise
        self._stream = stream
        self._buf.clear()
        self.stats.connects += 1
        self._failures = 0
        self._next_attempt_at = -math.inf
        log.debug("modbus_connected", peer=self.peer, unit_id=self.unit_id)

    def _note_failure(self) -> None:
        delay = self.backoff.delay(self._failures, self._rng)
        self._failures += 1
        self._next_attempt_at = trio.current_time() + delay

    async def _drop(self, reason: Exception, *, fault: bool = True) -> None:
        """Close the connection after a fault; the next request reconnects after backoff."""
        self.last_error = reason
        stream, self._stream = self._stream, None
        self._buf.clear()
        if stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            log.debug("modbus_connection_dropped", peer=self.peer, reason=str(reason))
        if fault:
            self._note_failure()

    async def aclose(self) -> None:
        """Close the connection; later requests raise DeviceConnectionError."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def __aenter__(self) -> ModbusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- public requests ---------------------------------------------------------------------

    async def read_registers(self, table: Table | str, address: int, count: int, *,
                             unit_id: int | None = None, tag: str | None = None,
                             priority: int = PRIORITY_READ) -> list[int]:
        """Read ``count`` registers from ``table`` (holding: 0x03, input: 0x04)."""
        _check_span(address, count, MAX_READ_COUNT)
        request = (ReadInputRegistersRequest if Table(table) is Table.INPUT
                   else ReadHoldingRegistersRequest)
        reply = await self._execute(request(address=address, count=count), unit_id, tag, priority)
        return list(reply.registers)

    async def read_holding_registers(self, address: int, count: int, *,
                                     unit_id: int | None = None, tag: str | None = None,
                                     priority: int = PRIORITY_READ) -> list[int]:
        """Function 0x03."""
        return await self.read_registers(Table.HOLDING, address, count, unit_id=unit_id, tag=tag,
                                         priority=priority)

    async def read_input_registers(self, address: int, count: int, *,
                                   unit_id: int | None = None, tag: str | None = None,
                                   priority: int = PRIORITY_READ) -> list[int]:
        """Function 0x04."""
        return await self.read_registers(Table.INPUT, address, count, unit_id=unit_id, tag=tag,
                                         priority=priority)

    async def write_register(self, address: int, value: int, *, unit_id: int | None = None,
                             tag: str | None = None, priority: int = PRIORITY_WRITE) -> None:
        """Function 0x06: one register."""
        _check_span(address, 1, 1)
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register value {value} is not a 16-bit word")
        pdu = WriteSingleRegisterRequest(address=address, registers=[value])
        await self._execute(pdu, unit_id, tag, priority)

    async def write_registers(self, address: int, values: list[int], *,
                              unit_id: int | None = None, tag: str | None = None,
                              priority: int = PRIORITY_WRITE) -> None:
        """Function 0x10: several consecutive registers in one request."""
        _check_span(address, len(values), MAX_WRITE_COUNT)
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError(f"register values {values} are not all 16-bit words")
        pdu = WriteMultipleRegistersRequest(address=address, registers=list(values))
        await self._execute(pdu, unit_id, tag, priority)

    # ---- the request/response cycle ----------------------------------------------------------

    async def _execute(self, request: ModbusPDU, unit_id: int | None, tag: str | None,
                       priority: int) -> ModbusPDU:
        unit = self.unit_id if unit_id is None else unit_id
        async with self._lock.hold(priority):
            if self._stream is None:
                wait = self._next_attempt_at - trio.current_time()
                if wait > 0:
                    raise DeviceConnectionError(
                        f"link down ({self.last_error or 'not connected'}); next reconnect in "
                        f"{wait:.1f} s", self._host, self._port)
                await self._open()
            cooldown = self._last_done_at + self.cooldown_s - trio.current_time()
            if cooldown > 0:
                await trio.sleep(cooldown)
            self._tid = self._tid % 0xFFFF + 1
            request.transaction_id = self._tid
            request.dev_id = unit
            self.stats.requests += 1
            try:
                with trio.move_on_after(self.timeout_s) as scope:
                    reply = await self._exchange(request, unit, tag)
                if scope.cancelled_caught:
                    err = ModbusTimeout(request.function_code, request.address, self.timeout_s)
                    await self._drop(err)
                    raise err
            except (ModbusProtocolError, DeviceConnectionError) as err:
                self.stats.errors += 1
                await self._drop(err)
                raise
            except ModbusTimeout:
                self.stats.errors += 1
                raise
            except (ModbusReadError, ModbusWriteError):
                self.stats.errors += 1
                raise
            except trio.Cancelled:
                # Abandoned mid-exchange: a late reply must not meet the next request.
                await self._drop(DeviceConnectionError("request cancelled mid-exchange"),
                                 fault=False)
                raise
            finally:
                self._last_done_at = trio.current_time()
            return reply

    async def _exchange(self, request: ModbusPDU, unit: int, tag: str | None) -> ModbusPDU:
        assert self._stream is not None
        stream = self._stream
        frame = self._framer.buildFrame(request)
        self._buf.clear()  # bytes that arrived before this request cannot be its reply
        try:
            await stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise DeviceConnectionError(f"send failed ({exc!r})", self._host,
                                        self._port) from exc
        self.stats.bytes_sent += len(frame)
        tid, reply_unit, pdu_bytes = await self._receive_frame(stream)
        return self._check_reply(request, unit, tag, tid, reply_unit, pdu_bytes)

    async def _receive_frame(self, stream: trio.abc.Stream) -> tuple[int, int, bytes]:
        while True:
            buf = self._buf
            if len(buf) >= 4 and (pid := int.from_bytes(buf[2:4], "big")) != 0:
                raise ModbusProtocolError(f"protocol id {pid} in the MBAP header (must be 0); "
                                          f"first bytes {bytes(buf[:12]).hex()}")
            if len(buf) >= 6:
                length = int.from_bytes(buf[4:6], "big")
                if not 2 <= length <= MAX_ADU - 6:
                    raise ModbusProtocolError(f"MBAP length {length} is outside 2..254")
                total = 6 + length
                if len(buf) >= total:
                    frame = bytes(buf[:total])
                    del buf[:total]
                    used, unit, tid, pdu_bytes = self._framer.decode(frame)
                    if used != total:
                        raise ModbusProtocolError(f"unframeable reply {frame.hex()}")
                    return tid, unit, pdu_bytes
            try:
                data = await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise DeviceConnectionError(f"receive failed ({exc!r})", self._host,
                                            self._port) from exc
            if not data:
                raise DeviceConnectionError("the device closed the connection", self._host,
                                            self._port)
            self.stats.bytes_received += len(data)
            buf += data

    def _check_reply(self, request: ModbusPDU, unit: int, tag: str | None, tid: int,
                     reply_unit: int, pdu_bytes: bytes) -> ModbusPDU:
        fc = request.function_code
        if tid != request.transaction_id:
            raise ModbusProtocolError(f"reply transaction id {tid} does not match request "
                                      f"{request.transaction_id}")
        if reply_unit != unit:
            raise ModbusProtocolError(f"reply from unit {reply_unit}, request was to unit {unit}")
        if not pdu_bytes or pdu_bytes[0] & 0x7F != fc:
            got = f"0x{pdu_bytes[0]:02X}" if pdu_bytes else "nothing"
            raise ModbusProtocolError(f"reply function {got} does not match request 0x{fc:02X}")
        if pdu_bytes[0] & 0x80:
            if len(pdu_bytes) != 2:
                raise ModbusProtocolError(f"malformed exception reply {pdu_bytes.hex()}")
            code = pdu_bytes[1]
            error_cls = ModbusReadError if fc in (FC_READ_HOLDING, FC_READ_INPUT) \
                else ModbusWriteError
            raise error_cls(tag, request.address, fc, code, unit)
        if fc in (FC_READ_HOLDING, FC_READ_INPUT):
            expected = 2 + 2 * request.count
            if len(pdu_bytes) != expected or pdu_bytes[1] != 2 * request.count:
                raise ModbusProtocolError(f"read reply of {len(pdu_bytes)} bytes for "
                                          f"{request.count} registers (expected {expected})")
        elif len(pdu_bytes) != 5:
            raise ModbusProtocolError(f"write reply of {len(pdu_bytes)} bytes (expected 5)")
        reply = self._framer.decoder.decode(pdu_bytes)
        if reply is None or isinstance(reply, ExceptionResponse):
            raise ModbusProtocolError(f"undecodable reply {pdu_bytes.hex()}")
        if isinstance(reply, ReadHoldingRegistersResponse):  # also the input-register reply
            if len(reply.registers) != request.count:
                raise ModbusProtocolError(f"{len(reply.registers)} registers in the reply, "
                                          f"{request.count} requested")
        elif isinstance(reply, WriteSingleRegisterResponse):
            if (reply.address, list(reply.registers)) != (request.address,
                                                          list(request.registers)):
                raise ModbusProtocolError(
                    f"write echo {reply.address}={list(reply.registers)} does not match "
                    f"{request.address}={list(request.registers)}")
        elif isinstance(reply, WriteMultipleRegistersResponse) and (
                (reply.address, reply.count) != (request.address, request.count)):
            raise ModbusProtocolError(
                f"write reply {reply.address}+{reply.count} does not match "
                f"{request.address}+{request.count}")
        return reply


def _check_span(address: int, count: int, max_count: int) -> None:
    if not 1 <= count <= max_count:
        raise ValueError(f"register count {count} is not 1..{max_count}")
    if address < 0 or address + count - 1 > 0xFFFF:
        raise ValueError(f"registers {address}..{address + count - 1} are not inside 0..65535")
