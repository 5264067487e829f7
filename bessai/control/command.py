"""Parsing a dispatch command from its wire form, with a clear reason for every bad field.

The wire form is a JSON object (a Pub/Sub message's data) with the fields of
`bessai.model.Command`::

    {"id": "c-42", "site_id": "site1", "device_id": "inv1", "action": "discharge",
     "power_w": 3000, "issued_at": 1767225600, "expires_at": "2026-01-01T00:05:00Z"}

* ``action`` is one of ``charge``, ``discharge``, ``stop``, ``auto``.
* ``power_w`` (watts, > 0, at most `MAX_POWER_W`) is required for ``charge`` and
  ``discharge``; ignored otherwise.
* ``expires_at`` is required (epoch seconds or ISO 8601 with a zone, before the year 10000): a
  command without an expiry could be applied arbitrarily late, so it is refused. ``issued_at``
  is optional.
* ``site_id`` / ``device_id`` may come from the message attributes when the body lacks them; if
  both carry them and they differ, the command is refused.

Unknown fields are ignored (forward compatibility); every problem with a known field is reported
at once, keyed by field, so the sender can fix them all in one go.

Hostile input, in this order (the first failure decides, nothing is read past it):

1. **size**: more than `MAX_COMMAND_BYTES` is refused before it is decoded (code ``too_large``);
2. **encoding**: the body must be UTF-8 (code ``malformed``);
3. **structure**: nesting deeper than `MAX_COMMAND_DEPTH` is refused before ``json.loads`` sees
   it (code ``too_deep``: no RecursionError), then the JSON must parse to an object;
4. **values**: each field's type, size (ids at most `MAX_ID_LEN` characters, valid Unicode) and
   range (no 400-digit integers: they are out of range, never an OverflowError).

`parse_command` raises only `InvalidCommand`; every echo of what was sent in a reason is clipped
(`bessai.bounds`), so a 6 MB field costs a 200-character quote.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from bessai.bounds import MAX_REASON_CHARS, clip, clip_repr
from bessai.jsondepth import json_depth
from bessai.model import Action, Command

MAX_COMMAND_BYTES = 64 * 1024
"""The largest command message body, in bytes (a real command is about 200)."""

MAX_COMMAND_DEPTH = 16
"""The deepest JSON nesting accepted (a command is a flat object; room for extensions)."""

MAX_ID_LEN = 128
"""The longest ``id``, ``site_id`` or ``device_id``, in characters."""

MAX_POWER_W = 1e9
"""The largest ``power_w`` that is a number at all (1 GW); the device's own limits clamp far
below it. Anything larger is out of range, not clamped."""

MAX_EPOCH_S = 253_402_300_799.0
"""9999-12-31T23:59:59Z: the latest time a command may name."""



class InvalidCommand(ValueError):
    """The message is not a valid command. ``errors`` maps each bad field to its reason;
    ``code`` is the machine-readable kind (``malformed``, ``too_large``, ``too_deep``)."""

    def __init__(self, errors: Mapping[str, str], command_id: str | None = None,
                 code: str = "malformed") -> None:
        self.errors = {clip(k, 64): clip(v, MAX_REASON_CHARS) for k, v in errors.items()}
        self.command_id = command_id
        self.code = code
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        super().__init__(clip(f"invalid command — {detail}", MAX_REASON_CHARS))


def field_errors(errors: Mapping[str, str]) -> dict[str, str]:
    """An outcome's own copy of the field → reason map (`InvalidCommand.errors`,
    `InvalidSchedule.errors`): the attrs converter of every outcome that carries one."""
    return dict(errors)


_Choice = TypeVar("_Choice", bound=enum.Enum)


def choice(raw: Mapping[str, Any], name: str, kind: type[_Choice], errors: dict[str, str],
           what: str) -> _Choice | None:
    """``raw[name]`` as a member of ``kind`` (a command's action, a slot's action); None, with
    ``errors[name]`` naming what is accepted, when it is anything else."""
    value = raw.get(name)
    try:
        member = kind(value) if isinstance(value, str) else None
    except ValueError:
        member = None
    if member is None:
        errors[name] = (f"{clip_repr(value, 40)} is not {what} — use one of "
                        f"{', '.join(str(m.value) for m in kind)}")
    return member


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return False
    return True


def _text(body: Mapping[str, Any], field: str, errors: dict[str, str]) -> str | None:
    value = body.get(field)
    if value is None:
        errors[field] = "missing — give a non-empty string"
    elif not isinstance(value, str) or not value.strip():
        errors[field] = f"must be a non-empty string, got {clip_repr(value)}"
    elif len(value) > MAX_ID_LEN:
        errors[field] = (f"is {len(value)} characters, longer than {MAX_ID_LEN}: "
                         f"{clip_repr(value, 40)}")
    elif not _valid_unicode(value):
        errors[field] = f"is not valid Unicode (a lone surrogate): {clip_repr(value, 40)}"
    else:
        return value
    return None


def _number(value: Any, low: float, high: float) -> float | None:
    """``value`` as a float if it is a JSON number within [low, high], else None.

    The range is checked on the int itself before any float conversion, so a 400-digit integer
    is out of range instead of an OverflowError.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return float(value) if low <= value <= high else None
    if not math.isfinite(value) or not low <= value <= high:
        return None
    return float(value)


def _time(body: Mapping[str, Any], field: str, errors: dict[str, str],
          required: bool) -> float | None:
    value = body.get(field)
    if value is None:
        if required:
            errors[field] = ("missing — every command needs an expiry (epoch seconds or ISO 8601, "
                             "e.g. 2026-01-01T00:05:00Z) so it is never applied late")
        return None
    if isinstance(value, bool):
        errors[field] = f"must be epoch seconds or an ISO 8601 time, got {value!r}"
        return None
    if isinstance(value, int | float):
        seconds = _number(value, 0.0, MAX_EPOCH_S)
        if seconds is None:
            errors[field] = (f"must be a finite epoch time between 0 and {MAX_EPOCH_S:.0f} "
                             f"(9999-12-31), got {clip_repr(value, 40)}")
        return seconds
    if isinstance(value, str):
        if len(value) > 64:
            errors[field] = (f"is {len(value)} characters, too long for a time: "
                             f"{clip_repr(value, 40)}")
            return None
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors[field] = (f"{clip_repr(value, 64)} is not an ISO 8601 time, "
                             "e.g. 2026-01-01T00:05:00Z")
            return None
        if parsed.tzinfo is None:
            errors[field] = f"{clip_repr(value, 64)} has no time zone — add Z or +00:00"
            return None
        try:
            seconds = parsed.timestamp()
        except (OverflowError, ValueError, OSError):
            seconds = -1.0
        if not 0 <= seconds <= MAX_EPOCH_S:
            errors[field] = f"{clip_repr(value, 64)} is out of range (1970 to 9999)"
            return None
        return seconds
    errors[field] = f"must be epoch seconds or an ISO 8601 time, got {type(value).__name__}"
    return None


def _decode(data: bytes | str) -> Any:
    """Size, encoding, depth, then JSON — each refused before the next step reads it."""
    size = len(data)  # bytes; for str, characters (at most 4 bytes each: checked again below)
    if size > MAX_COMMAND_BYTES:
        unit = "bytes" if isinstance(data, bytes) else "characters"
        raise InvalidCommand({"body": f"is {size} {unit}; a command may be at most "
                              f"{MAX_COMMAND_BYTES} bytes"}, code="too_large")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidCommand({"body": f"not valid JSON: not UTF-8 (byte {exc.start}: "
                                  f"{data[exc.start:exc.start + 4]!r}...)"}) from None
    else:
        text = data
        if not _valid_unicode(text) or len(text.encode("utf-8")) > MAX_COMMAND_BYTES:
            raise InvalidCommand({"body": "is not valid Unicode or is larger than "
                                  f"{MAX_COMMAND_BYTES} bytes as UTF-8"}, code="too_large")
    depth = json_depth(text)
    if depth > MAX_COMMAND_DEPTH:
        raise InvalidCommand({"body": f"nests {depth} levels deep; a command may nest at most "
                              f"{MAX_COMMAND_DEPTH}"}, code="too_deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # incl. ints past Python's 4300-digit limit
        raise InvalidCommand({"body": f"not valid JSON ({clip(exc, 160)})"}) from None


def merge_scope_attributes(body: dict[str, Any], attributes: Any,
                           errors: dict[str, str]) -> None:
    """``site_id`` / ``device_id`` from the message attributes where the body has none; a body
    and an attribute that disagree is an error (a message routed by one and meaning the other).
    Shared by commands and schedules."""
    attributes = attributes if isinstance(attributes, Mapping) else {}
    for field in ("site_id", "device_id"):
        from_attr = attributes.get(field)
        if body.get(field) is None and from_attr is not None:
            body[field] = from_attr
        elif from_attr is not None and body.get(field) != from_attr:
            errors[field] = (f"body says {clip_repr(body.get(field), 64)} but the message "
                             f"attribute says {clip_repr(from_attr, 64)} — make them agree")


def parse_command(data: bytes | str | Mapping[str, Any],
                  attributes: Mapping[str, str] | None = None) -> Command:
    """A Command from a message body (JSON bytes/str or an already decoded object).

    Raises `InvalidCommand` listing every bad field, and nothing else, whatever ``data`` holds.
    """
    try:
        return _parse(data, attributes)
    except InvalidCommand:
        raise
    except Exception as exc:  # a case the checks above missed: still a rejection, never a crash
        raise InvalidCommand({"body": f"could not be parsed ({type(exc).__name__}: "
                              f"{clip(exc, 160)})"}) from None


def _parse(data: bytes | str | Mapping[str, Any],
           attributes: Mapping[str, str] | None) -> Command:
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
    body = _decode(data) if isinstance(data, bytes | str) else data
    if not isinstance(body, Mapping):
        raise InvalidCommand({"body": f"must be a JSON object, got {type(body).__name__}"})
    body = dict(body)
    errors: dict[str, str] = {}
    merge_scope_attributes(body, attributes, errors)

    command_id = _text(body, "id", errors)
    site_id = _text(body, "site_id", errors) if "site_id" not in errors else None
    device_id = _text(body, "device_id", errors) if "device_id" not in errors else None

    action = choice(body, "action", Action, errors, "an action")

    power_w = 0.0
    raw_power = body.get("power_w")
    if action in (Action.CHARGE, Action.DISCHARGE):
        if raw_power is None:
            errors["power_w"] = f"missing — {action.value} needs a power in watts, e.g. 3000"
        elif isinstance(raw_power, bool) or not isinstance(raw_power, int | float):
            errors["power_w"] = f"must be a number of watts, got {clip_repr(raw_power, 40)}"
        elif (number := _number(raw_power, -MAX_POWER_W, MAX_POWER_W)) is None:
            errors["power_w"] = (f"must be a finite number of watts at most {MAX_POWER_W:.0e}, "
                                 f"got {clip_repr(raw_power, 40)}")
        elif number <= 0:
            errors["power_w"] = (f"must be more than 0 W, got {clip_repr(raw_power, 40)} — send "
                                 f"action=stop to stop, the action gives the direction")
        else:
            power_w = number

    issued_at = _time(body, "issued_at", errors, required=False)
    expires_at = _time(body, "expires_at", errors, required=True)
    if issued_at is not None and expires_at is not None and expires_at <= issued_at:
        errors["expires_at"] = f"must be later than issued_at ({expires_at} <= {issued_at})"

    if errors:
        raise InvalidCommand(errors, command_id=command_id)
    # every field left None above has its reason in errors
    assert command_id is not None
    assert site_id is not None
    assert device_id is not None
    assert action is not None
    assert expires_at is not None
    return Command(id=command_id, site_id=site_id, device_id=device_id, action=action,
                   power_w=power_w, issued_at=issued_at or 0.0, expires_at=expires_at)
