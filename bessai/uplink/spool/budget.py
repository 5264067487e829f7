"""The disk budget's alarm: where the spool stands against ``SPOOL_MAX_BYTES``, said once.

Four states, each logged once on entering (never per commit): ``SPOOL_BUDGET_WARN`` at 80 %
(the uplink is behind), ``SPOOL_BUDGET_FULL`` while telemetry is being dropped,
``SPOOL_BUDGET_EXCEEDED`` when only critical rows are left (they are never dropped), and
``SPOOL_BUDGET_OK`` below 72 % (hysteresis, so a spool hovering at 80 % does not flap).
"""

from __future__ import annotations

from typing import Any

import attrs

WARN_FRACTION = 0.8


@attrs.define
class BudgetAlarm:
    state: str = "ok"
    """``ok``, ``warned``, ``dropping`` or ``exceeded``."""

    def check(self, *, path: str, used_bytes: int, max_bytes: int | None, dropped: int,
              log: Any) -> None:
        """After a commit: ``used_bytes`` in the outbox, ``dropped`` rows by the budget."""
        if max_bytes is None:
            return
        used = used_bytes / max_bytes
        if dropped:
            if self.state != "dropping":
                log.warning("SPOOL_BUDGET_FULL", path=path, bytes=used_bytes,
                            max_bytes=max_bytes, dropped=dropped,
                            action="dropping the oldest telemetry with gap records; "
                                   "critical events are kept")
            self.state = "dropping"
        elif used > 1.0 and self.state != "exceeded":
            log.error("SPOOL_BUDGET_EXCEEDED", path=path, bytes=used_bytes, max_bytes=max_bytes,
                      action="only critical rows are left and they are never dropped; "
                             "restore the uplink or raise SPOOL_MAX_BYTES")
            self.state = "exceeded"
        elif used >= WARN_FRACTION and self.state == "ok":
            log.warning("SPOOL_BUDGET_WARN", path=path, bytes=used_bytes, max_bytes=max_bytes,
                        used_pct=round(used * 100, 1),
                        action="the uplink is behind; telemetry is dropped at 100 %")
            self.state = "warned"
        elif used < WARN_FRACTION * 0.9 and self.state != "ok":
            log.info("SPOOL_BUDGET_OK", path=path, used_pct=round(used * 100, 1))
            self.state = "ok"
