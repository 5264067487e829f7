"""One-line ``event=... key=value`` log records for the simulator (stdlib logging).

The job: render what clients do (connect, write, disconnect) and what the device decides
(forced mode ends, comm loss) as single logfmt lines an operator can grep. Values with spaces
or quotes are quoted; nothing here ever raises.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("bessai.sim")


def _fmt(value: object) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    if not text or any(c in text for c in ' "=\\\n\r'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'
    return text


def render(event: str, **fields: object) -> str:
    """``event=NAME k=v ...`` in the order given."""
    return " ".join([f"event={event}", *(f"{k}={_fmt(v)}" for k, v in fields.items())])


def log(level: int, event: str, **fields: object) -> None:
    """Log one event as one line on the ``bessai.sim`` logger."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", render(event, **fields))
