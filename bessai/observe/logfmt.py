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
* the output never contains a newline, so exceptions fold into one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_NEEDS_QUOTES = re.compile(r'[\s="\\\x00-\x1f\x7f\x85\u2028\u2029]')
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TO_ESCAPE = re.compile(r'[\\"\x00-\x1f\x7f\x85\u2028\u2029]')


def render_key(key: str) -> str:
    return _BAD_KEY_CHARS.sub("_", key) or "_"


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def render_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + _TO_ESCAPE.sub(_escape, text) + '"'


def render(items: Iterable[tuple[str, Any]]) -> str:
    return " ".join(f"{render_key(k)}={render_value(v)}" for k, v in items)
