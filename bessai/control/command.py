"""Parsing a dispatch command from its wire form, with a clear reason for every bad field.

The wire form is a JSON object (a Pub/Sub message's data) with the fields of
`bessai.model.Command`::

    {"id": "c-42", "site_id": "site1", "device_id": "inv1", "action": "discharge",
     "power_w": 3000, "issued_at": 1767225600, "expires_at": "2026-01-01T00:05:00Z"}

* ``action`` is one of ``charge``, ``discharge``, ``stop``, ``auto``.
* ``power_w`` (watts, > 0) is required for ``charge`` and ``discharge``; ignored otherwise.
* ``expires_at`` is required (epoch seconds or ISO 8601 with a zone): a command without an expiry
  could be applied arbitrarily late, so it is refused. ``issued_at`` is optional.
* ``site_id`` / ``device_id`` may come from the message attributes when the body lacks them; if
  both carry them and they differ, the command is refused.

Unknown fields are ignored (forward compatibility); every problem with a known field is reported
at once, keyed by field, so the sender can fix them all in one go.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

from bessai.model import Action, Command

MAX_ID_LEN = 128


class InvalidCommand(ValueError):
    """The message is not a valid command. ``errors`` maps each bad field to its reason."""

    def __init__(self, errors: Mapping[str, str], command_id: str | None = None) -> None:
        self.errors = dict(errors)
        self.command_id = command_id
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        super().__init__(f"invalid command — {detail}")


def _text(body: Mapping[str, Any], field: str, errors: dict[str, str]) -> str | None:
    value = body.get(field)
    if value is None:
        errors[field] = "missing — give a non-empty string"
    elif not isinstance(value, str) or not value.strip():
        errors[field] = f"must be a non-empty string, got {value!r}"
    elif len(value) > MAX_ID_LEN:
        errors[field] = f"longer than {MAX_ID_LEN} characters"
    else:
        return value
    return None


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
        if not math.isfinite(value) or value < 0:
            errors[field] = f"must be a finite, non-negative epoch time, got {value!r}"
            return None
        return float(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            errors[field] = f"{value!r} is not an ISO 8601 time, e.g. 2026-01-01T00:05:00Z"
            return None
        if parsed.tzinfo is None:
            errors[field] = f"{value!r} has no time zone — add Z or +00:00"
            return None
        return parsed.timestamp()
    errors[field] = f"must be epoch seconds or an ISO 8601 time, got {type(value).__name__}"
    return None


def parse_command(data: bytes | str | Mapping[str, Any],
                  attributes: Mapping[str, str] | None = None) -> Command:
    """A Command from a message body (JSON bytes/str or an already decoded object).

    Raises InvalidCommand listing every bad field.
    """
    attributes = attributes or {}
    if isinstance(data, bytes | str):
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidCommand({"body": f"not valid JSON ({exc})"}) from None
    else:
        body = data
    if not isinstance(body, Mapping):
        raise InvalidCommand({"body": f"must be a JSON object, got {type(body).__name__}"})
    body = dict(body)
    errors: dict[str, str] = {}
    for field in ("site_id", "device_id"):
        from_attr = attributes.get(field)
        if body.get(field) is None and from_attr is not None:
            body[field] = from_attr
        elif from_attr is not None and body.get(field) != from_attr:
            errors[field] = (f"body says {body.get(field)!r} but the message attribute says "
                             f"{from_attr!r} — make them agree")

    command_id = _text(body, "id", errors)
    site_id = _text(body, "site_id", errors) if "site_id" not in errors else None
    device_id = _text(body, "device_id", errors) if "device_id" not in errors else None

    action: Action | None = None
    raw_action = body.get("action")
    try:
        action = Action(raw_action)
    except ValueError:
        errors["action"] = (f"{raw_action!r} is not an action — use one of "
                            f"{', '.join(a.value for a in Action)}")

    power_w = 0.0
    raw_power = body.get("power_w")
    if action in (Action.CHARGE, Action.DISCHARGE):
        if raw_power is None:
            errors["power_w"] = f"missing — {action.value} needs a power in watts, e.g. 3000"
        elif (isinstance(raw_power, bool) or not isinstance(raw_power, int | float)
              or not math.isfinite(raw_power)):
            errors["power_w"] = f"must be a number of watts, got {raw_power!r}"
        elif raw_power <= 0:
            errors["power_w"] = (f"must be more than 0 W, got {raw_power!r} — send action=stop "
                                 f"to stop, the action gives the direction")
        else:
            power_w = float(raw_power)

    issued_at = _time(body, "issued_at", errors, required=False)
    expires_at = _time(body, "expires_at", errors, required=True)
    if issued_at is not None and expires_at is not None and expires_at <= issued_at:
        errors["expires_at"] = f"must be later than issued_at ({expires_at} <= {issued_at})"

    if errors:
        raise InvalidCommand(errors, command_id=command_id)
    return Command(id=command_id, site_id=site_id, device_id=device_id,  # type: ignore[arg-type]
                   action=action, power_w=power_w, issued_at=issued_at or 0.0,
                   expires_at=expires_at)  # type: ignore[arg-type]
