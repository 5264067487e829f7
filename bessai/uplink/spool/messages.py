"""What crosses between the Trio side (`Spool`) and the store's thread (`Store`): values only.

The connection never crosses: the Trio side sends a request (a `WriteGroup`, a lease's cursor,
the seqs it knows) and gets a value back (an `Outcome`, rows, an `Opened`), or one of the two
exceptions below, which are answers rather than failures. Each value is handed over whole: the
sender does not touch it again until the answer comes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

StoredRow = tuple[Any, ...]
"""A row as SQLite binds or returns it (the column order is the statement's)."""


class FileLost(Exception):
    """The path no longer names the file the connection has open (deleted or replaced)."""


class SeqsMoved(Exception):
    """Another process (``bessai spool import``) raised a device's seq above ours: the group
    must be stamped again from the file's seqs."""

    def __init__(self, seqs: dict[str, int]) -> None:
        super().__init__(seqs)
        self.seqs = seqs


@attrs.define
class Lost:
    """Rows of one device that were never written (or were lost with a deleted file): the gap
    row written at the next successful commit. ``first_seq`` None: the rows never got a seq;
    the gap consumes ``count`` seqs for them."""

    site_id: str
    device_id: str
    reason: str
    count: int
    first_ts: float
    last_ts: float
    first_seq: int | None = None
    last_seq: int | None = None


@attrs.define
class WriteGroup:
    """Everything one transaction writes, and what the Trio side knew when it was stamped."""

    inserts: list[StoredRow]
    deletes: list[int]
    dead: list[tuple[int, str]]
    leased: frozenset[int]
    last_seq: dict[str, int]
    """The seqs after this group (the store advances them further for gap rows it writes)."""
    known_seqs: dict[str, int]
    """The seqs before this group: a file whose seqs are higher was written by an import."""
    depth: int
    bytes: int
    """The outbox's figures before this group (recounted from the file after an import)."""
    insert_bytes: int = 0
    insert_devices: set[str] = attrs.field(factory=set)
    gap_devices: set[str] = attrs.field(factory=set)
    lost_gaps: list[StoredRow] = attrs.field(factory=list)
    """Gap rows for `Lost` rows, inserted before ``inserts``."""
    lost_drops: dict[str, int] = attrs.field(factory=dict)
    """Drops already counted in memory, to persist in the ``drops`` table."""


@attrs.frozen
class Limits:
    """The drop rules a commit applies: the disk budget and the maximum age."""

    max_bytes: int | None
    max_age_s: float | None
    age_due: bool
    """Whether this commit also drops by age (checked every ``age_check_interval_s``)."""


@attrs.frozen
class Outcome:
    """What a committed group left in the outbox."""

    depth: int
    bytes: int
    oldest_enqueued_at: float | None
    dropped: dict[str, int]
    dead_letters: int
    gap_rows: int
    recounted: bool = False


@attrs.frozen
class Salvage:
    """What a deleted file still held when its connection was closed: its critical rows (with
    their row ids, for the file that replaces it) and the highest row id it ever used."""

    rows: list[StoredRow] = attrs.field(factory=list)
    top_id: int = 0

    def __bool__(self) -> bool:
        return bool(self.rows) or bool(self.top_id)


@attrs.frozen
class Opened:
    """The file as an open found it (after recovery)."""

    moved_to: Path | None
    """Where a file SQLite called corrupt was moved, or None."""
    last_seq: dict[str, int]
    """The highest seq known per device (the file's, or ours if higher: seq never goes back)."""
    depth: int
    bytes: int
    drops: dict[str, int]
    dead_letters: int
    oldest_enqueued_at: float | None
