"""What is wrong with the spool's disk: one name per condition, and the state it puts the spool in.

A failing disk is a state, not a crash (DESIGN rule 6): the spool names the condition once when
it enters it (``SPOOL_DISK_FAULT``) and once when it leaves it (``SPOOL_DISK_RECOVERED``),
never once per commit, and `/healthz` / `/status` show it while it lasts.

`classify` turns what SQLite or the OS raised into a `DiskCondition`. SQLite's own error code
decides where it is unambiguous (``SQLITE_FULL``, ``SQLITE_BUSY``, ``SQLITE_CORRUPT`` /
``SQLITE_NOTADB``); where SQLite only says it "cannot open" or hit an I/O error, the filesystem
is asked (read-only flag, write permission, free blocks). Only ``corrupt`` ever moves a file
aside: "locked", "read-only" and "permission denied" are never taken for corruption.
"""

from __future__ import annotations

import enum
import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import trio

from bessai.observe.sink import MetricSink


class DiskCondition(enum.StrEnum):
    """Why the spool cannot write (the ``condition=`` of SPOOL_DISK_FAULT)."""

    DISK_FULL = "disk_full"
    READ_ONLY = "read_only"
    PERMISSION_DENIED = "permission_denied"
    LOCKED = "locked"
    DELETED = "deleted"
    CORRUPT = "corrupt"
    IO_ERROR = "io_error"


ACTIONS: dict[DiskCondition, str] = {
    DiskCondition.DISK_FULL: "free space on the spool's filesystem (df -h $(dirname SPOOL_PATH)); "
                             "critical events are held in memory, telemetry is dropped with "
                             "gap records until then",
    DiskCondition.READ_ONLY: "the filesystem is read-only: check dmesg for I/O errors and "
                             "remount it read-write; critical events are held meanwhile",
    DiskCondition.PERMISSION_DENIED: "the gateway's user cannot write SPOOL_PATH or its "
                                     "directory: fix ownership/mode (chown bessai ...)",
    DiskCondition.LOCKED: "another process holds the spool's write lock (a sqlite3 shell or a "
                          "second gateway on the same SPOOL_PATH?): close it",
    DiskCondition.DELETED: "the spool file was deleted or replaced under the running gateway; "
                           "it is recreated, lost rows are reported as gap records",
    DiskCondition.CORRUPT: "SQLite reports the file corrupt: it is moved aside at the next "
                           "open; re-queue its rows with `bessai spool import PATH`",
    DiskCondition.IO_ERROR: "the disk returned I/O errors: check dmesg and the disk's health",
}

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_LOCKED_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_ERRNO = {errno.ENOSPC: DiskCondition.DISK_FULL, errno.EDQUOT: DiskCondition.DISK_FULL,
          errno.EROFS: DiskCondition.READ_ONLY, errno.EACCES: DiskCondition.PERMISSION_DENIED,
          errno.EPERM: DiskCondition.PERMISSION_DENIED, errno.ENOENT: DiskCondition.DELETED}


def is_corrupt(exc: BaseException) -> bool:
    """True only when SQLite itself says the file is damaged or not a database."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _CORRUPT_CODES


def classify(exc: BaseException, path: Path) -> DiskCondition:
    """The condition behind ``exc``, raised while opening or writing the spool at ``path``."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        primary = code & 0xFF
        if primary in _CORRUPT_CODES:
            return DiskCondition.CORRUPT
        if primary == sqlite3.SQLITE_FULL:
            return DiskCondition.DISK_FULL
        if primary in _LOCKED_CODES:
            return DiskCondition.LOCKED
        if code == sqlite3.SQLITE_READONLY_DBMOVED:
            return DiskCondition.DELETED
        return _from_filesystem(path, DiskCondition.READ_ONLY
                                if primary == sqlite3.SQLITE_READONLY else DiskCondition.IO_ERROR)
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    return _from_filesystem(path, DiskCondition.IO_ERROR)


def _from_filesystem(path: Path, otherwise: DiskCondition) -> DiskCondition:
    """Ask the filesystem why SQLite could not open or write (it does not say which)."""
    directory = _existing_parent(path)
    try:
        vfs = os.statvfs(directory)
    except OSError:
        return otherwise
    if vfs.f_flag & os.ST_RDONLY:
        return DiskCondition.READ_ONLY
    targets = [directory] + [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
                             if p.exists()]
    if not all(os.access(p, os.W_OK) for p in targets):
        return DiskCondition.PERMISSION_DENIED
    if vfs.f_bavail == 0:
        return DiskCondition.DISK_FULL
    return otherwise


def _existing_parent(path: Path) -> Path:
    for candidate in (path.parent, *path.parent.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def describe(exc: BaseException) -> tuple[str, str]:
    """``(error, detail)`` for the event: SQLite's code name or the errno name, and the text."""
    name = getattr(exc, "sqlite_errorname", None)
    if name is None and isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
    return name or type(exc).__name__, str(exc)[:200]


@attrs.frozen
class DiskFault:
    """The condition the spool is in (None in `Spool` when it writes normally)."""

    condition: DiskCondition
    error: str
    detail: str
    since_wall: float
    since_s: float
    """Trio time of entering the state (for ``lasted_s``)."""


@attrs.define
class DiskState:
    """Whether the spool's disk takes writes: ok, or the one `DiskFault` it is in.

    The state, not the attempt, is what operators see: `enter` logs ``SPOOL_DISK_FAULT`` only
    when the condition changes, `leave` logs ``SPOOL_DISK_RECOVERED`` once, with how long the
    fault lasted and how much telemetry it cost.
    """

    fault: DiskFault | None = None
    telemetry_dropped: int = 0
    """Telemetry refused or lost since the fault began (reported when it ends)."""

    def enter(self, cause: BaseException | DiskCondition, *, path: Path, wall_s: float,
              log: Any, sink: MetricSink) -> None:
        """Enter (or change to) the condition behind ``cause``."""
        if isinstance(cause, DiskCondition):
            condition, error, detail = cause, cause.value, ""
        else:
            condition = classify(cause, path)
            error, detail = describe(cause)
        if self.fault is not None and self.fault.condition is condition:
            return
        self.fault = DiskFault(condition, error, detail, since_wall=wall_s,
                               since_s=trio.current_time())
        log.error("SPOOL_DISK_FAULT", path=str(path), condition=str(condition),
                  error=error, detail=detail, action=ACTIONS[condition])
        sink.count("bessai.spool.disk_faults", condition=str(condition))

    def leave(self, *, path: Path, log: Any) -> None:
        """The disk took a write (or an open): back to ok."""
        if self.fault is None:
            return
        fault, self.fault = self.fault, None
        log.warning("SPOOL_DISK_RECOVERED", path=str(path), condition=str(fault.condition),
                    lasted_s=round(trio.current_time() - fault.since_s, 3),
                    telemetry_dropped=self.telemetry_dropped)
        self.telemetry_dropped = 0
