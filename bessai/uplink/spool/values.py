"""What the spool hands to its callers: the stamp on an accepted record, and its figures."""

from __future__ import annotations

from typing import Any, NamedTuple

import attrs


class Accepted(NamedTuple):
    """What the spool stamped on an accepted record (a tuple: cheap at 100,000 a second)."""

    device_id: str
    seq: int
    msg_id: str


@attrs.frozen
class SpoolStats:
    """For the status endpoint and ``bessai spool stats``."""

    path: str
    depth: int
    bytes: int
    max_bytes: int | None
    oldest_pending_age_s: float | None
    drops: dict[str, int]
    dead_letters: int
    leased: int = 0
    commits: int = 0
    condition: str = "ok"
    """``ok`` or the disk fault the spool is in (disk_full, read_only, locked, ...)."""
    condition_detail: str | None = None
    condition_for_s: float | None = None
    held: int = 0
    """Critical records waiting in memory for the disk to recover."""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)
