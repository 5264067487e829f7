"""The spool's file and its one SQLite connection, used only in the store's thread.

A `Store` is made in its thread (`bessai.uplink.spool.worker`) and never leaves it: the
connection is opened with sqlite3's ``check_same_thread`` on, so a use from any other thread
raises instead of racing a close. The Trio side sends it requests (`WriteGroup`, a lease's
cursor) and gets values back (`Outcome`, rows).

- **Accepted means on disk**: a group is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (WAL,
  ``synchronous=FULL``: one fsync per group).
- **A deleted or replaced file is noticed before each commit**: the open file's device and
  inode are compared with the path's (`FileLost`); the spool then recreates the file.
- **Rows written by another process** (``bessai spool import``) are noticed through SQLite's
  ``data_version``: the figures are recounted from the file, and a device whose seq the import
  raised makes the group be stamped again (`SeqsMoved`), so seqs never repeat.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from pathlib import Path
from typing import Any

import attrs

from bessai.uplink.message import SpoolRow
from bessai.uplink.spool import drops
from bessai.uplink.spool.messages import (
    FileLost,
    Limits,
    Lost,
    Opened,
    Outcome,
    Salvage,
    SeqsMoved,
    WriteGroup,
)
from bessai.uplink.spool.recovery import (
    load_state,
    open_recovering,
    restore_salvaged,
    salvage_deleted,
)
from bessai.uplink.spool.schema import (
    COLUMNS,
    INSERT_ROW,
    oldest_enqueued_at,
    row_from,
    seqs_on_file,
    totals,
)

DROP_TO_FRACTION = 0.95
"""A drop round frees space down to 95 % of the budget, so drops come in rounds, not per row."""


def _data_version(conn: sqlite3.Connection) -> int:
    """SQLite's counter of commits by OTHER connections to this file."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


@attrs.define(eq=False)
class Store:
    """The open spool file. Every method runs in the store's thread and may block on the disk.

    Methods raise `sqlite3.Error` / `OSError` for a failing disk (the spool names the
    condition), `FileLost` and `SeqsMoved` as answers.
    """

    path: Path
    conn: sqlite3.Connection = attrs.field(repr=False)
    file_id: tuple[int, int]
    """``(st_dev, st_ino)`` of the file the connection has open."""
    data_version: int
    log: Any = attrs.field(repr=False)

    @classmethod
    def open(cls, path: Path, *, now: float, busy_timeout_s: float,
             known_seqs: dict[str, int], salvage: Salvage, log: Any) -> tuple[Store, Opened]:
        """Open (recovering) the file at ``path``; write ``salvage`` (a deleted file's critical
        rows) into it; raise its seqs to ``known_seqs``."""
        conn, moved_to = open_recovering(path, now, busy_timeout_s, log)
        try:
            restore_salvaged(conn, salvage)
            st = os.stat(path)
            version = _data_version(conn)
            opened = load_state(conn, path, known_seqs, moved_to, log)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, (st.st_dev, st.st_ino), version, log), opened

    def close(self) -> None:
        self.conn.close()

    def salvage_and_close(self) -> tuple[Salvage, list[Lost]]:
        """The file was deleted under us: what it still holds (see `salvage_deleted`)."""
        return salvage_deleted(self.conn, self.path, self.log)

    def lease(self, cursor: int, leased: frozenset[int], limit: int,
              max_bytes: int) -> tuple[list[SpoolRow], bool]:
        """The rows after ``cursor`` not in ``leased`` (at most ``limit`` / ``max_bytes``), and
        whether the read reached the end of the outbox."""
        out: list[SpoolRow] = []
        size = 0
        while len(out) < limit:
            chunk = self.conn.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, max(limit - len(out), 64))).fetchall()
            if not chunk:
                return out, True
            for t in chunk:
                cursor = t[0]
                if t[0] in leased:
                    continue
                row = row_from(t)
                row_size = row.encoded_size()
                if out and size + row_size > max_bytes:
                    return out, False
                out.append(row)
                size += row_size
                if len(out) >= limit:
                    break
        return out, False

    def write(self, group: WriteGroup, now: float, limits: Limits) -> Outcome:
        """Commit ``group`` as one transaction, with the drops the limits call for."""
        conn = self.conn
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise FileLost() from None
        if (st.st_dev, st.st_ino) != self.file_id:
            raise FileLost()
        # Another process (``bessai spool import``) committed rows: count them, don't guess.
        recount = _data_version(conn) != self.data_version
        if recount:
            on_file = seqs_on_file(conn)
            if any(n > group.known_seqs.get(d, 0) for d, n in on_file.items()):
                raise SeqsMoved(on_file)
            depth, size = totals(conn)
        else:
            depth, size = group.depth, group.bytes
        dropped: dict[str, int] = {}
        gap_rows = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            if group.lost_gaps:
                conn.executemany(INSERT_ROW, group.lost_gaps)
                depth += len(group.lost_gaps)
                size += sum(t[9] for t in group.lost_gaps)
            if group.inserts:
                conn.executemany(INSERT_ROW, group.inserts)
                depth += len(group.inserts)
                size += group.insert_bytes
            for row_id in group.deletes:
                gone = conn.execute("DELETE FROM outbox WHERE id = ? RETURNING size",
                                    (row_id,)).fetchone()
                if gone:
                    depth -= 1
                    size -= gone[0]
            for row_id, reason in group.dead:
                moved = conn.execute(
                    "INSERT INTO dead_letter SELECT *, ?, ? FROM outbox WHERE id = ?",
                    (reason, now, row_id)).rowcount
                if moved:
                    gone = conn.execute("DELETE FROM outbox WHERE id = ? RETURNING size",
                                        (row_id,)).fetchone()
                    depth -= 1
                    size -= gone[0]
            if limits.age_due and limits.max_age_s is not None:
                victims = drops.select_by_age(conn, group.leased, now - limits.max_age_s)
                d, s, g = drops.drop(conn, victims, "max_age", group, now)
                depth, size, gap_rows = depth + d, size + s, gap_rows + g
                if victims:
                    dropped["max_age"] = len(victims)
            if limits.max_bytes is not None and size > limits.max_bytes:
                target = int(limits.max_bytes * DROP_TO_FRACTION)
                victims = drops.select_by_size(conn, group.leased, size - target)
                d, s, g = drops.drop(conn, victims, "budget", group, now)
                depth, size, gap_rows = depth + d, size + s, gap_rows + g
                if victims:
                    dropped["budget"] = len(victims)
            conn.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)",
                             [(d, group.last_seq[d])
                              for d in group.insert_devices | group.gap_devices])
            for reason, n in itertools.chain(dropped.items(), group.lost_drops.items()):
                conn.execute("INSERT INTO drops VALUES (?, ?) ON CONFLICT(reason) DO UPDATE "
                             "SET count = count + excluded.count", (reason, n))
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back by itself (SQLITE_FULL does): a ROLLBACK then
            # fails with "no transaction is active" and would hide the real error.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        self.data_version = _data_version(conn)
        return Outcome(depth=depth, bytes=size, oldest_enqueued_at=oldest_enqueued_at(conn),
                       dropped=dropped, dead_letters=len(group.dead), gap_rows=gap_rows,
                       recounted=recount)
