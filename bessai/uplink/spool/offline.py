"""The spool file for the CLI (``bessai spool stats|export|backup|import``): synchronous tools
that open the file by path, each with its own short-lived connection, safe while the gateway
runs (SQLite's locking and WAL keep the running spool's view and theirs consistent).

They never touch a running `Spool`: reading uses a read-only connection; `import_rows` writes
rows in short transactions and the gateway notices them through SQLite's ``data_version``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import attrs

from bessai.clock import WallClock, system_wall_clock
from bessai.uplink.message import SpoolRow
from bessai.uplink.spool.errors import SpoolError
from bessai.uplink.spool.schema import (
    COLUMNS,
    INSERT_ROW,
    dead_letter_count,
    drop_counts,
    oldest_enqueued_at,
    row_from,
    totals,
)
from bessai.uplink.spool.values import SpoolStats

IMPORT_CHUNK_ROWS = 1000
"""Rows per transaction: the gateway's commits wait for the write lock at most one chunk."""


def _open_ro(path: Path) -> sqlite3.Connection:
    if not Path(path).exists():
        raise SpoolError(f"no spool at {path} — check SPOOL_PATH (the gateway creates it on start)")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_stats(path: str | Path, *, wall_clock: WallClock = system_wall_clock) -> SpoolStats:
    """Figures for ``bessai spool stats``, read from the file (safe while the gateway runs)."""
    conn = _open_ro(Path(path))
    try:
        depth, size = totals(conn)
        oldest = oldest_enqueued_at(conn)
        drops = drop_counts(conn)
        dead = dead_letter_count(conn)
    finally:
        conn.close()
    return SpoolStats(path=str(path), depth=depth, bytes=size, max_bytes=None,
                      oldest_pending_age_s=(wall_clock() - oldest) if oldest is not None
                      else None, drops=drops, dead_letters=dead)


def iter_rows(path: str | Path, *, table: str = "outbox") -> Iterator[SpoolRow]:
    """Every row of ``outbox`` or ``dead_letter``, oldest first."""
    if table not in ("outbox", "dead_letter"):
        raise SpoolError(f"unknown table {table!r}: use 'outbox' or 'dead_letter'")
    conn = _open_ro(Path(path))
    try:
        for t in conn.execute(f"SELECT {COLUMNS} FROM {table} ORDER BY id"):
            yield row_from(t)
    finally:
        conn.close()


def export_rows(path: str | Path, out: TextIO, *, table: str = "outbox") -> int:
    """Write rows as JSON lines (for ``bessai spool export``); returns how many."""
    n = 0
    for row in iter_rows(path, table=table):
        out.write(json.dumps(row.to_json(), separators=(",", ":")) + "\n")
        n += 1
    return n


def backup_spool(path: str | Path, dest: str | Path) -> SpoolStats:
    """Write a consistent single-file copy of the spool to ``dest``; safe while the gateway runs.

    Uses SQLite's online backup API, so the copy holds every committed row, including those
    still in the ``-wal`` file (a plain ``cp`` of ``outbox.sqlite`` alone can miss them or catch
    a torn page). The copy is written beside ``dest`` and renamed into place, is in rollback
    journal mode (one self-contained file) and passes ``PRAGMA integrity_check``. Never
    overwrites ``dest``. Returns the copy's figures.
    """
    dest = Path(dest)
    if dest.exists():
        raise SpoolError(f"{dest} already exists — a backup never overwrites; choose a new name")
    part = dest.with_name(dest.name + ".part")
    src = _open_ro(Path(path))
    try:
        out = sqlite3.connect(part)
        try:
            src.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")
            verdict = out.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            out.close()
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    if verdict != "ok":
        part.unlink(missing_ok=True)
        raise SpoolError(f"the copy of {path} failed its integrity check ({verdict}); "
                         "run the backup again, and check the disk")
    os.replace(part, dest)
    return read_stats(dest)


@attrs.frozen
class ImportResult:
    """What ``bessai spool import`` did."""

    imported: int
    already_there: int
    unreadable: str | None
    """Why reading the source stopped early (a damaged page), or None if it was read whole."""


def import_rows(source: str | Path, dest: str | Path, *,
                busy_timeout_s: float = 30.0) -> ImportResult:
    """Re-queue the pending rows of ``source`` (a spool moved aside as corrupt, or a backup)
    into the spool ``dest``, with their original ``seq`` and ``msg_id``; safe while the gateway
    runs (it notices the new rows through SQLite's ``data_version``).

    Rows whose ``msg_id`` is already in ``dest`` are skipped, so an import can be repeated.
    A damaged source is read up to its first unreadable page; the result says where it
    stopped. ``dest``'s per-device seq counters are raised to at least the imported seqs, so
    seq never goes back.
    """
    src = _open_ro(Path(source))
    if not Path(dest).exists():
        src.close()
        raise SpoolError(f"no spool at {dest} — start the gateway once (it creates the spool), "
                         "or check SPOOL_PATH")
    out = sqlite3.connect(dest, isolation_level=None, timeout=busy_timeout_s)
    imported = skipped = 0
    unreadable: str | None = None
    try:
        known = {row[0] for row in out.execute("SELECT msg_id FROM outbox")}
        top: dict[str, int] = {}
        after = -1
        while True:
            try:
                chunk = src.execute(
                    f"SELECT {COLUMNS}, size FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                    (after, IMPORT_CHUNK_ROWS)).fetchall()
            except sqlite3.DatabaseError as exc:
                unreadable = f"{getattr(exc, 'sqlite_errorname', type(exc).__name__)}: {exc}"
                break
            if not chunk:
                break
            after = chunk[-1][0]
            fresh = [t for t in chunk if t[2] not in known]
            skipped += len(chunk) - len(fresh)
            if not fresh:
                continue
            out.execute("BEGIN IMMEDIATE")
            try:
                out.executemany(INSERT_ROW, [t[1:] for t in fresh])
                for t in fresh:
                    top[t[4]] = max(top.get(t[4], 0), t[1])
                out.executemany(
                    "INSERT INTO seqs VALUES (?, ?) ON CONFLICT(device_id) DO UPDATE "
                    "SET last_seq = max(last_seq, excluded.last_seq)", list(top.items()))
                out.execute("COMMIT")
            except BaseException:
                if out.in_transaction:
                    out.execute("ROLLBACK")
                raise
            known.update(t[2] for t in fresh)
            imported += len(fresh)
    finally:
        src.close()
        out.close()
    return ImportResult(imported=imported, already_there=skipped, unreadable=unreadable)
