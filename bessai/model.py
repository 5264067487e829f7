"""Values that cross actor boundaries: readings, snapshots, events and dispatch commands.

Every type here is frozen (attrs) so an actor can hand one to another without copying and
without fear that the receiver mutates the sender's state. Data flows one way:
device link → Snapshot → (latest-value cell) safety guard, (mailbox) recorder → spool → uplink.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class TagReading:
    """One tag's value in one snapshot.

    ``valid`` is False when the device returned its "invalid" sentinel (0xFFFF, 0x7FFFFFFF...) or
    the read failed; ``value`` is then None and ``reason`` says why. Safety treats an invalid
    reading as unsafe, never as "skip".
    """

    value: float | int | str | None
    valid: bool = True
    reason: str | None = None


def _readings_copy(readings: Mapping[str, TagReading]) -> dict[str, TagReading]:
    """The snapshot's own copy: the caller's mapping may change after the snapshot is taken."""
    return dict(readings)


def _body_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """The event's own copy: the caller's mapping may change after the event is sent."""
    return dict(body)


@attrs.frozen
class Snapshot:
    """All tags read in one poll cycle of one device.

    ``ts`` is wall time (epoch seconds, from the injected wall clock) for the data's consumers;
    ``taken_at`` is Trio time when the read completed, for staleness checks inside the gateway.
    """

    site_id: str
    device_id: str
    ts: float
    taken_at: float
    readings: Mapping[str, TagReading] = attrs.field(converter=_readings_copy)

    def value(self, tag: str) -> float | int | str | None:
        """The tag's value if it was read and valid, else None."""
        reading = self.readings.get(tag)
        if reading is None or not reading.valid:
            return None
        return reading.value

    def values(self) -> dict[str, Any]:
        """Valid values by tag name (invalid and unread tags as None), for payloads."""
        return {name: (r.value if r.valid else None) for name, r in self.readings.items()}


class RecordKind(enum.StrEnum):
    """The ``kind`` attribute of a published message."""

    TELEMETRY = "telemetry"
    EVENT = "event"
    GAP = "gap"
    COMMAND_RESULT = "command_result"


@attrs.frozen
class Event:
    """Something an operator or the cloud must learn about (SAFETY_BLOCK, COMMAND_REJECTED...).

    ``critical`` events (safety and command outcomes) are never dropped by the spool's disk
    budget; everything else may be, with a gap record saying so.
    """

    name: str
    site_id: str
    device_id: str
    ts: float
    body: Mapping[str, Any] = attrs.field(factory=dict, converter=_body_copy)
    kind: RecordKind = RecordKind.EVENT
    critical: bool = True


class Action(enum.StrEnum):
    """What a dispatch command asks the battery to do."""

    CHARGE = "charge"
    DISCHARGE = "discharge"
    STOP = "stop"
    AUTO = "auto"


@attrs.frozen
class Command:
    """A dispatch command from the cloud or an operator.

    ``issued_at`` and ``expires_at`` are wall time (epoch seconds). A command that arrives after
    ``expires_at`` (for instance after an outage) is rejected, never applied late.
    """

    id: str
    site_id: str
    device_id: str
    action: Action = attrs.field(converter=Action)
    power_w: float = 0.0
    issued_at: float = 0.0
    expires_at: float = 0.0
