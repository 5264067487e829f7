"""A serial port (USB-RS485 adapter, a pty in tests) as a Trio stream, for Modbus RTU.

pyserial sets the line (baud rate, parity, stop bits, 8 data bits, raw mode) — the termios
details it gets right on every platform are not worth writing again; then the descriptor is
handed, non-blocking, to ``trio.lowlevel.FdStream``, so reads and writes wait in Trio's I/O
loop with no thread. Closing the stream closes the port.

Invariant: only this module touches the port's settings; `bessai.device.framing.RtuFraming`
keeps the frame timing.
"""

from __future__ import annotations

import os
import termios
from collections.abc import Awaitable, Callable

import attrs
import trio

PARITIES = {"N": "N", "E": "E", "O": "O"}
STOPBITS = (1, 2)


@attrs.frozen
class SerialSettings:
    """One serial line. Huawei SUN2000 COM port: 9600 8N1."""

    port: str
    baudrate: int = attrs.field(default=9600, validator=attrs.validators.gt(0))
    parity: str = attrs.field(default="N", validator=attrs.validators.in_(PARITIES))
    stopbits: int = attrs.field(default=1, validator=attrs.validators.in_(STOPBITS))

    def __str__(self) -> str:
        return f"{self.port}@{self.baudrate}-8{self.parity}{self.stopbits}"


class SerialStream(trio.abc.Stream):
    """``FdStream`` over a configured port; keeps the pyserial object to close the port."""

    def __init__(self, port: object, fd: int) -> None:
        self._port = port
        self._fd_stream = trio.lowlevel.FdStream(fd)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._fd_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._fd_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._fd_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        try:
            await self._fd_stream.aclose()
        finally:
            self._port.close()  # type: ignore[attr-defined]


def open_serial(settings: SerialSettings) -> SerialStream:
    """Open and configure the port now (raises OSError if it cannot be opened)."""
    import serial  # pyserial

    try:
        port = serial.Serial(settings.port, baudrate=settings.baudrate, bytesize=8,
                             parity=settings.parity, stopbits=settings.stopbits, timeout=None,
                             exclusive=True)
    except (serial.SerialException, ValueError) as exc:
        raise OSError(f"cannot open serial port {settings}: {exc}") from exc
    # pyserial leaves VMIN=0 (it times reads with select): then a read with nothing to read
    # returns 0 bytes — end-of-file to a stream — instead of EAGAIN, even non-blocking.
    # VMIN=1, VTIME=0 makes an empty line wait in Trio's I/O loop like a socket.
    fd = os.dup(port.fileno())  # FdStream owns (and closes) its own descriptor
    attributes = termios.tcgetattr(fd)
    attributes[6][termios.VMIN] = 1
    attributes[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attributes)
    return SerialStream(port, fd)


def serial_stream_factory(settings: SerialSettings) -> Callable[[], Awaitable[trio.abc.Stream]]:
    """A factory opening the serial port (what `ModbusConnection` reconnects through)."""

    async def connect() -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        return open_serial(settings)

    connect.port_name = settings.port  # type: ignore[attr-defined]
    return connect
