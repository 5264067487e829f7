"""Errors of the device I/O layer: one exception per failure domain, carrying what to act on.

Every message says what the operator should do next. The names are part of the runbook:
operators grep logs for ``ModbusReadError`` and ``ConnectionError``, so a lost peer is a
subclass of the builtin ``ConnectionError`` and read failures are ``ModbusReadError``.

Hierarchy::

    DeviceError
    ├── ProfileError                 the profile file is wrong (lists every problem at once)
    ├── CodecError (ValueError)      a value does not fit a tag's register type
    ├── TagWriteRefused              a write refused before anything was sent
    └── ModbusError
        ├── ModbusExceptionResponse  the device answered with an exception code
        │   ├── ModbusReadError
        │   └── ModbusWriteError
        ├── ModbusTimeout            no (matching) reply within the timeout
        ├── ModbusProtocolError      garbage or a mismatched frame from the peer
        └── DeviceConnectionError    (also builtin ConnectionError) the peer is gone
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from bessai.bounds import clip

# Modbus exception codes (function code | 0x80 replies) and what an operator should do.
EXCEPTION_NAMES: dict[int, str] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
    0x80: "permission denied",
}

EXCEPTION_ADVICE: dict[int, str] = {
    0x01: "the device does not support this function code; check the profile's register table "
    "(holding/input)",
    0x02: "the device has no register there; check the profile's address and block, and the unit "
    "id (Huawei: 1 via SDongle, 0 direct)",
    0x03: "the device rejected the value or the register count; check the profile's type, length "
    "and min/max",
    0x04: "the device reported an internal failure; check its own alarms, it will be retried",
    0x05: "the device accepted the request but is still processing it; it will be retried later",
    0x06: "the device is busy; it will be retried later (raise cooldown_s if this persists)",
    0x0A: "the Modbus gateway (SDongle) has no path to the device; check the unit id and the "
    "dongle's wiring",
    0x0B: "the device behind the Modbus gateway (SDongle) did not answer; check that it is "
    "powered and the unit id is right",
    0x80: "permission denied: the device refuses this register for this user; check the "
    "installer settings / that the register is writable on this firmware",
}


def describe_exception_code(code: int) -> str:
    """``0x02 (illegal data address)`` — the code as an operator reads it in a manual."""
    return f"0x{code:02X} ({EXCEPTION_NAMES.get(code, 'unknown exception')})"


class DeviceError(Exception):
    """Base of every device I/O error."""


@attrs.frozen
class ProfileProblem:
    """One problem in a profile file: where (file and JSON path) and what."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class ProfileError(DeviceError):
    """A profile that cannot be used, with EVERY problem found (not just the first)."""

    def __init__(self, file: str, problems: Iterable[ProfileProblem]) -> None:
        self.file = file
        self.problems: tuple[ProfileProblem, ...] = tuple(problems)
        n = len(self.problems)
        lines = [f"{file}: {n} problem{'s' if n != 1 else ''} in device profile — fix them and "
                 "reload:"]
        lines += [f"  {clip(p.path, 120)}: {clip(p.message, 400)}" for p in self.problems]
        super().__init__("\n".join(lines))


class CodecError(DeviceError, ValueError):
    """A value that cannot be encoded to, or registers that cannot be decoded as, a tag's type."""


class TagWriteRefused(DeviceError):
    """A write refused locally, before anything was sent to the device."""

    def __init__(self, tag: str, value: object, reason: str) -> None:
        self.tag = tag
        self.value = value
        self.reason = reason
        super().__init__(f"write {tag}={value!r} refused before sending: {reason}")


class ModbusError(DeviceError):
    """Base of errors talking Modbus to the device."""


class ModbusExceptionResponse(ModbusError):
    """The device answered a request with a Modbus exception code."""

    verb = "request"

    def __init__(self, tag: str | None, address: int, function: int, code: int,
                 unit_id: int | None = None) -> None:
        self.tag = tag
        self.address = address
        self.function = function
        self.code = code
        self.unit_id = unit_id
        what = f"tag {tag!r} at address {address}" if tag else f"address {address}"
        unit = f" unit {unit_id}" if unit_id is not None else ""
        advice = EXCEPTION_ADVICE.get(code, "see the device's Modbus manual for this code")
        super().__init__(
            f"{type(self).__name__}: {self.verb} of {what} (function 0x{function:02X}{unit}) "
            f"failed with exception {describe_exception_code(code)}: {advice}"
        )

    @property
    def retryable(self) -> bool:
        """Busy/acknowledge/device-failure replies are worth retrying later; the others are not."""
        return self.code in (0x04, 0x05, 0x06, 0x0B)


class ModbusReadError(ModbusExceptionResponse):
    """A read answered with an exception code (the runbook greps for this name)."""

    verb = "read"


class ModbusWriteError(ModbusExceptionResponse):
    """A write answered with an exception code."""

    verb = "write"


class ModbusTimeout(ModbusError, TimeoutError):
    """No matching reply within the request timeout."""

    def __init__(self, function: int, address: int, timeout_s: float) -> None:
        self.function = function
        self.address = address
        self.timeout_s = timeout_s
        super().__init__(
            f"ModbusTimeout: no reply to function 0x{function:02X} at address {address} within "
            f"{timeout_s:g} s — the device may be slow (Huawei SDongle: raise timeout_s to 10), "
            "busy, or unreachable; the connection will be reopened"
        )


class ModbusProtocolError(ModbusError):
    """The peer sent bytes that are not a valid reply to the request in flight."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"ModbusProtocolError: {detail} — the peer is not speaking Modbus TCP as expected "
            "(wrong port, a second client on a one-client device, or a faulty gateway); the "
            "connection will be reopened"
        )


class ModbusCrcError(ModbusProtocolError):
    """An RTU frame whose CRC does not match its bytes (noise on the RS485 line)."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        ModbusError.__init__(
            self,
            f"ModbusCrcError: RTU frame {frame[:32].hex()} fails its CRC — noise on the line: "
            "check the RS485 wiring (A/B not swapped, a common ground, 120 Ω termination at both "
            "ends of the bus) and that SERIAL_BAUDRATE/SERIAL_PARITY match the device",
        )
        self.detail = "CRC mismatch"


class ModbusFrameTruncated(ModbusProtocolError):
    """An RTU frame that stopped before its end (the line went quiet mid-frame)."""

    def __init__(self, got: bytes, expected: int) -> None:
        self.got = got
        self.expected = expected
        ModbusError.__init__(
            self,
            f"ModbusFrameTruncated: the RTU reply stopped after {len(got)} of {expected} bytes "
            f"({got[:32].hex()}) — a loose RS485 connection, a baud rate or parity that does not "
            "match the device, or two masters on one bus",
        )
        self.detail = "truncated frame"


class DeviceConnectionError(ModbusError, ConnectionError):
    """The connection to the device is lost or cannot be opened (a builtin ConnectionError)."""

    def __init__(self, detail: str, host: str | None = None, port: int | None = None) -> None:
        self.detail = detail
        self.host = host
        self.port = port
        where = f" to {host}:{port}" if host is not None else ""
        super().__init__(
            f"ConnectionError{where}: {detail} — check that the device is powered and reachable "
            "(ping INVERTER_IP, port 502 or 6607) and that no other Modbus client holds its only "
            "connection; reconnecting with backoff"
        )
