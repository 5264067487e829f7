"""Bounds on what the gateway echoes back: one place that decides how long an echoed value may be.

Anything a peer sends (a command field, an HTTP path, a Modbus reply, a file name from a config)
can end up in a log line, an event body or a result message. Echoing it whole lets one 6 MB field
become a 12 MB log line and an event that Pub/Sub refuses. Every echo goes through `clip`, which
keeps the start of the text and says how much was cut, so the operator still sees what arrived.

The stated limits, all here so that a reader finds them in one place:

* `MAX_ECHO_CHARS` (200): one echoed value (a field of a rejected command, a path);
* `MAX_REASON_CHARS` (1,000): a rejection reason, which may quote several clipped values;
* `MAX_LOG_VALUE_CHARS` (2,000) / `MAX_LOG_EXCEPTION_CHARS` (8,000): one field of a log line /
  a folded traceback, before escaping (`bessai.observe.logfmt`);
* `MAX_LOG_LINE_CHARS` (16,384): a whole log line, marker included;
* `MAX_EVENT_BODY_BYTES` (65,536): the JSON of an event's body on its way to the spool
  (`bound_body`); Pub/Sub allows 10 MB per message, so an event can never be refused for size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MAX_ECHO_CHARS = 200
"""The longest echoed value (a field of a rejected command, a reason, a path) in logs and events."""

MAX_REASON_CHARS = 1000
"""The longest rejection reason (it may name several bad fields, each clipped)."""

MAX_LOG_VALUE_CHARS = 2000
"""The longest value of one log field, before escaping."""

MAX_LOG_EXCEPTION_CHARS = 8000
"""The longest folded traceback in a log line (the ``exception`` field)."""

MAX_LOG_LINE_CHARS = 16384
"""The longest log line, marker included (`bessai.observe.logfmt.render`)."""

MAX_EVENT_BODY_BYTES = 65536
"""The longest event body, as compact JSON, that reaches the spool (`bound_body`)."""

TRUNCATION_MARKER = "…[+{cut} chars]"


def clip(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters plus a marker saying how much was cut.

    ``repr`` is not used for strings so an operator sees the text as sent; anything else is
    formatted with ``str`` first and then clipped, so a huge list or a 400-digit integer costs
    one bounded line (the integer is formatted without Python's int-to-str digit limit).
    Never raises: a value whose ``str`` fails is shown by its type.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        text = _int_text(value, limit)
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception:  # a hostile or broken __str__ must not break the echo
            text = f"<unprintable {type(value).__name__}>"
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER.format(cut=len(text) - limit)


def clip_repr(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` clipped (for reasons that quote what was sent: ``got 'lots'``).

    A string is clipped before ``repr`` so a 6 MB field is never copied whole; ``repr`` escapes
    control characters and lone surrogates, so the result is printable and encodable.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return repr(value[:limit]) + TRUNCATION_MARKER.format(cut=len(value) - limit)
    if isinstance(value, int) and not isinstance(value, bool):
        return clip(value, limit)
    try:
        text = repr(value)
    except Exception:  # RecursionError on a deep structure, a broken __repr__
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def _int_text(value: int, limit: int) -> str:
    """Digits of ``value`` without tripping ``sys.int_info.str_digits_check_threshold``."""
    try:
        return str(value)
    except ValueError:  # more than 4300 digits: say how big it is instead
        bits = value.bit_length()
        return f"<integer of about {int(bits * 0.30103) + 1} digits>"


def _json_size(body: Mapping[str, Any]) -> int | None:
    """Bytes of ``body`` as compact JSON (what JSON cannot carry counted as its repr), or None
    if even that fails (a structure too deep to encode)."""
    try:
        return len(json.dumps(body, separators=(",", ":"), default=repr).encode())
    except (TypeError, ValueError, RecursionError):
        return None


def _plain_scalar(value: Any) -> bool:
    """None, a bool, a finite float or an int JSON readers take as a number: kept as is."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and abs(value) < 2**63


def bound_body(body: Mapping[str, Any], limit: int = MAX_EVENT_BODY_BYTES) -> dict[str, Any]:
    """``body`` itself if its JSON fits in ``limit`` bytes; otherwise a bounded copy, marked.

    The copy keeps every key (clipped) with its value clipped to `MAX_ECHO_CHARS` as text
    (numbers, booleans and None stay as they are), plus ``"truncated": {"original_bytes": N,
    "limit_bytes": L, "reason": ...}`` so the receiver knows it is not the whole body. If even
    that does not fit (thousands of keys), only the marker and the first keys are kept. Never
    raises. A small body that strict JSON cannot carry (NaN, an object) is returned as it is:
    making it JSON-safe is the caller's job (the gateway logs EVENT_BODY_NOT_JSON for it); in
    a bounded copy such values are text.
    """
    size = _json_size(body)
    if size is not None and size <= limit:
        return dict(body)
    clipped: dict[str, Any] = {}
    for key, value in body.items():
        short = clip(key, MAX_ECHO_CHARS)
        if _plain_scalar(value):
            clipped[short] = value
        else:
            clipped[short] = clip(value, MAX_ECHO_CHARS)
    marker = {"original_bytes": size, "limit_bytes": limit,
              "reason": "not encodable" if size is None else "too large"}
    clipped["truncated"] = marker
    if (_json_size(clipped) or limit + 1) <= limit - 1024:
        return clipped
    keys = list(body)
    return {"truncated": {**marker, "keys": len(keys),
                          "first_keys": [clip(k, 64) for k in keys[:50]]}}
