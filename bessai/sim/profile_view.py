"""The simulator's view of a device profile: tags, register blocks and the device's contracts.

The job: reduce any profile (a loaded :mod:`bessai.device.profile` Profile, a parsed JSON dict
or a path to the JSON) to the few facts the simulator serves — tag addresses, types, gains,
access, limits and invalid sentinels; the register blocks; the watchdog and dispatch roles — and
encode/decode register values by tag type.

Invariants: a tag lies inside a register block or construction fails with the tag's name;
``encode`` and ``decode`` are inverse for every value in the tag's range; ``encode`` of a value
outside what the type can hold raises ``ValueError`` (never wraps silently).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

_WORDS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4, "i64": 4, "f32": 2}
_SIGNED = {"i16", "i32", "i64"}


def _raw(value: int | str) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


@attrs.frozen
class SimTag:
    """One tag as the simulator needs it."""

    name: str
    address: int
    type: str
    length: int
    gain: float = 1.0
    access: str = "r"
    min: float | None = None
    max: float | None = None
    invalid: tuple[int, ...] = ()

    @property
    def readable(self) -> bool:
        return "r" in self.access

    @property
    def writable(self) -> bool:
        return "w" in self.access

    @property
    def end(self) -> int:
        """Last register address (inclusive)."""
        return self.address + self.length - 1

    def encode(self, value: float | int | str | None) -> list[int]:
        """Registers for ``value`` (engineering units); None gives the invalid sentinel or 0."""
        if value is None:
            raw = self.invalid[0] if self.invalid else 0
            return _raw_to_words(raw, self.length)
        if self.type == "string":
            data = str(value).encode()[: 2 * self.length].ljust(2 * self.length, b"\0")
            return list(struct.unpack(f">{self.length}H", data))
        if self.type == "f32":
            return list(struct.unpack(">2H", struct.pack(">f", float(value) * self.gain)))
        raw = round(float(value) * self.gain)
        bits = 16 * self.length
        if self.type in _SIGNED:
            if not -(1 << (bits - 1)) <= raw < (1 << (bits - 1)):
                raise ValueError(f"{self.name}: {value} does not fit {self.type}")
            raw &= (1 << bits) - 1
        elif not 0 <= raw < (1 << bits):
            raise ValueError(f"{self.name}: {value} does not fit {self.type}")
        return _raw_to_words(raw, self.length)

    def decode(self, registers: Sequence[int]) -> float | int | str:
        """Engineering value of ``registers`` (the sentinel is not interpreted here)."""
        if self.type == "string":
            return (
                struct.pack(f">{self.length}H", *registers).rstrip(b"\0").decode(errors="replace")
            )
        if self.type == "f32":
            return struct.unpack(">f", struct.pack(">2H", *registers))[0] / self.gain
        raw = 0
        for word in registers:
            raw = (raw << 16) | word
        bits = 16 * self.length
        if self.type in _SIGNED and raw >= 1 << (bits - 1):
            raw -= 1 << bits
        if self.gain == 1:
            return raw
        return raw / self.gain

    def raw_of(self, registers: Sequence[int]) -> int:
        raw = 0
        for word in registers:
            raw = (raw << 16) | word
        return raw


def _raw_to_words(raw: int, length: int) -> list[int]:
    return [(raw >> (16 * (length - 1 - i))) & 0xFFFF for i in range(length)]


@attrs.frozen
class Block:
    name: str
    start: int
    end: int  # inclusive

    def contains(self, address: int, count: int = 1) -> bool:
        return self.start <= address and address + count - 1 <= self.end


@attrs.frozen
class Roles:
    """Which tags play the watchdog and dispatch parts, and the device's timeouts."""

    heartbeat_tag: str = "heartbeat"
    device_timeout_s: float = 60.0
    comm_loss_tag: str | None = "device_status"
    comm_loss_value: int | None = 0x0303
    mode_tag: str = "forcible_mode"
    mode_stop: int = 0
    mode_charge: int = 1
    mode_discharge: int = 2
    charge_power_tag: str = "forcible_charge_power"
    discharge_power_tag: str = "forcible_discharge_power"
    lease_tag: str = "forcible_period"
    lease_unit_s: float = 60.0


@attrs.frozen
class SimProfile:
    tags: Mapping[str, SimTag]
    blocks: tuple[Block, ...]
    roles: Roles
    unit_id: int = 1
    device_id: str = "device"

    def __attrs_post_init__(self) -> None:
        for tag in self.tags.values():
            if not any(b.contains(tag.address, tag.length) for b in self.blocks):
                raise ValueError(
                    f"tag {tag.name!r} at {tag.address} lies outside every register block — "
                    "add a block covering it to the profile"
                )

    def block_of(self, address: int, count: int = 1) -> Block | None:
        for block in self.blocks:
            if block.contains(address, count):
                return block
        return None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _tag_length(spec: Any) -> int:
    kind = _get(spec, "type")
    kind = getattr(kind, "value", kind)
    length = _get(spec, "length") or _get(spec, "count")
    if kind in _WORDS:
        return _WORDS[kind]
    return int(length or 1)


def sim_profile(profile: Any) -> SimProfile:
    """Build the simulator's view from a Profile object, a parsed dict, or a JSON path."""
    if isinstance(profile, SimProfile):
        return profile
    if isinstance(profile, str | Path):
        profile = json.loads(Path(profile).read_text())
    tags: dict[str, SimTag] = {}
    for name, spec in _get(profile, "tags").items():
        kind = _get(spec, "type")
        kind = str(getattr(kind, "value", kind))
        access = _get(spec, "access", "r")
        access = str(getattr(access, "value", access))
        gain = _get(spec, "gain") or 1
        tags[name] = SimTag(
            name=name,
            address=int(_get(spec, "address")),
            type=kind,
            length=_tag_length(spec),
            gain=float(gain) if not float(gain).is_integer() else int(gain),
            access=access,
            min=_get(spec, "min"),
            max=_get(spec, "max"),
            invalid=tuple(_raw(v) for v in (_get(spec, "invalid") or ())),
        )
    blocks = tuple(
        Block(
            name=str(_get(b, "name", "")),
            start=int(_get(b, "start")),
            end=int(_get(b, "end")),
        )
        for b in _get(profile, "blocks")
    )
    roles = _roles(_get(profile, "watchdog"), _get(profile, "dispatch"))
    connection = _get(profile, "connection") or {}
    device = _get(profile, "device") or {}
    return SimProfile(
        tags=tags,
        blocks=blocks,
        roles=roles,
        unit_id=int(_get(connection, "unit_id", 1)),
        device_id=str(_get(device, "id", "device")),
    )


def _roles(watchdog: Any, dispatch: Any) -> Roles:
    kwargs: dict[str, Any] = {}
    if watchdog is not None:
        heartbeat = _get(watchdog, "heartbeat")
        if heartbeat is not None:
            kwargs["heartbeat_tag"] = _get(heartbeat, "tag", "heartbeat")
        timeout = _get(watchdog, "device_timeout_s")
        if timeout is not None:
            kwargs["device_timeout_s"] = float(timeout)
        comm_loss = _get(watchdog, "comm_loss")
        if comm_loss is not None:
            kwargs["comm_loss_tag"] = _get(comm_loss, "tag")
            kwargs["comm_loss_value"] = int(_get(comm_loss, "value"))
    if dispatch is not None:
        kwargs["mode_tag"] = _get(dispatch, "mode_tag", "forcible_mode")
        modes = _get(dispatch, "modes")
        if modes is not None:
            kwargs["mode_stop"] = int(_get(modes, "stop", 0))
            kwargs["mode_charge"] = int(_get(modes, "charge", 1))
            kwargs["mode_discharge"] = int(_get(modes, "discharge", 2))
        kwargs["charge_power_tag"] = _get(dispatch, "charge_power_tag", "forcible_charge_power")
        kwargs["discharge_power_tag"] = _get(
            dispatch, "discharge_power_tag", "forcible_discharge_power"
        )
        lease = _get(dispatch, "lease")
        if lease is not None:
            kwargs["lease_tag"] = _get(lease, "tag", "forcible_period")
            unit = _get(lease, "unit", "min")
            unit = str(getattr(unit, "value", unit))
            kwargs["lease_unit_s"] = 60.0 if unit == "min" else 1.0
    return Roles(**kwargs)
