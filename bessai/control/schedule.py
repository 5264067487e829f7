"""Local schedules: the value, and parsing it from its wire form with every problem at once.

A schedule is the plan a device follows by itself, through a cloud cut of hours or days::

    {"type": "schedule", "schedule_id": "s-7", "site_id": "site1", "device_id": "inv1",
     "valid_until": "2026-01-02T00:00:00Z",
     "slots": [{"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T06:00:00Z",
                "action": "charge", "power_w": 3000},
               {"start": "2026-01-01T17:00:00Z", "end": "2026-01-01T21:00:00Z",
                "action": "peak_shave", "limit_w": 2500}]}

* ``action``: ``charge`` / ``discharge`` (``power_w`` required, > 0), ``stop``, ``auto``,
  ``peak_shave`` (keep grid import at or below ``limit_w``), ``export_limit`` (keep export at or
  below ``limit_w``). ``power_w`` on a controller slot caps the battery power it may use.
* Time outside every slot (before the first, in a gap) but before ``valid_until`` is ``auto``.

Validation (`parse_schedule`), every problem reported at once keyed by field
(``slots[3].power_w``), at most `MAX_REPORTED_ERRORS` of them:

1. size, encoding and depth first — the command parser's own bounds (`bessai.control.command`:
   ``too_large``, ``too_deep``, ``malformed``), not a second copy of them;
2. then values: ids, times (epoch seconds or ISO 8601 with a zone), at most `MAX_SLOTS` slots,
   slots in order and not overlapping, each ending by ``valid_until``, ``valid_until`` in the
   future and at most `MAX_HORIZON_S` away, powers at least the minimum command power and at
   most the profile's writable power limits (code ``malformed``, ``expired``, ``over_limit``).

`parse_schedule` raises only `InvalidSchedule`; every echoed value is clipped (`bessai.bounds`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from bessai.bounds import MAX_REASON_CHARS, clip, clip_repr
from bessai.control.command import (
    MAX_POWER_W,
    InvalidCommand,
    _decode,
    _number,
    _text,
    _time,
    choice,
    merge_scope_attributes,
)
from bessai.model import Action

MAX_SLOTS = 288
"""The most slots in one schedule (a day of 5-minute slots); fits well inside the 64 KiB
message bound."""

MAX_HORIZON_S = 7 * 86_400.0
"""``valid_until`` at most a week away: a plan longer than that is a configuration, not a
schedule."""

MAX_REPORTED_ERRORS = 32
"""At most this many problems are listed (then one ``more`` entry says how many were left out)."""


class SlotAction(enum.StrEnum):
    CHARGE = "charge"
    DISCHARGE = "discharge"
    STOP = "stop"
    AUTO = "auto"
    PEAK_SHAVE = "peak_shave"
    EXPORT_LIMIT = "export_limit"

    @property
    def controlled(self) -> bool:
        """A closed-loop slot (its setpoint follows the meter), not a fixed one."""
        return self in (SlotAction.PEAK_SHAVE, SlotAction.EXPORT_LIMIT)

    @property
    def command_action(self) -> Action | None:
        """The dispatch action of a fixed slot (None for a controller slot)."""
        return None if self.controlled else Action(self.value)


class InvalidSchedule(InvalidCommand):
    """The message is not a valid schedule; ``errors`` names every bad field, ``code`` the kind
    (``malformed``, ``too_large``, ``too_deep``, ``expired``, ``over_limit``)."""

    def __init__(self, errors: Mapping[str, str], schedule_id: str | None = None,
                 code: str = "malformed") -> None:
        super().__init__(errors, command_id=schedule_id, code=code)
        self.schedule_id = schedule_id
        text = str(self.args[0]).replace("invalid command", "invalid schedule", 1)
        self.args = (clip(text, MAX_REASON_CHARS),)


@attrs.frozen
class Slot:
    """One span of the plan; ``start``/``end`` are wall time (epoch seconds), end exclusive."""

    start: float
    end: float
    action: SlotAction = attrs.field(converter=SlotAction)
    power_w: float | None = None
    limit_w: float | None = None

    def covers(self, wall: float) -> bool:
        return self.start <= wall < self.end

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"start": self.start, "end": self.end, "action": self.action.value}
        if self.power_w is not None:
            body["power_w"] = self.power_w
        if self.limit_w is not None:
            body["limit_w"] = self.limit_w
        return body


def _slots_tuple(slots: Iterable[Slot]) -> tuple[Slot, ...]:
    """A schedule's own, immutable sequence of slots, whatever the caller built them in."""
    return tuple(slots)


@attrs.frozen
class Schedule:
    """A validated plan for one device. Build it with `parse_schedule`."""

    schedule_id: str
    site_id: str
    device_id: str
    valid_until: float
    slots: tuple[Slot, ...] = attrs.field(converter=_slots_tuple)
    issued_at: float | None = None

    def slot_at(self, wall: float) -> tuple[int, Slot] | None:
        """The slot covering ``wall`` with its index, or None (a gap, or past the end)."""
        if wall >= self.valid_until:
            return None
        for index, slot in enumerate(self.slots):
            if slot.covers(wall):
                return index, slot
            if slot.start > wall:
                break
        return None

    def next_boundary(self, wall: float) -> float | None:
        """The first slot start or end, or ``valid_until``, after ``wall`` (None: none left)."""
        times = [t for s in self.slots for t in (s.start, s.end) if t > wall]
        if self.valid_until > wall:
            times.append(self.valid_until)
        return min(times) if times else None

    def to_json(self) -> dict[str, Any]:
        """The wire form (times as epoch seconds): `parse_schedule` reads it back unchanged."""
        body: dict[str, Any] = {
            "type": "schedule", "schedule_id": self.schedule_id, "site_id": self.site_id,
            "device_id": self.device_id, "valid_until": self.valid_until,
            "slots": [s.to_json() for s in self.slots]}
        if self.issued_at is not None:
            body["issued_at"] = self.issued_at
        return body


@attrs.frozen
class ScheduleLimits:
    """What a schedule's powers are checked against (the profile's writable power tags' max and
    the command gate's minimum power). None: no upper limit known."""

    max_charge_w: float | None = None
    max_discharge_w: float | None = None
    min_power_w: float = 0.0


def is_schedule_message(body: Any) -> bool:
    """True if a decoded message body says it is a schedule (``"type": "schedule"``)."""
    return isinstance(body, Mapping) and body.get("type") == "schedule"


def decode_body(data: bytes | str) -> Any:
    """Size, encoding, depth, then JSON — the command parser's bounds. Raises `InvalidSchedule`."""
    try:
        return _decode(data)
    except InvalidCommand as exc:
        raise InvalidSchedule(exc.errors, code=exc.code) from None


def parse_schedule(data: bytes | str | Mapping[str, Any], *, now_wall: float | None,
                   limits: ScheduleLimits = ScheduleLimits(),
                   attributes: Mapping[str, str] | None = None) -> Schedule:
    """A Schedule from a message body; raises `InvalidSchedule` listing every problem, and
    nothing else, whatever ``data`` holds. ``now_wall`` None skips the checks relative to now
    (a stored schedule read back at start-up, already checked when it arrived)."""
    try:
        return _parse(data, now_wall, limits, attributes)
    except InvalidSchedule:
        raise
    except Exception as exc:  # a case the checks missed: still a rejection, never a crash
        raise InvalidSchedule({"body": f"could not be parsed ({type(exc).__name__})"}) from None


def _parse(data: bytes | str | Mapping[str, Any], now_wall: float | None, limits: ScheduleLimits,
           attributes: Mapping[str, str] | None) -> Schedule:
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
    body = decode_body(data) if isinstance(data, bytes | str) else data
    if not isinstance(body, Mapping):
        raise InvalidSchedule({"body": f"must be a JSON object, got {type(body).__name__}"})
    body = dict(body)
    errors: dict[str, str] = {}
    code = "malformed"
    if body.get("type") != "schedule":
        errors["type"] = f"must be \"schedule\", got {clip_repr(body.get('type'), 40)}"
    merge_scope_attributes(body, attributes, errors)
    schedule_id = _text(body, "schedule_id", errors)
    site_id = _text(body, "site_id", errors) if "site_id" not in errors else None
    device_id = _text(body, "device_id", errors) if "device_id" not in errors else None
    issued_at = _time(body, "issued_at", errors, required=False)
    valid_until = None
    if body.get("valid_until") is None:
        errors["valid_until"] = ("missing — every schedule needs an end (epoch seconds or ISO "
                                 "8601, e.g. 2026-01-02T00:00:00Z); after it the device returns "
                                 "to auto")
    else:
        valid_until = _time(body, "valid_until", errors, required=True)
    if valid_until is not None and now_wall is not None:
        if valid_until <= now_wall:
            errors["valid_until"] = (f"is {now_wall - valid_until:.0f} s in the past — send a "
                                     "schedule that is still valid")
            code = "expired"
        elif valid_until - now_wall > MAX_HORIZON_S:
            errors["valid_until"] = (f"is {(valid_until - now_wall) / 86400:.1f} days away, "
                                     f"more than {MAX_HORIZON_S / 86400:.0f} — send a shorter plan")

    slots: list[Slot] = []
    raw_slots = body.get("slots")
    if not isinstance(raw_slots, list) or not raw_slots:
        errors["slots"] = (f"must be a non-empty list of slots, got {clip_repr(raw_slots, 40)}")
    elif len(raw_slots) > MAX_SLOTS:
        errors["slots"] = f"has {len(raw_slots)} slots, more than {MAX_SLOTS}"
    else:
        previous: tuple[float, float] | None = None
        for index, raw in enumerate(raw_slots):
            slot, span, over = _slot(raw, f"slots[{index}]", errors, limits)
            if over and code == "malformed":
                code = "over_limit"
            if slot is not None:
                slots.append(slot)
            if span is None:
                continue
            # order, overlap and the end are checked on every slot whose times parse, even if
            # another of its fields is bad: every problem at once
            start, end = span
            where = f"slots[{index}]"
            if previous is not None:
                if start < previous[0]:
                    errors.setdefault(f"{where}.start", "slots must be in order of start time")
                elif start < previous[1]:
                    errors.setdefault(f"{where}.start", (
                        f"overlaps the slot before it by {previous[1] - start:.0f} s "
                        "(a slot starts at or after the previous one's end)"))
            if valid_until is not None and end > valid_until:
                errors.setdefault(f"{where}.end", (f"ends {end - valid_until:.0f} s after "
                                                   "valid_until — every slot must end by then"))
            previous = span

    if errors:
        # the code names the kind when there is one kind of problem; errors list them all
        if code == "expired" and len(errors) > 1:
            code = "malformed"
        raise InvalidSchedule(_bounded(errors), schedule_id=schedule_id, code=code)
    # every field left None above has its reason in errors
    assert schedule_id is not None
    assert site_id is not None
    assert device_id is not None
    assert valid_until is not None
    return Schedule(schedule_id=schedule_id, site_id=site_id, device_id=device_id,
                    valid_until=valid_until, slots=slots, issued_at=issued_at)


def _bounded(errors: dict[str, str]) -> dict[str, str]:
    if len(errors) <= MAX_REPORTED_ERRORS:
        return errors
    kept = dict(list(errors.items())[:MAX_REPORTED_ERRORS])
    kept["more"] = f"{len(errors) - MAX_REPORTED_ERRORS} more problems not listed"
    return kept


def _slot(raw: Any, where: str, errors: dict[str, str], limits: ScheduleLimits
          ) -> tuple[Slot | None, tuple[float, float] | None, bool]:
    """One slot (None if any field is bad; its problems added to ``errors``), its (start, end)
    if those parse, and whether a power is over a limit."""
    if not isinstance(raw, Mapping):
        errors[where] = f"must be an object, got {type(raw).__name__}"
        return None, None, False
    local: dict[str, str] = {}
    start = _time(raw, "start", local, required=False)
    end = _time(raw, "end", local, required=False)
    for name, value in (("start", start), ("end", end)):
        if raw.get(name) is None:
            local[name] = "missing — give an ISO 8601 time, e.g. 2026-01-01T06:00:00Z"
        elif value is None and name not in local:
            local[name] = "is not a time"
    if start is not None and end is not None and end <= start:
        local["end"] = "must be later than start"
    action = choice(raw, "action", SlotAction, local, "a slot action")
    power_w = _power(raw, "power_w", local)
    limit_w = _power(raw, "limit_w", local)
    over = False
    if action in (SlotAction.CHARGE, SlotAction.DISCHARGE) and power_w is None \
            and "power_w" not in local:
        local["power_w"] = f"missing — {action.value} needs a power in watts, e.g. 3000"
    if action is not None and action.controlled and limit_w is None and "limit_w" not in local:
        local["limit_w"] = f"missing — {action.value} needs limit_w in watts, e.g. 2500"
    if power_w is not None and action is not None and action not in (SlotAction.STOP,
                                                                    SlotAction.AUTO):
        if power_w < limits.min_power_w:
            local["power_w"] = (f"{power_w:g} W is below COMMAND_MIN_POWER_W="
                                f"{limits.min_power_w:g} W")
        caps = {SlotAction.CHARGE: [limits.max_charge_w],
                SlotAction.DISCHARGE: [limits.max_discharge_w]}.get(
                    action, [limits.max_charge_w, limits.max_discharge_w])
        known = [c for c in caps if c is not None]
        if known and power_w > min(known):
            local["power_w"] = (f"{power_w:g} W is above the profile's limit of "
                                f"{min(known):g} W for {action.value}")
            over = True
    for key, reason in local.items():
        errors[f"{where}.{key}"] = reason
    span = (start, end) if start is not None and end is not None and end > start else None
    if local or action is None or span is None:
        return None, span, over
    return Slot(span[0], span[1], action, power_w, limit_w), span, over


def _power(raw: Mapping[str, Any], field: str, errors: dict[str, str]) -> float | None:
    value = raw.get(field)
    if value is None:
        return None
    number = _number(value, 0.0, MAX_POWER_W)
    if number is None or not math.isfinite(number):
        errors[field] = (f"must be a number of watts from 0 to {MAX_POWER_W:.0e}, got "
                         f"{clip_repr(value, 40)}")
        return None
    return number
