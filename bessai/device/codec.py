"""Register codec: a tag's registers to its value in engineering units, and back.

Registers are 16-bit words, big-endian inside; multi-register values are most significant word
first (Huawei's, SunSpec's order) unless the tag says ``word_order: little`` (CDAB). Coils and
discrete inputs (``bool`` tags) are one bit each, carried here as a one-item list of 0/1.
A ``scale_factor`` is applied by the driver, which has the other tag's reading (`apply_scale`).
Invariants:

- ``decode`` never raises on a value the device may legally send: a raw pattern listed in the
  tag's ``invalid`` sentinels (or a NaN float) becomes an invalid :class:`TagReading` with the
  reason, never a number that safety could trust;
- ``decode(tag, encode(tag, v))`` gives ``v`` back (to the tag's resolution, ``1 / gain``) for
  every value that ``encode`` accepts;
- ``encode`` raises :class:`CodecError` for values the type cannot hold; it never wraps around.
"""

from __future__ import annotations

import math
import struct

from bessai.device.errors import CodecError
from bessai.device.profile import RegisterType, Tag, WordOrder
from bessai.model import TagReading

_SIGNED = {RegisterType.I16, RegisterType.I32, RegisterType.I64}


def raw_range(tag: Tag) -> tuple[int, int]:
    """Smallest and largest integer (before gain) that ``tag``'s registers can hold."""
    bits = 16 * tag.count
    if tag.type in _SIGNED:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def registers_to_uint(registers: list[int]) -> int:
    """Big-endian word order: the first register is the most significant."""
    raw = 0
    for word in registers:
        raw = (raw << 16) | word
    return raw


def uint_to_registers(raw: int, count: int) -> list[int]:
    return [(raw >> (16 * (count - 1 - i))) & 0xFFFF for i in range(count)]


def _ordered(tag: Tag, registers: list[int]) -> list[int]:
    """Registers most significant first (the tag's wire order undone, or applied: its own
    inverse)."""
    if tag.word_order is WordOrder.LITTLE and tag.type is not RegisterType.STRING:
        return list(reversed(registers))
    return list(registers)


def _check_registers(tag: Tag, registers: list[int]) -> None:
    if len(registers) != tag.count:
        raise CodecError(f"tag {tag.name!r} ({tag.type}) spans {tag.count} register(s), got "
                         f"{len(registers)}")
    for word in registers:
        if not 0 <= word <= 0xFFFF:
            raise CodecError(f"tag {tag.name!r}: register value {word} is not a 16-bit word")


def _scale(tag: Tag, raw: int | float) -> int | float:
    if tag.gain == 1:
        return raw
    return raw / tag.gain


def decode(tag: Tag, registers: list[int]) -> TagReading:
    """The tag's reading from its registers: scaled by gain, or invalid with the reason."""
    _check_registers(tag, registers)
    if tag.type is RegisterType.BOOL:
        return TagReading(1 if registers[0] else 0)
    raw = registers_to_uint(_ordered(tag, registers))
    if raw in tag.invalid:
        return TagReading(None, valid=False,
                          reason=f"invalid_sentinel 0x{raw:0{4 * tag.count}X}")
    if tag.type is RegisterType.STRING:
        text = raw.to_bytes(2 * tag.count, "big").decode("utf-8", errors="replace")
        return TagReading(text.rstrip("\x00 ").lstrip("\x00"))
    if tag.type is RegisterType.BITFIELD:
        return TagReading(raw)
    if tag.type in (RegisterType.F32, RegisterType.F64):
        size = 2 * tag.count
        (value,) = struct.unpack(">f" if size == 4 else ">d", raw.to_bytes(size, "big"))
        if math.isnan(value) or math.isinf(value):
            return TagReading(None, valid=False, reason=f"not_a_number 0x{raw:0{2 * size}X}")
        return TagReading(value / tag.gain)
    if tag.type in _SIGNED and raw >= 1 << (16 * tag.count - 1):
        raw -= 1 << (16 * tag.count)
    return TagReading(_scale(tag, raw))


def decode_value(tag: Tag, registers: list[int]) -> int | float | str | None:
    """Just the value (None when invalid)."""
    return decode(tag, registers).value


def encode(tag: Tag, value: int | float | str) -> list[int]:
    """The registers that make the device hold ``value`` (in the tag's unit) in ``tag``."""
    if tag.type is RegisterType.STRING:
        if not isinstance(value, str):
            raise CodecError(f"tag {tag.name!r} is a string; got {value!r}")
        data = value.encode("utf-8")
        if len(data) > 2 * tag.count:
            raise CodecError(f"tag {tag.name!r} holds {2 * tag.count} bytes; {value!r} is "
                             f"{len(data)}")
        return uint_to_registers(int.from_bytes(data.ljust(2 * tag.count, b"\x00"), "big"),
                                 tag.count)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"tag {tag.name!r} ({tag.type}) needs a number; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"tag {tag.name!r}: {value!r} cannot be written")
    if tag.type is RegisterType.BOOL:
        if value not in (0, 1):
            raise CodecError(f"tag {tag.name!r} is a coil: write 0 or 1, not {value!r}")
        return [int(value)]
    if tag.type in (RegisterType.F32, RegisterType.F64):
        fmt = ">f" if tag.type is RegisterType.F32 else ">d"
        try:
            packed = struct.pack(fmt, value * tag.gain)
        except OverflowError as exc:
            raise CodecError(f"tag {tag.name!r}: {value!r} does not fit a {tag.type} "
                             "float") from exc
        return _ordered(tag, uint_to_registers(int.from_bytes(packed, "big"), tag.count))
    gain = 1 if tag.type is RegisterType.BITFIELD else tag.gain
    raw = round(value * gain)
    lo, hi = raw_range(tag)
    if not lo <= raw <= hi:
        raise CodecError(f"tag {tag.name!r} ({tag.type}, gain {gain:g}): {value!r} is raw {raw}, "
                         f"outside {lo}..{hi}")
    if raw < 0:
        raw += 1 << (16 * tag.count)
    return _ordered(tag, uint_to_registers(raw, tag.count))


def apply_scale(reading: TagReading, scale: TagReading | None, sf_tag: str) -> TagReading:
    """``reading`` times 10**(scale factor), or invalid when the scale factor is not known.

    SunSpec marks an unimplemented scale factor 0x8000 (listed in the sf tag's ``invalid``);
    a value without a valid scale is unsafe and is never passed on unscaled."""
    if not reading.valid or reading.value is None:
        return reading
    if scale is None or not scale.valid or not isinstance(scale.value, int | float):
        why = "not read" if scale is None else (scale.reason or "invalid")
        return TagReading(None, valid=False, reason=f"scale_factor {sf_tag} {why}")
    exponent = int(scale.value)
    if not -10 <= exponent <= 10:
        return TagReading(None, valid=False,
                          reason=f"scale_factor {sf_tag}={exponent} outside -10..10")
    value = reading.value
    if not isinstance(value, int | float):
        return reading
    scaled = value * 10.0**exponent if exponent < 0 else value * 10**exponent
    return TagReading(round(scaled, 10) if isinstance(scaled, float) else scaled)
