"""How Modbus frames look on one kind of wire: MBAP (Modbus TCP) and RTU (serial, or over TCP).

A framing builds the bytes of a request and cuts replies out of the bytes received, using
pymodbus's transport-free framers. It does not own the stream and keeps no connection state
beyond what its wire needs (RTU: when the line went quiet). `ModbusConnection` drives it.

Invariants: ``parse`` never raises anything but ``ModbusProtocolError`` (and its typed
subclasses ``ModbusCrcError``, ``ModbusFrameTruncated``); it consumes exactly one frame's bytes,
or none while the frame is incomplete. RTU keeps the inter-frame silence of the Modbus over
Serial Line spec (3.5 character times, 1.75 ms above 19200 baud) before every request, and a
frame that stops for longer than its ``truncation_gap_s`` is a typed error, not a timeout.
"""

from __future__ import annotations

from typing import Protocol

import trio
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU

from bessai.device.errors import ModbusCrcError, ModbusFrameTruncated, ModbusProtocolError

MBAP_HEADER = 7
MAX_ADU = 260  # MBAP (7) + PDU (253)
STALE_TIDS = 16
"""How many transaction ids back a reply may be and still count as a late answer to a request
that already timed out (discarded, not a protocol error)."""


class Framing(Protocol):
    """One wire format; see the module docstring."""

    name: str
    drops_on_garbage: bool
    survives_timeout: bool
    """Whether a late reply can be told apart from the next one (MBAP: transaction ids), so a
    timed-out request need not cost the connection."""

    @property
    def decoder(self) -> DecodePDU:
        """pymodbus's PDU decoder for this wire format's replies."""

    def reset(self) -> None: ...

    def build(self, request: ModbusPDU, unit: int, tid: int) -> bytes: ...

    async def before_send(self) -> None: ...

    def sent(self, frame: bytes) -> None: ...

    def parse(self, buf: bytearray) -> tuple[int, int, bytes] | None: ...

    async def receive(self, stream: trio.abc.Stream,
                      buf: bytearray | None = None) -> bytes | bytearray: ...

    def clear_stale(self, buf: bytearray) -> None: ...

    def matches(self, got_tid: int, tid: int) -> bool: ...

    def is_stale(self, got_tid: int, tid: int) -> bool: ...


class MbapFraming:
    """Modbus TCP: a 7-byte MBAP header (transaction id, protocol 0, length, unit) per frame."""

    name = "tcp"
    survives_timeout = True
    drops_on_garbage = True
    """A byte stream out of step cannot be resynchronised: close and reconnect."""

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

    async def receive(self, stream: trio.abc.Stream,
                      buf: bytearray | None = None) -> bytes | bytearray:
        return await stream.receive_some(4096)

    def clear_stale(self, buf: bytearray) -> None:
        """Late replies stay: they are recognised by their transaction id and skipped."""

    def matches(self, got_tid: int, tid: int) -> bool:
        return got_tid == tid

    def is_stale(self, got_tid: int, tid: int) -> bool:
        back = (tid - got_tid) % 0xFFFF
        return 0 < back <= STALE_TIDS


def char_time_s(baudrate: int) -> float:
    """One RTU character on the wire: 11 bits (start, 8 data, parity or a second stop, stop)."""
    return 11.0 / baudrate


def frame_gap_s(baudrate: int | None) -> float:
    """The silence that separates two RTU frames: 3.5 characters, fixed at 1.75 ms above
    19200 baud (Modbus over Serial Line V1.02, 2.5.1.1). No baud rate (RTU over TCP): none."""
    if baudrate is None:
        return 0.0
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_time_s(baudrate)


_FIXED_REPLY = {0x05: 8, 0x06: 8, 0x0F: 8, 0x10: 8}
"""Reply lengths (unit, function, 4 bytes, CRC) of the write functions."""
_COUNTED_REPLY = (0x01, 0x02, 0x03, 0x04)
"""Read replies: unit, function, byte count, data, CRC."""


def rtu_reply_length(buf: bytes | bytearray) -> int | None:
    """The length of the RTU reply starting ``buf``, None until enough is there to tell.
    Raises ModbusProtocolError for a function a client never asked for."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return 5  # unit, function | 0x80, exception code, CRC
    if fc in _FIXED_REPLY:
        return _FIXED_REPLY[fc]
    if fc in _COUNTED_REPLY:
        return None if len(buf) < 3 else 5 + buf[2]
    raise ModbusProtocolError(f"RTU reply with function 0x{fc:02X} (first bytes "
                              f"{bytes(buf[:8]).hex()})")


class RtuFraming:
    """Modbus RTU: unit, PDU, CRC-16; frames separated by silence, no transaction ids.

    ``baudrate`` (serial) sets the inter-frame silence and the truncation gap; over TCP (an
    RS485-to-Ethernet converter) there is no character timing, and a frame that stops for
    ``truncation_gap_s`` (0.5 s) is truncated."""

    name = "rtu"
    drops_on_garbage = False
    """Frames are delimited by silence: after a bad frame the next request starts clean."""
    survives_timeout = True
    """A timed-out request keeps the line: bytes left from it are discarded before the next
    request, and a late reply that still slips in fails the unit/function check."""

    def __init__(self, baudrate: int | None = None, truncation_gap_s: float | None = None
                 ) -> None:
        self._framer = FramerRTU(DecodePDU(is_server=False))
        self.baudrate = baudrate
        self.gap_s = frame_gap_s(baudrate)
        if truncation_gap_s is None:
            truncation_gap_s = 0.5 if baudrate is None else max(0.05, 8 * self.gap_s)
        self.truncation_gap_s = truncation_gap_s
        self._quiet_since = -1e18  # Trio time of the last byte on the line

    @property
    def decoder(self) -> DecodePDU:
        return self._framer.decoder

    @property
    def name_with_speed(self) -> str:
        return self.name if self.baudrate is None else f"{self.name}@{self.baudrate}"

    def reset(self) -> None:
        self._quiet_since = -1e18

    def build(self, request: ModbusPDU, unit: int, tid: int) -> bytes:
        request.transaction_id = 0
        request.dev_id = unit
        return self._framer.buildFrame(request)

    async def before_send(self) -> None:
        wait = self._quiet_since + self.gap_s - trio.current_time()
        if wait > 0:
            await trio.sleep(wait)

    def sent(self, frame: bytes) -> None:
        # The frame occupies the line for its characters: the reply cannot start before.
        duration = len(frame) * char_time_s(self.baudrate) if self.baudrate else 0.0
        self._quiet_since = trio.current_time() + duration

    def parse(self, buf: bytearray) -> tuple[int, int, bytes] | None:
        needed = rtu_reply_length(buf)
        if needed is None or len(buf) < needed:
            return None
        frame = bytes(buf[:needed])
        del buf[:needed]
        crc = int.from_bytes(frame[-2:], "big")
        if not FramerRTU.check_CRC(frame[:-2], crc):
            raise ModbusCrcError(frame)
        return 0, frame[0], frame[1:-2]

    async def receive(self, stream: trio.abc.Stream,
                      buf: bytearray | None = None) -> bytes | bytearray:
        """Bytes from the line; mid-frame silence longer than the truncation gap is an error."""
        if not buf:
            data = await stream.receive_some(256)
        else:
            with trio.move_on_after(self.truncation_gap_s):
                data = await stream.receive_some(256)
                self._quiet_since = trio.current_time()
                return data
            expected = rtu_reply_length(buf) or len(buf) + 1
            got = bytes(buf)
            buf.clear()
            raise ModbusFrameTruncated(got, expected)
        self._quiet_since = trio.current_time()
        return data

    def clear_stale(self, buf: bytearray) -> None:
        """Before a request: whatever is in the buffer belongs to an earlier exchange."""
        buf.clear()

    def matches(self, got_tid: int, tid: int) -> bool:
        return True

    def is_stale(self, got_tid: int, tid: int) -> bool:
        return False
