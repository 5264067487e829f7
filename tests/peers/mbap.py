"""A byte-level Modbus TCP peer on Trio in-memory streams, for tests in virtual time.

It speaks raw MBAP frames so a test can misbehave in ways a real server will not (garbage, a
wrong transaction/unit/function, silence, hang-ups, an answer that comes late): the test gives a
``handler(tid, unit, pdu)`` that returns the reply bytes, None for no reply, or ``CLOSE`` to
hang up. Behaviour against a real, independent server is tested with `pymodbus_server`.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

import trio
import trio.testing

CLOSE = b"CLOSE"
"""A handler's reply that makes the peer hang up instead of answering."""

Handler = Callable[[int, int, bytes], Awaitable[bytes | None]]


def mbap(tid: int, unit: int, pdu: bytes, pid: int = 0) -> bytes:
    """One Modbus TCP frame: the MBAP header, then ``pdu``."""
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1, unit) + pdu


def parse_request(data: bytes) -> tuple[int, int, bytes]:
    """(transaction id, unit id, PDU) of one MBAP frame."""
    tid, _pid, length, unit = struct.unpack(">HHHB", data[:7])
    return tid, unit, data[7:6 + length]


class BytePeer:
    """The device side of in-memory connections, answering each request by ``handler``;
    ``requests`` keeps (Trio time, tid, unit, pdu) of every request, ``connections`` counts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[float, int, int, bytes]] = []

    async def serve(self, stream: trio.abc.Stream) -> None:
        buf = b""
        try:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buf += data
                while len(buf) >= 7 and len(buf) >= 6 + struct.unpack(">H", buf[4:6])[0]:
                    n = 6 + struct.unpack(">H", buf[4:6])[0]
                    frame, buf = buf[:n], buf[n:]
                    tid, unit, pdu = parse_request(frame)
                    self.requests.append((trio.current_time(), tid, unit, pdu))
                    reply = await self.handler(tid, unit, pdu)
                    if reply == CLOSE:
                        await stream.aclose()
                        return
                    if reply:
                        await stream.send_all(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def stream_factory(self, nursery: trio.Nursery) -> Callable[[], Awaitable[trio.abc.Stream]]:
        """A connect function for `ModbusClient`/`ModbusConnection`: each call opens a new
        in-memory connection served by this peer in ``nursery``."""

        async def connect() -> trio.abc.Stream:
            client_side, device_side = trio.testing.memory_stream_pair()
            self.connections += 1
            nursery.start_soon(self.serve, device_side)
            return client_side

        return connect
