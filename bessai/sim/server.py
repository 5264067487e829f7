"""Modbus server on Trio (TCP, RTU over TCP, RTU on a serial line) from pymodbus's pieces.

The job: turn bytes on a ``trio.abc.Stream`` into pymodbus request objects
(``FramerSocket(DecodePDU(is_server=True))``), let each request run its own
``datastore_update(context, device_id)`` against a context of ours (it only awaits
``async_getValues`` / ``async_setValues``), and frame the answer back. No asyncio loop, no threads.

Invariants:

* Requests on one connection are answered in order, one at a time (like the inverter).
* Only function codes 3/4 (read holding/input), 6 (write single) and 16 (write multiple) are
  served;
  anything else gets exception 0x01. A request for another unit id gets 0x0B (gateway target
  failed to respond), as pymodbus's own server does for a missing device.
* With ``single_client`` a new connection closes the previous one (Huawei accepts one client).
* Faults (:class:`~bessai.sim.faults.Faults`) are consulted per request: drop, silent, delay,
  busy (always, or while the connection is younger than ``busy_after_connect_s``).
* A garbage frame (protocol id not 0, length beyond the Modbus maximum) closes the connection:
  there is no way to resynchronise a TCP byte stream after it.
* With ``framer="rtu"`` frames are RTU (unit, PDU, CRC) on the same streams: a frame that fails
  its CRC is dropped unanswered, as a device on an RS485 bus does; a request for a unit id this
  endpoint does not serve is not answered either (another device on the bus would).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs
import trio
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from bessai.sim.faults import Faults
from bessai.sim.logfmt import log

SERVED_FUNCTION_CODES = frozenset({3, 4, 6, 16})
MBAP_LEN = 7
MAX_ADU = 260  # 7-byte MBAP + 253-byte PDU


class RegisterContext(Protocol):
    """What a pymodbus request's ``datastore_update`` needs from a datastore."""

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | ExcCodes: ...

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> int | None: ...


class _Closed(Exception):
    """The session must end (fault ``drop`` or an unrecoverable frame)."""


@attrs.define(eq=False)
class _Session:
    peer: str
    stream: trio.abc.Stream
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    opened_at: float = attrs.field(factory=trio.current_time)


@attrs.define(eq=False)
class ModbusEndpoint:
    """Serves register contexts (one per connection, from ``context_for(peer)``) over streams.

    Any number of connections at once, or one with ``single_client``.
    """

    context_for: Callable[[str], RegisterContext]
    unit_id: int = attrs.field(
        default=1, validator=[attrs.validators.ge(0), attrs.validators.le(255)]
    )
    faults: Faults = attrs.field(factory=Faults)
    units: dict[int, tuple[Callable[[str], RegisterContext], Faults]] = attrs.field(factory=dict)
    """Further unit ids served on the same connections (a SmartLogger or SDongle in front of
    several inverters): unit id → (its context factory, its own faults)."""
    single_client: bool = True
    framer: str = attrs.field(default="socket", validator=attrs.validators.in_(("socket", "rtu")))
    on_request: Callable[[], None] | None = None
    requests_served: int = 0
    connections_total: int = 0
    _sessions: list[_Session] = attrs.field(factory=list)
    _ids: itertools.count[int] = attrs.field(factory=itertools.count)

    @property
    def connected_peers(self) -> list[str]:
        return [s.peer for s in self._sessions]

    def drop_connections(self, reason: str = "fault_drop") -> int:
        """Close every open connection now; returns how many."""
        sessions = list(self._sessions)
        for s in sessions:
            log(logging.INFO, "client_dropped", peer=s.peer, reason=reason)
            s.scope.cancel()
        return len(sessions)

    async def serve_stream(self, stream: trio.abc.Stream, peer: str | None = None) -> None:
        """Serve one connection until the peer closes it, it is dropped or we are cancelled."""
        peer = peer or _peer_name(stream, next(self._ids))
        if self.single_client and self._sessions:
            self.drop_connections(reason="new_client")
        session = _Session(peer=peer, stream=stream)
        self._sessions.append(session)
        self.connections_total += 1
        log(logging.INFO, "client_connected", peer=peer, clients=len(self._sessions))
        reason = "peer_closed"
        try:
            with session.scope:
                reason = await self._session_loop(session)
            if session.scope.cancelled_caught:
                reason = "dropped"
        finally:
            self._sessions.remove(session)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            log(logging.INFO, "client_disconnected", peer=peer, reason=reason)

    async def _session_loop(self, session: _Session) -> str:
        if self.framer == "rtu":
            return await self._rtu_session_loop(session)
        framer = FramerSocket(DecodePDU(is_server=True))
        contexts: dict[int, RegisterContext] = {}
        buf = b""
        while True:
            try:
                data = await session.stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return "peer_reset"
            if not data:
                return "peer_closed"
            buf += data
            while len(buf) >= MBAP_LEN:
                pid = int.from_bytes(buf[2:4], "big")
                length = int.from_bytes(buf[4:6], "big")
                if pid != 0 or length < 2 or length + 6 > MAX_ADU:
                    log(
                        logging.WARNING,
                        "bad_frame",
                        peer=session.peer,
                        protocol_id=pid,
                        length=length,
                    )
                    return "bad_frame"
                used, dev_id, tid, pdu_bytes = framer.decode(buf)
                if not used:
                    break  # wait for the rest of the frame
                buf = buf[used:]
                ended = await self._serve(session, framer, contexts, dev_id, tid, pdu_bytes)
                if ended is not None:
                    return ended

    async def _rtu_session_loop(self, session: _Session) -> str:
        framer = FramerRTU(DecodePDU(is_server=True))
        contexts: dict[int, RegisterContext] = {}
        buf = b""
        while True:
            try:
                with trio.move_on_after(0.5) as quiet:
                    data = await session.stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return "peer_reset"
            if quiet.cancelled_caught:  # silence ends a frame: a partial one is dropped
                if buf:
                    log(logging.WARNING, "bad_frame", peer=session.peer, partial=buf[:16].hex())
                buf = b""
                continue
            if not data:
                return "peer_closed"
            buf += data
            while buf:
                used, dev_id, tid, pdu_bytes = framer.decode(buf)
                if not used:
                    break  # wait for the rest of the frame
                buf = buf[used:]
                if not pdu_bytes:  # CRC failure: a device stays silent
                    log(logging.WARNING, "bad_crc", peer=session.peer)
                    continue
                if dev_id != self.unit_id and dev_id not in self.units:
                    continue  # another device's frame on the bus
                ended = await self._serve(session, framer, contexts, dev_id, tid, pdu_bytes)
                if ended is not None:
                    return ended

    async def _serve(self, session: _Session, framer: Any, contexts: dict[int, RegisterContext],
                     dev_id: int, tid: int, pdu_bytes: bytes) -> str | None:
        """Answer one request frame on ``session`` (either framing); why the session ended, or
        None to go on. Each unit id gets its own register context on first use."""
        if dev_id not in contexts:
            factory = self.units[dev_id][0] if dev_id in self.units else self.context_for
            contexts[dev_id] = factory(session.peer)
        try:
            answer = await self._answer(
                contexts[dev_id], framer, dev_id, tid, pdu_bytes, session.opened_at
            )
        except _Closed:
            return "dropped"
        if answer is not None:
            try:
                await session.stream.send_all(answer)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return "peer_reset"
        return None

    async def _answer(
        self,
        context: RegisterContext,
        framer: FramerSocket | FramerRTU,
        dev_id: int,
        tid: int,
        pdu_bytes: bytes,
        opened_at: float,
    ) -> bytes | None:
        if self.on_request is not None:
            self.on_request()
        faults = self.units[dev_id][1] if dev_id in self.units else self.faults
        warming_up = trio.current_time() - opened_at < faults.busy_after_connect_s
        if faults.drop_on_request:
            faults.drop_on_request = False
            raise _Closed
        if faults.silent:
            return None
        if faults.delay_s > 0:
            await trio.sleep(faults.delay_s)
        fc = pdu_bytes[0] & 0x7F
        response: ModbusPDU
        if faults.busy or warming_up:
            response = ExceptionResponse(fc, ExcCodes.DEVICE_BUSY)
        elif dev_id != self.unit_id and dev_id not in self.units:
            response = ExceptionResponse(fc, ExcCodes.GATEWAY_NO_RESPONSE)
        elif fc not in SERVED_FUNCTION_CODES:
            response = ExceptionResponse(fc, ExcCodes.ILLEGAL_FUNCTION)
        elif (request := framer.decoder.decode(pdu_bytes)) is None:
            response = ExceptionResponse(fc, ExcCodes.ILLEGAL_VALUE)
        else:
            request.dev_id, request.transaction_id = dev_id, tid
            try:
                # pymodbus types the context as its own ModbusDeviceContext; a request only
                # awaits async_getValues/async_setValues, which RegisterContext declares
                response = await request.datastore_update(context, dev_id)  # type: ignore[arg-type]
            except Exception as exc:  # a bug in our context must not kill the server
                log(logging.ERROR, "request_failed", function_code=fc, error=repr(exc))
                response = ExceptionResponse(fc, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = tid
        response.dev_id = dev_id
        self.requests_served += 1
        return framer.buildFrame(response)

    async def serve_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 5020,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0 picks a free port) and serve every connection.

        Reports the bound ``(host, port)`` through ``task_status``.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        log(logging.INFO, "SIM_LISTENING", host=bound[0], port=bound[1], unit_id=self.unit_id,
            units=",".join(str(u) for u in [self.unit_id, *self.units]),
            single_client=self.single_client)

        async def handler(stream: trio.SocketStream) -> None:
            await self.serve_stream(stream)

        async with trio.open_nursery() as nursery:
            task_status.started((bound[0], bound[1]))
            await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


def _peer_name(stream: trio.abc.Stream, n: int) -> str:
    sock = getattr(stream, "socket", None)
    if sock is not None:
        try:
            host, port = sock.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            pass
    return f"memory#{n}"


StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]
