"""Redaction: no secret ever reaches a log line or a span attribute.

Two nets, both applied to every field of every event (the event name and a formatted traceback
included):

* **by key**: the value of a field whose name looks secret (``token``, ``secret``, ``password``,
  ``authorization``, ``private_key``, ``credentials``, ``api_key``, ``key``, ``*_key``,
  ``cookie``...) is replaced whole by ``[REDACTED]``, whatever its type;
* **by shape**: inside any string, PEM blocks, ``Bearer``/``Basic`` credentials, JWTs, Google
  OAuth access tokens and ``secret_name=value`` / ``"secret_name": "value"`` pairs are masked.

Invariant: `redact_value` never raises and never returns any character of a masked secret.
Non-string leaves other than numbers, booleans and ``None`` are turned into strings first, so an
exception or a credentials object passed as a field is scanned too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(token|secret|passw(or)?d|\bpwd\b|authori[sz]ation|credential|private[_-]?key|api[_-]?key"
    r"|apikey|cookie|signature|(^|[_.-])key($|[_.-])|(^|[_.-])auth($|[_.-]))",
    re.IGNORECASE,
)

_SECRET_WORD = (
    r"(?:access[_-]?token|refresh[_-]?token|id[_-]?token|token|secret|client[_-]?secret|"
    r"passw(?:or)?d|pwd|api[_-]?key|apikey|private[_-]?key(?:[_-]?id)?|authorization|"
    r"credentials?|signature|sig)"
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A whole PEM block (real newlines or JSON-escaped ``\n``), or a truncated one to the end.
    (re.compile(r"-----BEGIN[A-Z0-9 ]*-----.*?(-----END[A-Z0-9 ]*-----|$)", re.DOTALL),
     "[REDACTED PEM]"),
    # Authorization schemes: "Bearer abc.def", "Basic dXNlcjpwYXNz".
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE),
     r"\1 " + MASK),
    # JWTs (self-signed service-account JWTs, ID tokens).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.?[A-Za-z0-9_-]*"), MASK),
    # Google OAuth2 access tokens.
    (re.compile(r"\bya29\.[A-Za-z0-9_\-.]+"), MASK),
    # name=value, name: value, "name": "value" (URLs, JSON, error messages).
    (re.compile(
        r"(?P<name>[\"']?\b" + _SECRET_WORD + r"\b[\"']?\s*[:=]\s*)"
        r"(?P<q>[\"']?)(?P<v>[^\s\"'&,;}]+)",
        re.IGNORECASE,
    ), r"\g<name>\g<q>" + MASK),
)


def is_secret_key(key: str) -> bool:
    """True when a field named ``key`` must never have its value shown."""
    return bool(_SECRET_KEY.search(key))


def redact_text(text: str) -> str:
    """Mask every secret-shaped substring of ``text``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """Redact a field value of any type (recursing into mappings and sequences)."""
    try:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return redact_text(value)
        if isinstance(value, Mapping):
            return {str(k): (MASK if is_secret_key(str(k)) else redact_value(v))
                    for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [redact_value(v) for v in value]
        if isinstance(value, bytes | bytearray):
            return redact_text(bytes(value).decode("utf-8", "replace"))
        return redact_text(str(value))
    except Exception:  # a hostile __str__ must not break logging
        return MASK


def redact_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Redact a flat mapping of fields (a log event, span attributes)."""
    return {key: (MASK if is_secret_key(key) else redact_value(value))
            for key, value in fields.items()}
