"""Durable replay protection: the ids of commands the gate has handled, kept on disk.

A small SQLite file beside the spool (``<spool dir>/<spool name>.commands.sqlite``), one row per
command id that reached the gate (accepted, or rejected by the gate after its signature was
verified), kept until the command's expiry plus `DEFAULT_MARGIN_S`. A copy of a command that
arrives again — after a restart, or after the gate's in-memory memory of it is gone — finds its
id here and is refused as ``replay``.

Invariants:

- `claim` is atomic: the id is inserted and committed (WAL, ``synchronous=FULL``) before the
  gate decides, so a crash between deciding and acknowledging cannot apply a command twice
  after the restart (at most once, by design: a battery command applied late or twice is worse
  than one the cloud must re-send with a fresh id).
- Only the gate claims ids. A message that fails signature verification never reaches it, so a
  forger cannot burn a legitimate command's id by sending a bad copy first.
- Rows are purged only with a clock the gateway trusts (the caller passes ``now_wall=None``
  otherwise): a clock that jumped forward must not forget ids whose commands are still valid.
- SQLite work runs in a worker thread (``limiter``), never on the Trio thread; any SQLite or OS
  error is raised as `ReplayStoreError` (the caller turns it into a state and a refusal).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import trio

_T = TypeVar("_T")

DEFAULT_MARGIN_S = 86_400.0
"""How long past its expiry an id is kept: a day covers any plausible clock error on a sender."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    handled_at REAL NOT NULL
)
"""


class ReplayStoreError(Exception):
    """The replay store could not be read or written (disk full, file deleted, locked...)."""


def store_path_for(spool_path: Path) -> Path:
    """Where the replay store lives for a spool at ``spool_path`` (same directory)."""
    return spool_path.with_name(f"{spool_path.stem}.commands.sqlite")


@attrs.define(eq=False)
class ReplayStore:
    path: Path
    margin_s: float = DEFAULT_MARGIN_S
    limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _conn: sqlite3.Connection | None = attrs.field(default=None, init=False)
    _guard: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    async def claim(self, command_id: str, expires_at: float, handled_at: float,
                    now_wall: float | None) -> bool:
        """Record ``command_id``; True if it is new, False if it was handled before.

        ``now_wall`` (a trusted wall time, or None) also purges ids past expiry plus margin.
        """
        return bool(await trio.to_thread.run_sync(
            self._claim, command_id, expires_at, handled_at, now_wall, limiter=self.limiter))

    async def contains(self, command_id: str) -> bool:
        return bool(await trio.to_thread.run_sync(self._contains, command_id,
                                                  limiter=self.limiter))

    def count(self) -> int:
        """Rows kept (synchronous; for status and tests)."""
        return int(self._run(lambda c: c.execute("SELECT COUNT(*) FROM handled").fetchone()[0]))

    def close(self) -> None:
        with self._guard:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---- in the worker thread -------------------------------------------------------------

    def _claim(self, command_id: str, expires_at: float, handled_at: float,
               now_wall: float | None) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with conn:  # one transaction: purge and insert commit together
                if now_wall is not None:
                    conn.execute("DELETE FROM handled WHERE expires_at + ? < ?",
                                 (self.margin_s, now_wall))
                cur = conn.execute(
                    "INSERT INTO handled (id, expires_at, handled_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO NOTHING", (command_id, expires_at, handled_at))
                return cur.rowcount == 1

        return bool(self._run(work))

    def _contains(self, command_id: str) -> bool:
        return bool(self._run(lambda c: c.execute(
            "SELECT 1 FROM handled WHERE id = ?", (command_id,)).fetchone() is not None))

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._guard:
            try:
                if self._conn is None:
                    self._conn = self._open()
                return work(self._conn)
            except (sqlite3.Error, OSError) as exc:
                if self._conn is not None:  # re-open next time (the file may be back)
                    try:
                        self._conn.close()
                    except sqlite3.Error:
                        pass
                    self._conn = None
                raise ReplayStoreError(f"{type(exc).__name__}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        # `with conn:` opens (BEGIN DEFERRED, SQLite's default) and commits from here on
        conn.isolation_level = "DEFERRED"
        return conn
