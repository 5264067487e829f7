"""A strict logfmt renderer: one event, one line, always parseable.

structlog ships a `LogfmtRenderer`, but it leaves tabs and carriage returns raw, escapes
backslashes only inside quoted values (so ``a\\nb`` and a real newline render alike) and raises
on a key with a space. A log line that cannot be parsed, or a logging call that raises, costs the
operator more than these thirty lines, so the gateway renders its own:

* keys are reduced to ``[A-Za-z0-9_.-]`` (anything else becomes ``_``), never empty;
* a value is quoted when it is empty or holds a space, ``=``, ``"``, ``\\`` or a control
  character; inside quotes ``\\``, ``"``, newline, CR and tab are backslash-escaped and any other
  control character (and U+0085, U+2028, U+2029) is written ``\\uXXXX``;
* booleans are ``true``/``false``, ``None`` is an empty quoted value ``""``;
* the output never contains a newline, so exceptions fold into one line;
* lone surrogates (from a ``"\\ud800"`` escape in hostile JSON) are written ``\\udXXX``, so a line
  can always be encoded to UTF-8 and is never lost at the stream;
* **bounded**: each value is clipped (`bessai.bounds.clip`, with its marker) to
  `MAX_LOG_VALUE_CHARS` (a traceback in ``exception`` to `MAX_LOG_EXCEPTION_CHARS`) before
  escaping, and a line longer than `MAX_LOG_LINE_CHARS` is rendered again with every value cut
  shorter, then with the fields that still do not fit left out and counted in a final
  ``log_truncated=`` field. The line stays parseable and ``ts level event`` always survive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bessai.bounds import (
    MAX_LOG_EXCEPTION_CHARS,
    MAX_LOG_LINE_CHARS,
    MAX_LOG_VALUE_CHARS,
    clip,
)

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_NEEDS_QUOTES = re.compile(r'[\s="\\\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]')
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TO_ESCAPE = re.compile(r'[\\"\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]')


def render_key(key: str) -> str:
    return _BAD_KEY_CHARS.sub("_", key) or "_"


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def render_value(value: Any, limit: int = MAX_LOG_VALUE_CHARS) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    text = clip(value, limit)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + _TO_ESCAPE.sub(_escape, text) + '"'


def _limit_for(key: str, value_limit: int) -> int:
    """A traceback keeps more than other fields: it is what a bug report needs."""
    return MAX_LOG_EXCEPTION_CHARS if key == "exception" else value_limit


def _render(items: list[tuple[str, Any]], value_limit: int) -> str:
    return " ".join(f"{render_key(k)}={render_value(v, _limit_for(k, value_limit))}"
                    for k, v in items)


def render(items: Iterable[tuple[str, Any]], max_chars: int = MAX_LOG_LINE_CHARS) -> str:
    """One logfmt line of at most ``max_chars`` characters (see the module docstring)."""
    pairs = list(items)
    for value_limit in (MAX_LOG_VALUE_CHARS, 500, 100):  # shorter values: each keeps its start
        line = _render(pairs, value_limit)
        if len(line) <= max_chars:
            return line
    # still too long (hundreds of fields, or escapes everywhere): fields in order while they fit
    parts: list[str] = []
    size = 0
    for index, (key, value) in enumerate(pairs):
        part = f"{render_key(key)}={render_value(value, 2000 if key == 'exception' else 50)}"
        if index >= 3 and size + len(part) > max_chars - 64:
            parts.append(f"log_truncated={len(pairs) - index}_fields_left_out")
            break
        parts.append(part)
        size += len(part) + 1
    return " ".join(parts)
