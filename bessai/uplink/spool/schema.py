"""The spool's on-disk format: its tables, its schema version, and a row read back.

The format is a contract with files written by earlier versions and with ``bessai spool
import``, so it lives here once. The dead-letter table is the outbox's columns plus why and
when a row died (``INSERT INTO dead_letter SELECT *, ?, ? FROM outbox`` relies on that order):
both tables are written from one column list, and the text stored in ``sqlite_master`` is
byte for byte what earlier versions stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from bessai.uplink.message import SpoolRow

SCHEMA_VERSION = 1
ROW_OVERHEAD_BYTES = 120
"""Estimated on-disk bytes per row besides its data (columns, index entries, page slack)."""

COLUMNS = "id, seq, msg_id, site_id, device_id, kind, event_time, data, priority, enqueued_at"
"""The columns a `SpoolRow` is read from (`row_from`), in its order."""

INSERT_ROW = (
    "INSERT INTO outbox (seq, msg_id, site_id, device_id, kind, event_time, data,"
    " priority, enqueued_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
"""One new outbox row: ``(seq, msg_id, site_id, device_id, kind, event_time, data, priority,
enqueued_at, size)``; the id is SQLite's (AUTOINCREMENT, never reused)."""

_ROW_COLUMNS = """    seq INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_time REAL NOT NULL,
    data BLOB NOT NULL,
    priority INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    size INTEGER NOT NULL"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
{_ROW_COLUMNS}
);
CREATE INDEX IF NOT EXISTS outbox_gaps ON outbox (device_id, id) WHERE kind = 'gap';
CREATE TABLE IF NOT EXISTS seqs (device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drops (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
{_ROW_COLUMNS},
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
"""


def init_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing (a no-op on a current file) and stamp the schema version."""
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def row_from(t: Sequence[Any]) -> SpoolRow:
    """A `SpoolRow` from the columns of `COLUMNS`, in that order."""
    return SpoolRow(row_id=t[0], seq=t[1], msg_id=t[2], site_id=t[3], device_id=t[4], kind=t[5],
                    event_time=t[6], data=bytes(t[7]), priority=t[8], enqueued_at=t[9])


def totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(rows, bytes)`` of the outbox, counted from the file."""
    depth, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
    return int(depth), int(size)


def oldest_enqueued_at(conn: sqlite3.Connection) -> float | None:
    """When the oldest pending row was accepted (wall clock), or None for an empty outbox."""
    row = conn.execute("SELECT enqueued_at FROM outbox ORDER BY id LIMIT 1").fetchone()
    return float(row[0]) if row else None


def drop_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows dropped so far, by reason (budget, max_age, disk_fault, file_deleted, ...)."""
    return dict(conn.execute("SELECT reason, count FROM drops").fetchall())


def dead_letter_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0])


def seqs_on_file(conn: sqlite3.Connection) -> dict[str, int]:
    """The last seq stamped per device, as the file records it."""
    return dict(conn.execute("SELECT device_id, last_seq FROM seqs").fetchall())
