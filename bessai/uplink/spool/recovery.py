"""Opening the spool's file: integrity check, schema, what a crash or a damaged file left.

Runs only in the store's thread (`bessai.uplink.spool.store`), on the connection it owns.

- **Only SQLite says "corrupt"**: a file is moved aside (``<name>.corrupt-<UTC time>``, loud
  ``SPOOL_CORRUPT``) only for ``SQLITE_CORRUPT`` / ``SQLITE_NOTADB`` or a failed
  ``quick_check``; every other error propagates as the disk fault it is. The moved file's rows
  are not re-queued (the gateway does not read a file SQLite just called damaged); its seqs are
  salvaged when they can be read, so seq stays monotonic.
- **Seq never goes back**: a replaced or recreated file continues from the highest seq known,
  the file's or the running spool's.
- Rows left by a crash are simply pending again (``SPOOL_RECOVERED``); a deleted file's critical
  rows are written into its replacement with their row ids (`restore_salvaged`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

from bessai.uplink.message import RowPriority
from bessai.uplink.spool.disk import describe, is_corrupt
from bessai.uplink.spool.messages import Lost, Opened, Salvage
from bessai.uplink.spool.schema import (
    dead_letter_count,
    drop_counts,
    init_schema,
    oldest_enqueued_at,
    seqs_on_file,
    totals,
)


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL`` (accepted means on disk). Only the
    thread that made it may use it (sqlite3's ``check_same_thread``): the store's thread."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def open_checked(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to a file that passed ``quick_check``, with the schema in place."""
    conn = connect(path, busy_timeout_s)
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            error = sqlite3.DatabaseError(f"quick_check says {check[0] if check else None}")
            error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
            error.sqlite_errorname = "SQLITE_CORRUPT"
            raise error
        init_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def open_recovering(path: Path, now: float, busy_timeout_s: float,
                    log: Any) -> tuple[sqlite3.Connection, Path | None]:
    """Open (or create) the file; a file SQLite calls corrupt is moved aside and a fresh one
    started. Returns the connection and where a corrupt file went (None if none was).

    Raises `sqlite3.Error` / `OSError` for a disk fault (locked, read-only, unwritable...).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return open_checked(path, busy_timeout_s), None
    except sqlite3.DatabaseError as exc:
        if not is_corrupt(exc):
            raise  # locked, read-only, unwritable...: a disk fault, never "corrupt"
        salvaged = salvage_seqs(path)
        moved = move_aside(path, now)
        log.error("SPOOL_CORRUPT", path=str(path), moved_to=str(moved),
                  error=getattr(exc, "sqlite_errorname", type(exc).__name__),
                  detail=str(exc)[:200], seqs_salvaged=len(salvaged),
                  action=f"started a fresh spool; re-queue the moved file's rows with "
                         f"`bessai spool import {moved}`")
    conn = open_checked(path, busy_timeout_s)
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)", salvaged.items())
    except BaseException:
        conn.close()
        raise
    return conn, moved


def salvage_seqs(path: Path) -> dict[str, int]:
    """Best effort: keep seq monotonic even when the rest of the file is lost."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return seqs_on_file(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def _utc_stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def move_aside(path: Path, now: float) -> Path:
    """Move the file and its ``-wal`` / ``-shm`` to ``<name>.corrupt-<UTC time>`` (never over
    an earlier one), where ``bessai spool import`` can read what is left."""
    target = path.with_name(f"{path.name}.corrupt-{_utc_stamp(now)}")
    n = 0
    while target.exists():
        n += 1
        target = target.with_name(f"{target.name}.{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{target}{suffix}"))
    return target


def restore_salvaged(conn: sqlite3.Connection, salvage: Salvage) -> None:
    """Write the critical rows saved from a deleted file into its replacement, with their
    row ids, and start new row ids above every id the old file used (an ack for a row of
    the old file then deletes that row or nothing, never another row)."""
    if not salvage:
        return
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO outbox (id, seq, msg_id, site_id, device_id, kind, "
            "event_time, data, priority, enqueued_at, size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", salvage.rows)
        top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        if top is None:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)",
                         (salvage.top_id,))
        elif top[0] < salvage.top_id:
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'",
                         (salvage.top_id,))


def load_state(conn: sqlite3.Connection, path: Path, known_seqs: dict[str, int],
               moved_to: Path | None, log: Any) -> Opened:
    """The figures of the opened file, with seqs raised to what the running spool knew."""
    on_file = seqs_on_file(conn)
    last_seq = {d: max(on_file.get(d, 0), known_seqs.get(d, 0))
                for d in on_file.keys() | known_seqs.keys()}
    behind = [(d, n) for d, n in last_seq.items() if on_file.get(d, 0) < n]
    if behind:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)", behind)
    depth, size = totals(conn)
    opened = Opened(moved_to=moved_to, last_seq=last_seq, depth=depth, bytes=size,
                    drops=drop_counts(conn), dead_letters=dead_letter_count(conn),
                    oldest_enqueued_at=oldest_enqueued_at(conn))
    if depth:
        log.info("SPOOL_RECOVERED", path=str(path), pending=depth, bytes=size,
                 note="rows left by the previous run will be sent again")
    return opened


def salvage_deleted(conn: sqlite3.Connection, path: Path,
                    log: Any) -> tuple[Salvage, list[Lost]]:
    """From a deleted file (still readable through ``conn``, which this closes): its critical
    rows, to write into the new file, and the rest described as lost, per device."""
    lost: list[Lost] = []
    salvage = Salvage()
    try:
        rows = conn.execute(
            "SELECT id, seq, msg_id, site_id, device_id, kind, event_time, data, priority, "
            "enqueued_at, size FROM outbox WHERE priority = ? ORDER BY id",
            (int(RowPriority.CRITICAL),)).fetchall()
        salvage = Salvage(rows=rows)
        top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        salvage = Salvage(rows=rows, top_id=top[0] if top else 0)
        for site, device, first, last, count, first_ts, last_ts in conn.execute(
                "SELECT site_id, device_id, min(seq), max(seq), count(*), min(event_time), "
                "max(event_time) FROM outbox WHERE priority != ? GROUP BY device_id",
                (int(RowPriority.CRITICAL),)):
            lost.append(Lost(site, device, "file_deleted", count, first_ts, last_ts,
                             first_seq=first, last_seq=last))
    except sqlite3.Error as exc:
        log.error("SPOOL_DELETED_UNREADABLE", path=str(path),
                  error=describe(exc)[0], detail=describe(exc)[1],
                  note="the deleted file's rows could not be read; its loss is "
                       "reported by the seq hole downstream")
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    return salvage, lost
