"""Device profiles: the attrs model of a device's register map and the loader that checks it.

A profile is a JSON file in ``profiles/`` validated against ``profiles/profile.schema.json`` and
then by semantic checks the schema cannot express. Invariants of a loaded :class:`Profile`:

- every tag lies inside exactly one register block of its table, and no two tags of a table share
  a register;
- every tag named by the watchdog, dispatch and safety specs exists, with the access its use needs
  (written tags are writable, read tags readable);
- every writable numeric tag has ``min <= max``, and every value the profile itself writes
  (heartbeat, dispatch modes, presets) is inside them.

:func:`load_profile` reports EVERY problem at once in one :class:`ProfileError`, each naming the
file, the JSON path and the problem, so an operator fixes a profile in one round.
"""

from __future__ import annotations

import enum
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import jsonschema

from bessai.bounds import clip
from bessai.device.errors import ProfileError, ProfileProblem
from bessai.jsondepth import json_depth

SCHEMA_FILENAME = "profile.schema.json"
MAX_PROFILE_BYTES = 1024 * 1024
"""The largest profile file read (the SUN2000 profile is about 9 KB); a bigger one is refused
before it is read whole."""
MAX_PROFILE_DEPTH = 16
"""The deepest nesting of objects and arrays (a real profile is 5 deep); checked before parsing,
so a deeply nested file is a listed problem, never a RecursionError."""
_REPO_PROFILES = Path(__file__).resolve().parents[2] / "profiles"


class RegisterType(enum.StrEnum):
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    U64 = "u64"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"
    STRING = "string"
    BITFIELD = "bitfield"
    BOOL = "bool"
    """One coil or discrete input (a bit, not a register)."""


class Access(enum.StrEnum):
    READ = "r"
    READ_WRITE = "rw"
    WRITE = "w"


class Poll(enum.StrEnum):
    FAST = "fast"
    SLOW = "slow"


class Table(enum.StrEnum):
    """The four Modbus data tables; each is read by its own function code, so a read request
    never spans two of them."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE_INPUT)


class WordOrder(enum.StrEnum):
    """Register order of 32/64-bit values: ``big`` = most significant word first (ABCD,
    Huawei, SunSpec), ``little`` = least significant word first (CDAB, common elsewhere).
    Bytes inside a register are always big-endian, as Modbus defines them."""

    BIG = "big"
    LITTLE = "little"


FIXED_COUNTS: dict[RegisterType, int] = {
    RegisterType.U16: 1,
    RegisterType.I16: 1,
    RegisterType.U32: 2,
    RegisterType.I32: 2,
    RegisterType.U64: 4,
    RegisterType.I64: 4,
    RegisterType.F32: 2,
    RegisterType.F64: 4,
    RegisterType.BOOL: 1,
}
BITFIELD_LENGTHS = (1, 2, 4)


def _freeze_enum(labels: Mapping[int, str] | None) -> Mapping[int, str]:
    return dict(labels or {})


def _int_tuple(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


@attrs.frozen
class Tag:
    """One named value on the device.

    ``address`` is the first register; ``count`` the number of registers it spans. ``gain``:
    value = raw / gain. ``invalid`` holds raw bit patterns (unsigned, all registers big-endian)
    that mean "no valid data". ``min``/``max`` bound what the gateway may write (in ``unit``).
    ``length`` is the register count of ``string`` and ``bitfield`` tags (ignored otherwise).
    ``word_order``: register order of multi-register values (the profile's default unless the
    tag says). ``scale_factor``: the name of another tag whose value ``sf`` scales this one,
    value = raw / gain * 10**sf (SunSpec's ``*_SF`` registers).
    """

    name: str
    address: int
    type: RegisterType = attrs.field(converter=RegisterType)
    gain: float = 1
    unit: str | None = None
    access: Access = attrs.field(default=Access.READ, converter=Access)
    invalid: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)
    enum: Mapping[int, str] = attrs.field(factory=dict, converter=_freeze_enum, hash=False)
    min: float | None = None
    max: float | None = None
    poll: Poll = attrs.field(default=Poll.SLOW, converter=Poll)
    table: Table = attrs.field(default=Table.HOLDING, converter=Table)
    length: int | None = None
    description: str = ""
    word_order: WordOrder = attrs.field(default=WordOrder.BIG, converter=WordOrder)
    scale_factor: str | None = None

    @property
    def count(self) -> int:
        """Registers this tag spans."""
        if self.type in FIXED_COUNTS:
            return FIXED_COUNTS[self.type]
        if self.type is RegisterType.BITFIELD:
            return self.length or 1
        return self.length or 1

    @property
    def end(self) -> int:
        """One past the last register of this tag."""
        return self.address + self.count

    @property
    def readable(self) -> bool:
        return self.access in (Access.READ, Access.READ_WRITE)

    @property
    def writable(self) -> bool:
        return self.access in (Access.WRITE, Access.READ_WRITE)

    def label(self, value: object) -> str | None:
        """The enum label of a raw value, if the profile names it."""
        if isinstance(value, int):
            return self.enum.get(value)
        return None


@attrs.frozen
class DeviceIdentity:
    id: str
    manufacturer: str
    model: str


@attrs.frozen
class ConnectionDefaults:
    """How to talk to the device unless the site overrides it."""

    port: int = 502
    unit_id: int = 1
    timeout_s: float = 10.0
    post_connect_delay_s: float = 1.0
    max_registers_per_read: int = 64
    max_gap: int = 16
    cooldown_s: float = 0.05
    word_order: WordOrder = attrs.field(default=WordOrder.BIG, converter=WordOrder)


@attrs.frozen
class Block:
    """An inclusive address range that exists on the device (reserved registers read as 0)."""

    name: str
    table: Table = attrs.field(converter=Table)
    start: int = 0
    end: int = 0

    def contains(self, address: int, count: int = 1) -> bool:
        return self.start <= address and address + count - 1 <= self.end


@attrs.frozen
class TagWrite:
    """A write the profile itself prescribes (value in the tag's unit)."""

    tag: str
    value: float


@attrs.frozen
class WatchdogSpec:
    """How the gateway keeps the device's watchdog fed, and how the device reports comm loss.

    ``heartbeat_mode`` is ``constant`` (write ``heartbeat_value`` every time) or ``counter``
    (write ``heartbeat_value``, +1, ... wrapping at ``heartbeat_modulo``). If no heartbeat arrives
    for ``device_timeout_s``, the device reports ``comm_loss_value`` in ``comm_loss_tag``.
    """

    heartbeat_tag: str
    heartbeat_mode: str
    heartbeat_value: int
    interval_s: float
    device_timeout_s: float
    comm_loss_tag: str
    comm_loss_value: int
    heartbeat_modulo: int = 65536

    def heartbeat_values(self) -> Iterator[int]:
        """The values to write, one per heartbeat."""
        value = self.heartbeat_value
        while True:
            yield value
            if self.heartbeat_mode == "counter":
                value = (value + 1) % self.heartbeat_modulo


@attrs.frozen
class LeaseSpec:
    """The device-side dead-man switch: forced mode ends by itself when ``period`` runs out."""

    tag: str
    unit: str
    period: int
    renew_interval_s: float

    @property
    def unit_s(self) -> float:
        """Seconds in one unit of the lease tag (``min`` or ``s``)."""
        return 60.0 if self.unit == "min" else 1.0

    @property
    def period_s(self) -> float:
        return self.period * self.unit_s


@attrs.frozen
class DispatchSpec:
    """How to force charge/discharge/stop and how to hand control back ("auto").

    To force: write ``preset`` in order, the power tag, the lease, then ``mode_tag`` = mode.
    """

    mode_tag: str
    stop_value: int
    charge_value: int
    discharge_value: int
    charge_power_tag: str
    discharge_power_tag: str
    lease: LeaseSpec
    preset: tuple[TagWrite, ...] = ()
    auto: tuple[TagWrite, ...] = ()


@attrs.frozen
class SafetyFeeds:
    """Which tags feed the safety guard."""

    soc_tag: str
    temperature_tags: tuple[str, ...]


@attrs.frozen
class Profile:
    """A loaded, checked device profile. Build it with :func:`load_profile`."""

    device: DeviceIdentity
    connection: ConnectionDefaults
    tags: Mapping[str, Tag] = attrs.field(hash=False)
    watchdog: WatchdogSpec | None  # None: no heartbeat to feed
    dispatch: DispatchSpec | None  # None: read-only, the gateway never writes to the device
    safety: SafetyFeeds
    blocks: tuple[Block, ...]
    source: str = "<memory>"

    @property
    def read_only(self) -> bool:
        """No dispatch section: commands for this device are rejected, nothing is written."""
        return self.dispatch is None

    def tag(self, name: str) -> Tag:
        """The tag called ``name``; a KeyError that lists the known names otherwise."""
        try:
            return self.tags[name]
        except KeyError:
            known = ", ".join(sorted(self.tags))
            raise KeyError(f"no tag {name!r} in profile {self.device.id} ({self.source}); "
                           f"known tags: {known}") from None

    def block_of(self, tag: Tag) -> Block | None:
        """The block holding all of ``tag``'s registers, if any."""
        for block in self.blocks:
            if block.table == tag.table and block.contains(tag.address, tag.count):
                return block
        return None


# --------------------------------------------------------------------------------------------
# Loading


def default_schema_path(profile_path: Path | None = None) -> Path:
    """``profiles/profile.schema.json`` of this source tree, else beside the profile."""
    candidate = _REPO_PROFILES / SCHEMA_FILENAME
    if candidate.exists():
        return candidate
    if profile_path is not None and (profile_path.parent / SCHEMA_FILENAME).exists():
        return profile_path.parent / SCHEMA_FILENAME
    return candidate


def parse_raw(value: int | str) -> int:
    """A raw register value from JSON: an integer or a ``0x..`` string."""
    if isinstance(value, str):
        return int(value, 0)
    return int(value)


def _json_path(parts: Iterator[Any] | list[Any]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    dups = []
    for key, value in pairs:
        if key in seen:
            dups.append(key)
        seen[key] = value
    if dups:
        seen["__duplicate_keys__"] = dups
    return seen


def _find_duplicates(node: Any, path: list[Any], out: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        for key in node.pop("__duplicate_keys__", []):
            out.append((_json_path([*path, key]), f"key {key!r} appears more than once "
                        "(JSON keeps only the last one); rename or remove the duplicate"))
        for key, value in node.items():
            _find_duplicates(value, [*path, key], out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _find_duplicates(value, [*path, i], out)


def load_profile(path: str | Path, *, schema_path: str | Path | None = None) -> Profile:
    """Load and check a profile; raise :class:`ProfileError` listing every problem found.

    Size first (a regular file of at most MAX_PROFILE_BYTES, never a FIFO or a device), then
    the encoding (UTF-8), then structure and values in `parse_profile`.
    """
    path = Path(path)
    file = clip(str(path), 120)

    def refuse(message: str) -> ProfileError:
        return ProfileError(file, [ProfileProblem(file, "$", message)])

    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise refuse("is not a regular file; give the path of a profile JSON file")
            data = fh.read(MAX_PROFILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise refuse(f"cannot read the file ({clip(reason, 80)}); check the path") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise refuse(f"is over {MAX_PROFILE_BYTES} bytes; a profile is a few KB of JSON")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise refuse(f"is not UTF-8 text (byte 0x{data[exc.start]:02X} on line {line}); save "
                     "it as UTF-8") from None
    return parse_profile(text, file=file, schema_path=schema_path)


MAX_PROFILE_INT = 2**64
"""The largest integer magnitude in a profile (a u64 sentinel is 2**64 - 1)."""


def _number_problems(node: Any, path: list[Any], out: list[tuple[str, str]]) -> None:
    """Numbers a register map can hold: integers within ±2**64, finite floats (``1e400``
    parses as infinity)."""
    if isinstance(node, bool):
        return
    if isinstance(node, int):
        if abs(node) > MAX_PROFILE_INT:
            out.append((_json_path(path), f"integer of {node.bit_length()} bits is out of range "
                        "(at most 2**64)"))
    elif isinstance(node, float):
        if not math.isfinite(node):
            out.append((_json_path(path), "number is out of range (not finite)"))
    elif isinstance(node, dict):
        for key, value in node.items():
            _number_problems(value, [*path, key], out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _number_problems(value, [*path, i], out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_profile(text: str, *, file: str = "<string>",
                  schema_path: str | Path | None = None) -> Profile:
    """Check a profile given as JSON text (``file`` names it in errors)."""
    file = clip(file, 120)
    if len(text) > MAX_PROFILE_BYTES:
        raise ProfileError(file, [ProfileProblem(
            file, "$", f"is over {MAX_PROFILE_BYTES} characters; a profile is a few KB of JSON")])
    if json_depth(text) > MAX_PROFILE_DEPTH:
        raise ProfileError(file, [ProfileProblem(
            file, "$", f"objects and arrays nest more than {MAX_PROFILE_DEPTH} deep; a profile "
            "is about 5 deep")])
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicate_keys,
                         parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ProfileError(file, [ProfileProblem(
            file, "$", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from exc
    except (ValueError, RecursionError) as exc:  # NaN/Infinity; an integer over 4300 digits
        raise ProfileError(file, [ProfileProblem(
            file, "$", f"not valid JSON: {clip(exc, 120)}")]) from None

    problems: list[ProfileProblem] = []

    def add(json_path: str, message: str) -> None:
        problems.append(ProfileProblem(file, json_path, message))

    dups: list[tuple[str, str]] = []
    _find_duplicates(doc, [], dups)
    for json_path, message in dups:
        add(json_path, message)
    out_of_range: list[tuple[str, str]] = []
    _number_problems(doc, [], out_of_range)
    for json_path, message in out_of_range:
        add(json_path, message)
    if out_of_range:
        raise ProfileError(file, problems)

    schema_file = Path(schema_path) if schema_path else default_schema_path(
        Path(file) if file != "<string>" else None)
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(file, [ProfileProblem(
            file, "$", f"cannot read the profile schema {schema_file} ({exc.strerror or exc}); "
            "install profiles/profile.schema.json beside the profiles or pass schema_path=")]
        ) from exc
    validator = jsonschema.Draft202012Validator(schema)
    schema_errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    for err in schema_errors:
        add(_json_path(list(err.absolute_path)), _schema_message(err))
    if schema_errors:
        # The document's shape is wrong; semantic checks would only repeat the same faults.
        raise ProfileError(file, problems)

    profile = _build(doc, file)
    _semantic_checks(profile, add)
    if problems:
        raise ProfileError(file, problems)
    return profile


def _schema_message(err: jsonschema.ValidationError) -> str:
    if err.validator == "oneOf" and err.context:
        return (f"{clip(repr(err.instance), 80)} is neither an integer >= 0 nor a hex string "
                "like \"0xFFFF\"")
    return clip(err.message, 300)


def _build(doc: dict[str, Any], file: str) -> Profile:
    tags: dict[str, Tag] = {}
    default_order = doc["connection"].get("word_order", "big")
    for name, t in doc["tags"].items():
        tags[name] = Tag(
            name=name,
            address=t["address"],
            type=t["type"],
            gain=t.get("gain", 1),
            unit=t.get("unit"),
            access=t["access"],
            invalid=tuple(parse_raw(v) for v in t.get("invalid", ())),
            enum={int(k, 0): v for k, v in t.get("enum", {}).items()},
            min=t.get("min"),
            max=t.get("max"),
            poll=t.get("poll", "slow"),
            table=t.get("table", "holding"),
            length=t.get("length"),
            description=t.get("description", ""),
            word_order=t.get("word_order", default_order),
            scale_factor=t.get("scale_factor"),
        )
    c = doc["connection"]
    wd = doc.get("watchdog")
    dp = doc.get("dispatch")
    return Profile(
        device=DeviceIdentity(doc["device"]["id"], doc["device"]["manufacturer"],
                              doc["device"]["model"]),
        connection=ConnectionDefaults(
            port=c["port"], unit_id=c["unit_id"], timeout_s=float(c["timeout_s"]),
            post_connect_delay_s=float(c["post_connect_delay_s"]),
            max_registers_per_read=c["max_registers_per_read"], max_gap=c["max_gap"],
            cooldown_s=float(c["cooldown_s"]), word_order=default_order,
        ),
        tags=tags,
        watchdog=None if wd is None else WatchdogSpec(
            heartbeat_tag=wd["heartbeat"]["tag"], heartbeat_mode=wd["heartbeat"]["mode"],
            heartbeat_value=wd["heartbeat"]["value"],
            heartbeat_modulo=wd["heartbeat"].get("modulo", 65536),
            interval_s=float(wd["interval_s"]), device_timeout_s=float(wd["device_timeout_s"]),
            comm_loss_tag=wd["comm_loss"]["tag"], comm_loss_value=wd["comm_loss"]["value"],
        ),
        dispatch=None if dp is None else DispatchSpec(
            mode_tag=dp["mode_tag"], stop_value=dp["modes"]["stop"],
            charge_value=dp["modes"]["charge"], discharge_value=dp["modes"]["discharge"],
            charge_power_tag=dp["charge_power_tag"], discharge_power_tag=dp["discharge_power_tag"],
            lease=LeaseSpec(tag=dp["lease"]["tag"], unit=dp["lease"]["unit"],
                            period=dp["lease"]["period"],
                            renew_interval_s=float(dp["lease"]["renew_interval_s"])),
            preset=tuple(TagWrite(w["tag"], w["value"]) for w in dp["preset"]),
            auto=tuple(TagWrite(w["tag"], w["value"]) for w in dp["auto"]),
        ),
        safety=SafetyFeeds(soc_tag=doc["safety"]["soc_tag"],
                           temperature_tags=tuple(doc["safety"]["temperature_tags"])),
        blocks=tuple(Block(b["name"], b["table"], b["start"], b["end"]) for b in doc["blocks"]),
        source=file,
    )


def _semantic_checks(profile: Profile, add: Callable[[str, str], None]) -> None:
    # Imported here: the codec depends on this module's types.
    from bessai.device.codec import raw_range

    tags = profile.tags

    # Blocks: well-formed and disjoint within a table.
    for i, b in enumerate(profile.blocks):
        if b.end < b.start:
            add(f"$.blocks[{i}]", f"block {b.name!r} ends ({b.end}) before it starts ({b.start})")
    for i, a in enumerate(profile.blocks):
        for j in range(i + 1, len(profile.blocks)):
            b = profile.blocks[j]
            if a.table == b.table and a.start <= b.end and b.start <= a.end:
                add(f"$.blocks[{j}]", f"block {b.name!r} ({b.start}-{b.end}) overlaps block "
                    f"{a.name!r} ({a.start}-{a.end}) in the {a.table} table; merge or split them")

    for name, tag in tags.items():
        where = f"$.tags.{name}"
        if tag.type is RegisterType.STRING and tag.length is None:
            add(f"{where}.length", "a string tag needs 'length' (registers, 2 characters each)")
        if tag.type is RegisterType.BITFIELD and tag.length not in (None, *BITFIELD_LENGTHS):
            add(f"{where}.length", f"a bitfield is 1, 2 or 4 registers, not {tag.length}")
        if tag.type in FIXED_COUNTS and tag.length not in (None, FIXED_COUNTS[tag.type]):
            add(f"{where}.length", f"type {tag.type} is always {FIXED_COUNTS[tag.type]} "
                f"register(s); remove 'length' or fix the type")
        if tag.address + tag.count - 1 > 0xFFFF:
            add(f"{where}.address", f"tag runs past register 65535 ({tag.count} registers)")
        if tag.readable and tag.count > profile.connection.max_registers_per_read:
            add(f"{where}.length", f"{tag.count} registers cannot be read in one request "
                f"(max_registers_per_read={profile.connection.max_registers_per_read})")
        if profile.block_of(tag) is None:
            add(f"{where}.address", f"registers {tag.address}-{tag.end - 1} ({tag.table}) are not "
                "inside any block; add a block in $.blocks or fix the address")
        if tag.writable and tag.type is not RegisterType.STRING:  # strings: bounded by length
            if tag.min is None or tag.max is None:
                missing = [k for k in ("min", "max") if getattr(tag, k) is None]
                add(where, f"writable tag (access {tag.access}) needs {' and '.join(missing)} so "
                    "out-of-range writes are refused before they reach the device")
            elif tag.min > tag.max:
                add(f"{where}.min", f"min {tag.min} is above max {tag.max}")
        bits = tag.table.is_bits
        if bits != (tag.type is RegisterType.BOOL):
            add(f"{where}.type", f"type {tag.type} in the {tag.table} table: coils and discrete "
                "inputs hold 'bool' tags, registers hold every other type")
        if tag.table is Table.DISCRETE_INPUT and tag.writable:
            add(f"{where}.access", "a discrete input is read-only (access r)")
        if tag.scale_factor is not None:
            sf = tags.get(tag.scale_factor)
            if sf is None:
                add(f"{where}.scale_factor", f"names no tag {tag.scale_factor!r}")
            elif sf.type not in (RegisterType.I16, RegisterType.U16) or not sf.readable \
                    or sf.scale_factor is not None:
                add(f"{where}.scale_factor", f"tag {tag.scale_factor!r} must be a readable i16 "
                    "(or u16) without a scale factor of its own, as SunSpec's *_SF registers")
            if tag.writable:
                add(f"{where}.access", "a scale-factored tag is read-only here (its scale may "
                    "change between the read and the write); write an unscaled tag instead")
            if tag.type in (RegisterType.STRING, RegisterType.BITFIELD, RegisterType.BOOL):
                add(f"{where}.scale_factor", f"a {tag.type} tag cannot be scaled")
        if tag.type not in (RegisterType.STRING, RegisterType.F32, RegisterType.F64,
                            RegisterType.BOOL):
            lo, hi = raw_range(tag)
            for k, raw in enumerate(tag.invalid):
                if not 0 <= raw < (1 << (16 * tag.count)):
                    add(f"{where}.invalid[{k}]", f"sentinel 0x{raw:X} does not fit in "
                        f"{tag.count} register(s)")
            for value in tag.enum:
                if not lo <= value <= hi:
                    add(f"{where}.enum", f"enum value {value} is outside type {tag.type} "
                        f"({lo}..{hi})")

    # Overlapping tags in the same table.
    for table in Table:
        ordered = sorted((t for t in tags.values() if t.table == table),
                         key=lambda t: (t.address, t.name))
        reach: Tag | None = None  # the tag reaching furthest so far
        for cur in ordered:
            if reach is not None and cur.address < reach.end:
                add(f"$.tags.{cur.name}.address", f"registers {cur.address}-{cur.end - 1} overlap "
                    f"tag {reach.name!r} ({reach.address}-{reach.end - 1}); fix one address or "
                    "type")
            if reach is None or cur.end > reach.end:
                reach = cur

    # References from the watchdog, dispatch and safety specs.
    def ref(json_path: str, name: str, need: str, value: float | None = None) -> None:
        tag = tags.get(name)
        if tag is None:
            add(json_path, f"tag {name!r} is not defined in $.tags")
            return
        if need == "w" and not tag.writable:
            add(json_path, f"tag {name!r} must be writable (access w or rw), it is {tag.access}")
        if need == "r" and not tag.readable:
            add(json_path, f"tag {name!r} must be readable (access r or rw), it is {tag.access}")
        if (value is not None and tag.min is not None and tag.max is not None
                and not tag.min <= value <= tag.max):
            add(json_path, f"value {value} for tag {name!r} is outside its min/max "
                f"({tag.min}..{tag.max})")

    wd = profile.watchdog
    if wd is not None:
        ref("$.watchdog.heartbeat.tag", wd.heartbeat_tag, "w", wd.heartbeat_value)
        ref("$.watchdog.comm_loss.tag", wd.comm_loss_tag, "r")
        if wd.interval_s >= wd.device_timeout_s:
            add("$.watchdog.interval_s", f"heartbeat interval {wd.interval_s:g} s must be shorter "
                f"than the device's comm timeout {wd.device_timeout_s:g} s")

    dp = profile.dispatch
    if dp is not None:
        ref("$.dispatch.mode_tag", dp.mode_tag, "w")
        if dp.mode_tag in tags:
            for mode, value in (("stop", dp.stop_value), ("charge", dp.charge_value),
                                ("discharge", dp.discharge_value)):
                ref(f"$.dispatch.modes.{mode}", dp.mode_tag, "", value)
        ref("$.dispatch.charge_power_tag", dp.charge_power_tag, "w")
        ref("$.dispatch.discharge_power_tag", dp.discharge_power_tag, "w")
        ref("$.dispatch.lease.tag", dp.lease.tag, "w", dp.lease.period)
        if dp.lease.renew_interval_s >= dp.lease.period_s:
            add("$.dispatch.lease.renew_interval_s",
                f"renewing every {dp.lease.renew_interval_s:g} s lets the "
                f"{dp.lease.period_s:g} s lease lapse; renew more often")
        for key, writes in (("preset", dp.preset), ("auto", dp.auto)):
            for k, w in enumerate(writes):
                ref(f"$.dispatch.{key}[{k}].tag", w.tag, "w", w.value)

    feeds = profile.safety
    ref("$.safety.soc_tag", feeds.soc_tag, "r")
    for k, name in enumerate(feeds.temperature_tags):
        ref(f"$.safety.temperature_tags[{k}]", name, "r")
