"""How Modbus frames look on one kind of wire: MBAP (Modbus TCP) here, RTU beside it.

A framing builds the bytes of a request and cuts replies out of the bytes received, using
pymodbus's transport-free framers. It does not own the stream and keeps no connection state
beyond what its wire needs (RTU: when the line went quiet). `ModbusConnection` drives it.

Invariants: ``parse`` never raises anything but ``ModbusProtocolError`` (and its typed
subclasses); it consumes exactly one frame's bytes, or none while the frame is incomplete.
"""

from __future__ import annotations

from typing import Protocol

import trio
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU

from bessai.device.errors import ModbusProtocolError

MBAP_HEADER = 7
MAX_ADU = 260  # MBAP (7) + PDU (253)
STALE_TIDS = 16
"""How many transaction ids back a reply may be and still count as a late answer to a request
that already timed out (discarded, not a protocol error)."""


class Framing(Protocol):
    """One wire format; see the module docstring."""

    name: str
    survives_timeout: bool
    """Whether a late reply can be told apart from the next one (MBAP: transaction ids), so a
    timed-out request need not cost the connection."""

    def reset(self) -> None: ...

    def build(self, request: ModbusPDU, unit: int, tid: int) -> bytes: ...

    async def before_send(self) -> None: ...

    def sent(self, frame: bytes) -> None: ...

    def parse(self, buf: bytearray) -> tuple[int, int, bytes] | None: ...

    async def receive(self, stream: trio.abc.Stream) -> bytes: ...

    def matches(self, got_tid: int, tid: int) -> bool: ...

    def is_stale(self, got_tid: int, tid: int) -> bool: ...


class MbapFraming:
    """Modbus TCP: a 7-byte MBAP header (transaction id, protocol 0, length, unit) per frame."""

    name = "tcp"
    survives_timeout = True

    def __init__(self) -> None:
        self._framer = FramerSocket(DecodePDU(is_server=False))

    @property
    def decoder(self) -> DecodePDU:
        return self._framer.decoder

    def reset(self) -> None:
        pass

    def build(self, request: ModbusPDU, unit: int, tid: int) -> bytes:
        request.transaction_id = tid
        request.dev_id = unit
        return self._framer.buildFrame(request)

    async def before_send(self) -> None:
        pass

    def sent(self, frame: bytes) -> None:
        pass

    def parse(self, buf: bytearray) -> tuple[int, int, bytes] | None:
        if len(buf) >= 4 and (pid := int.from_bytes(buf[2:4], "big")) != 0:
            raise ModbusProtocolError(f"protocol id {pid} in the MBAP header (must be 0); "
                                      f"first bytes {bytes(buf[:12]).hex()}")
        if len(buf) < 6:
            return None
        length = int.from_bytes(buf[4:6], "big")
        if not 2 <= length <= MAX_ADU - 6:
            raise ModbusProtocolError(f"MBAP length {length} is outside 2..254")
        total = 6 + length
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        del buf[:total]
        used, unit, tid, pdu_bytes = self._framer.decode(frame)
        if used != total:
            raise ModbusProtocolError(f"unframeable reply {frame.hex()}")
        return tid, unit, pdu_bytes

    async def receive(self, stream: trio.abc.Stream) -> bytes:
        return await stream.receive_some(4096)

    def matches(self, got_tid: int, tid: int) -> bool:
        return got_tid == tid

    def is_stale(self, got_tid: int, tid: int) -> bool:
        back = (tid - got_tid) % 0xFFFF
        return 0 < back <= STALE_TIDS
