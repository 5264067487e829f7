"""Bounds on what the gateway echoes back: one place that decides how long an echoed value may be.

Anything a peer sends (a command field, an HTTP path, a Modbus reply, a file name from a config)
can end up in a log line, an event body or a result message. Echoing it whole lets one 6 MB field
become a 12 MB log line and an event that Pub/Sub refuses. Every echo goes through `clip`, which
keeps the start of the text and says how much was cut, so the operator still sees what arrived.
"""

from __future__ import annotations

from typing import Any

MAX_ECHO_CHARS = 200
"""The longest echoed value (a field of a rejected command, a reason, a path) in logs and events."""

TRUNCATION_MARKER = "…[+{cut} chars]"


def clip(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters plus a marker saying how much was cut.

    ``repr`` is not used for strings so an operator sees the text as sent; anything else is
    formatted with ``str`` first and then clipped, so a huge list or a 400-digit integer costs
    one bounded line (the integer is formatted without Python's int-to-str digit limit).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        text = _int_text(value, limit)
    else:
        text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARKER.format(cut=len(text) - limit)


def _int_text(value: int, limit: int) -> str:
    """Digits of ``value`` without tripping ``sys.int_info.str_digits_check_threshold``."""
    try:
        return str(value)
    except ValueError:  # more than 4300 digits: say how big it is instead
        bits = value.bit_length()
        return f"<integer of about {int(bits * 0.30103) + 1} digits>"
