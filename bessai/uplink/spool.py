"""The durable outbox: every reading and event is on disk before it counts as accepted.

The spool is one SQLite file (WAL, ``synchronous=FULL``) owned by one `Spool` object, which
outlives actor restarts (the tree owns it). Its `run` method is the spool actor: it opens and
recovers the file, then commits groups.

Invariants:
- **Accepted means on disk.** `append` / `append_many` queue records in memory and return only
  after the group holding them was committed (one fsync per group, every ``commit_interval_s``,
  or at once when ``commit_batch_rows`` are already waiting: a full group gains nothing by
  waiting).
  All SQLite work runs off the event loop (`trio.to_thread.run_sync`) on one dedicated
  connection, serialized by a capacity limiter of 1.
- Each row is stamped at enqueue with ``seq`` (per device, +1 per row, persisted with the row in
  the same transaction, so it continues across restarts without holes) and a ``msg_id`` (uuid4)
  that is never regenerated: a row sent twice is sent with the same ``msg_id``.
- A row is deleted only by `ack` (after Pub/Sub returned its id), by `dead_letter` (moved to the
  ``dead_letter`` table), or by the disk budget / max age — which drop telemetry first, then
  non-critical events, **never critical rows**, and record a gap row naming the device, the seq
  range and the times dropped.
- Rows leased to the uplink are never dropped and never leased twice; rows left by a crash are
  simply pending again on the next start (they are sent again with their original ``msg_id``).
- **A failing disk is a state, never a crash** (`bessai.uplink.disk`): ENOSPC, a read-only or
  unwritable filesystem, a held write lock, I/O errors and a spool file deleted under the
  gateway each log one ``SPOOL_DISK_FAULT condition=...`` on entering and one
  ``SPOOL_DISK_RECOVERED`` on leaving (never one per commit), and `stats` names the condition.
  Meanwhile the spool actor keeps running and retries every ``fault_retry_s``: appends of
  critical records are *held* (their callers keep waiting; nothing critical is failed) and
  written when the disk recovers; telemetry that cannot be written is refused, counted as
  ``drops{reason=disk_fault}``, and recorded as a gap row (its seqs are consumed, so the seq
  range of the gap is exact) at the first successful commit. The same holds at start-up: a
  spool that cannot be opened does not stop the tree from starting.
- **Only SQLite says "corrupt"**: a file is moved aside (``<name>.corrupt-<UTC time>``, loud
  ``SPOOL_CORRUPT``) only for ``SQLITE_CORRUPT`` / ``SQLITE_NOTADB`` or a failed
  ``quick_check``; "locked", "read-only" and "permission denied" are disk faults, never
  corruption. The moved file's rows are not re-queued automatically (the gateway does not read
  a file SQLite just called damaged): ``bessai spool import PATH`` re-queues them with their
  original ``msg_id`` and ``seq``.
- **A deleted spool file is noticed at the next commit** (the open file's device and inode are
  compared with the path's before each commit): the file is recreated, critical rows are copied
  over from the still-open old file, every other row of it is reported as a gap row, and seq
  continues from the highest known (never restarts at 1).
- Rows written by another process (``bessai spool import``) are noticed through SQLite's
  ``data_version``: the depth is recounted and the uplink sees them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import operator
import os
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import attrs
import structlog
import trio

from bessai.clock import WallClock, system_wall_clock
from bessai.model import RecordKind
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.uplink.disk import (
    ACTIONS,
    DiskCondition,
    DiskFault,
    classify,
    describe,
    is_corrupt,
)
from bessai.uplink.message import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    Record,
    RowPriority,
    SpoolRow,
    gap_payload,
)

ROW_OVERHEAD_BYTES = 120
"""Estimated on-disk bytes per row besides its data (columns, index entries, page slack)."""
SCHEMA_VERSION = 1
WARN_FRACTION = 0.8
DROP_TO_FRACTION = 0.95
"""A drop round frees space down to 95 % of the budget, so drops come in rounds, not per row."""

_COLUMNS = "id, seq, msg_id, site_id, device_id, kind, event_time, data, priority, enqueued_at"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_time REAL NOT NULL,
    data BLOB NOT NULL,
    priority INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_gaps ON outbox (device_id, id) WHERE kind = 'gap';
CREATE TABLE IF NOT EXISTS seqs (device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drops (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_time REAL NOT NULL,
    data BLOB NOT NULL,
    priority INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    size INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
"""


class SpoolError(Exception):
    """The spool could not do what was asked; the message says what to check."""


class SpoolWriteError(SpoolError):
    """A group could not be committed (disk full, I/O error): its records were NOT accepted."""


class _FileLost(Exception):
    """The path no longer names the file the connection has open (deleted or replaced)."""


class _SeqsMoved(Exception):
    """Another process (``bessai spool import``) raised a device's seq above ours: the group
    must be stamped again from the file's seqs."""

    def __init__(self, seqs: dict[str, int]) -> None:
        super().__init__(seqs)
        self.seqs = seqs


_REOPEN_ON = frozenset({DiskCondition.READ_ONLY, DiskCondition.PERMISSION_DENIED,
                        DiskCondition.IO_ERROR, DiskCondition.CORRUPT, DiskCondition.DELETED})
"""Conditions whose probe closes and re-opens the file (a full disk or a held lock is simply
retried on the same connection: re-opening would run ``quick_check`` on every probe)."""


@attrs.define
class _Lost:
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


_new_accepted = functools.partial(tuple.__new__, Accepted)
"""`Accepted` from a ``(device_id, seq, msg_id)`` tuple without the Python-level ``__new__``."""
_site_of = operator.attrgetter("site_id")
_device_of = operator.attrgetter("device_id")
_kind_of = operator.attrgetter("kind")
_time_of = operator.attrgetter("event_time")
_data_of = operator.attrgetter("data")
_priority_of = operator.attrgetter("priority")
_KIND_TEXT = {kind: str(kind) for kind in RecordKind}.__getitem__
"""A kind as a plain ``str``: sqlite3 binds exact ``str``/``int`` without its adapter lookup."""
_PRIORITY_INT = {p: int(p) for p in RowPriority}.__getitem__
_MAX_VALID_IDS = 4096


@attrs.define
class _Waiter:
    records: list[Record]
    msg_ids: list[str]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: list[Accepted] | None = None
    error: BaseException | None = None


@attrs.define
class _Group:
    """Everything one transaction writes."""

    inserts: list[tuple[Any, ...]]
    deletes: list[int]
    dead: list[tuple[int, str]]
    leased: frozenset[int]
    last_seq: dict[str, int]
    insert_bytes: int = 0
    insert_devices: set[str] = attrs.field(factory=set)
    gap_devices: set[str] = attrs.field(factory=set)
    lost_gaps: list[tuple[Any, ...]] = attrs.field(factory=list)
    """Gap rows for `_Lost` rows, inserted before ``inserts``."""
    lost_drops: dict[str, int] = attrs.field(factory=dict)
    """Drops already counted in memory, to persist in the ``drops`` table."""


@attrs.define
class _Outcome:
    depth: int
    bytes: int
    oldest_enqueued_at: float | None
    dropped: dict[str, int]
    dead_letters: int
    gap_rows: int
    recounted: bool = False


_UUID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
"""Byte 6 of a UUID: high nibble 4 (version 4), low nibble random."""
_UUID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
"""Byte 8 of a UUID: top bits 10 (the RFC 4122 variant), the rest random."""
_UUID_HEX_AT = [j + (j >= 8) + (j >= 12) + (j >= 16) + (j >= 20) for j in range(32)]
"""Where hex digit ``j`` of a UUID lands in its 36-character ``8-4-4-4-12`` text."""


def new_msg_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUID strings, as ``str(uuid.uuid4())`` gives them.

    One urandom call for the whole group, and no per-id Python for large groups: the version
    and variant bits are set with `bytes.translate` on strided slices, the hex digits are laid
    into ``8-4-4-4-12`` text (one line per id) with 32 strided slice assignments, and the text
    is split into lines. About 0.15 us per id (1,000 at a time) instead of 2.5 us for
    `uuid.uuid4`.
    """
    if n < 32:  # the strided path costs about 8 us whatever n is: format each id
        h = os.urandom(16 * n).hex()
        return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-"
                f"{'89ab'[int(h[i + 16], 16) & 3]}{h[i + 17:i + 20]}-{h[i + 20:i + 32]}"
                for i in range(0, 32 * n, 32)]
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    digits = raw.hex().encode()
    text = bytearray(b"-" * (37 * n))
    text[36::37] = b"\n" * n
    for j, at in enumerate(_UUID_HEX_AT):
        text[at::37] = digits[j::32]
    del text[-1]
    return text.decode().split("\n")


def _row(t: Sequence[Any]) -> SpoolRow:
    return SpoolRow(row_id=t[0], seq=t[1], msg_id=t[2], site_id=t[3], device_id=t[4], kind=t[5],
                    event_time=t[6], data=bytes(t[7]), priority=t[8], enqueued_at=t[9])


def _utc_stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")


@attrs.define(eq=False)
class Spool:
    """The outbox. Build one per gateway; run `run` as the ``spool`` actor.

    ``max_bytes`` bounds the estimated on-disk size (rows' data + `ROW_OVERHEAD_BYTES` each);
    ``max_age_s`` optionally drops droppable rows that have waited longer than that in the
    spool (by the time they were accepted, on the injected wall clock). Both record gap rows.
    """

    path: Path = attrs.field(converter=Path)
    max_bytes: int | None = None
    max_age_s: float | None = None
    commit_interval_s: float = 0.1
    commit_batch_rows: int = 1000
    age_check_interval_s: float = 60.0
    gauge_interval_s: float = 5.0
    """Idle refresh of the depth/bytes/oldest-age gauges, so the oldest row's age keeps rising
    while nothing is committed (device and cloud both down)."""
    fault_retry_s: float = 1.0
    """While the disk is faulty: how often a commit (or an open) is tried again."""
    busy_timeout_s: float = 5.0
    """How long a commit waits for another process's write lock before the spool calls itself
    ``locked`` (in the worker thread: the event loop never waits on it)."""
    wall_clock: WallClock = system_wall_clock
    sink: MetricSink = NULL_SINK
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    limiter: Any = attrs.field(default=None, repr=False)
    """What serializes the worker-thread SQLite calls: a `trio.CapacityLimiter(1)` by default;
    anything with ``acquire_on_behalf_of`` / ``release_on_behalf_of`` that admits ONE thread
    at a time may be injected (to observe thread work, e.g. in virtual-time tests)."""

    _conn: sqlite3.Connection | None = attrs.field(default=None, init=False, repr=False)
    _pending: list[_Waiter] = attrs.field(factory=list, init=False, repr=False)
    _pending_rows: int = attrs.field(default=0, init=False, repr=False)
    _pending_deletes: list[int] = attrs.field(factory=list, init=False, repr=False)
    _pending_dead: list[tuple[int, str, trio.Event]] = attrs.field(
        factory=list, init=False, repr=False)
    _wakeup: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)
    _ready: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)
    _leased: set[int] = attrs.field(factory=set, init=False, repr=False)
    _cursor: int = attrs.field(default=0, init=False, repr=False)
    _leasable_version: int = attrs.field(default=0, init=False, repr=False)
    """Bumped whenever rows may have become leasable (rows added, released, leases reset)."""
    _exhausted_at: int | None = attrs.field(default=None, init=False, repr=False)
    """`_leasable_version` when a lease last read to the end of the outbox, else None."""
    _last_seq: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    _valid_ids: set[tuple[str, str]] = attrs.field(factory=set, init=False, repr=False)
    """``(site_id, device_id)`` pairs already validated: their attributes cannot change."""
    _last_commit: float = attrs.field(default=float("-inf"), init=False, repr=False)
    _last_age_check: float = attrs.field(default=float("-inf"), init=False, repr=False)
    _depth: int = attrs.field(default=0, init=False)
    _bytes: int = attrs.field(default=0, init=False)
    _oldest_enqueued_at: float | None = attrs.field(default=None, init=False, repr=False)
    _drops: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    _dead_letters: int = attrs.field(default=0, init=False, repr=False)
    _commits: int = attrs.field(default=0, init=False, repr=False)
    _budget_state: str = attrs.field(default="ok", init=False, repr=False)
    _corrupt_moved_to: Path | None = attrs.field(default=None, init=False, repr=False)
    _fault: DiskFault | None = attrs.field(default=None, init=False, repr=False)
    _fault_dropped: int = attrs.field(default=0, init=False, repr=False)
    _next_probe: float = attrs.field(default=float("-inf"), init=False, repr=False)
    _lost: list[_Lost] = attrs.field(factory=list, init=False, repr=False)
    _salvaged: list[tuple[Any, ...]] = attrs.field(factory=list, init=False, repr=False)
    """Critical rows read from a deleted file, to write into its replacement."""
    _salvaged_top_id: int = attrs.field(default=0, init=False, repr=False)
    _file_id: tuple[int, int] | None = attrs.field(default=None, init=False, repr=False)
    _data_version: int | None = attrs.field(default=None, init=False, repr=False)
    _inflight: list[_Waiter] = attrs.field(factory=list, init=False, repr=False)

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The spool actor: open (recovering), report ready, then commit groups until cancelled.

        On cancellation the pending group is still committed (shielded, at most 5 s) so a
        graceful stop loses nothing that an appender is waiting on.

        Ready even when the file cannot be opened (read-only, unwritable, locked): that is a
        disk fault (a state with its event), retried every ``fault_retry_s``; the rest of the
        tree, and the device sites with it, must start anyway.
        """
        await self.open()
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self.gauge_interval_s) as idle:
                    await self._wakeup.wait()
                if idle.cancelled_caught:
                    self._report_gauges()
                    if self._conn is None:
                        await self.open()  # nothing to write, but the fault may have cleared
                    continue
                if self._fault is not None:
                    await trio.sleep_until(self._next_probe)
                elif self._pending_rows < self.commit_batch_rows:
                    await trio.sleep_until(self._last_commit + self.commit_interval_s)
                await self._commit()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    if self._pending or self._pending_deletes or self._pending_dead:
                        await self._commit()
                await self.aclose()

    async def open(self) -> bool:
        """Open (or create) the file off the event loop; move a file SQLite calls corrupt aside.

        Returns False, in a disk-fault state, when the file cannot be opened for any other
        reason (read-only, permission denied, locked, disk full): never raises for the disk.
        """
        if self._conn is not None:
            return True
        # Leases survive a restart of the spool actor: the uplink that holds them still runs
        # and will ack or release them (an uplink restart calls `reset_leases`). Forgetting
        # them here re-sent every batch in flight (found by chaos crash-spool-mid-drain).
        self._cursor = 0
        self._leasable_version += 1
        moved_before = self._corrupt_moved_to
        try:
            await trio.to_thread.run_sync(self._open_sync, self.wall_clock(),
                                          limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            self._enter_fault(exc)
            self._next_probe = trio.current_time() + self.fault_retry_s
            return False
        if self._corrupt_moved_to is not moved_before:
            # a fresh file: row ids held by the uplink or queued for deletion mean nothing here
            self._leased.clear()
            self._pending_deletes.clear()
        # Opening wrote to the file (schema, user_version): the disk takes writes again.
        self._leave_fault()
        self._ready.set()
        self._report_gauges()
        return True

    async def aclose(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        self._ready = trio.Event()
        await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    @property
    def corrupt_moved_to(self) -> Path | None:
        """Where a corrupt file found at open was moved, if one was."""
        return self._corrupt_moved_to

    @property
    def _limiter(self) -> Any:
        if self.limiter is None:
            self.limiter = trio.CapacityLimiter(1)
        return self.limiter

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.busy_timeout_s)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_checked(self) -> sqlite3.Connection:
        """A connection to a file that passed ``quick_check``, with the schema in place."""
        conn = self._connect()
        try:
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                error = sqlite3.DatabaseError(f"quick_check says {check[0] if check else None}")
                error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
                error.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
                raise error
            self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_sync(self, now: float) -> None:
        """Raises `sqlite3.Error` / `OSError` for a disk fault; moves aside only corruption."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._open_checked()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise  # locked, read-only, unwritable...: a disk fault, never "corrupt"
            salvaged = self._salvage_seqs()
            moved = self._move_aside(now)
            self.log.error("SPOOL_CORRUPT", path=str(self.path), moved_to=str(moved),
                           error=getattr(exc, "sqlite_errorname", type(exc).__name__),
                           detail=str(exc)[:200], seqs_salvaged=len(salvaged),
                           action=f"started a fresh spool; re-queue the moved file's rows with "
                                  f"`bessai spool import {moved}`")
            conn = self._open_checked()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)", salvaged.items())
            self._corrupt_moved_to = moved
        try:
            self._restore_salvaged(conn)
            st = os.stat(self.path)
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        self._file_id = (st.st_dev, st.st_ino)
        self._conn = conn
        self._load_state(conn)

    def _restore_salvaged(self, conn: sqlite3.Connection) -> None:
        """Write the critical rows saved from a deleted file into its replacement, with their
        row ids, and start new row ids above every id the old file used (an ack for a row of
        the old file then deletes that row or nothing, never another row)."""
        if not self._salvaged and not self._salvaged_top_id:
            return
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR IGNORE INTO outbox (id, seq, msg_id, site_id, device_id, kind, "
                "event_time, data, priority, enqueued_at, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._salvaged)
            top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            if top is None:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)",
                             (self._salvaged_top_id,))
            elif top[0] < self._salvaged_top_id:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'",
                             (self._salvaged_top_id,))
        self._salvaged = []
        self._salvaged_top_id = 0

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _salvage_seqs(self) -> dict[str, int]:
        """Best effort: keep seq monotonic even when the rest of the file is lost."""
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                return dict(conn.execute("SELECT device_id, last_seq FROM seqs").fetchall())
            finally:
                conn.close()
        except sqlite3.Error:
            return {}

    def _move_aside(self, now: float) -> Path:
        target = self.path.with_name(f"{self.path.name}.corrupt-{_utc_stamp(now)}")
        n = 0
        while target.exists():
            n += 1
            target = target.with_name(f"{target.name}.{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, Path(f"{target}{suffix}"))
        return target

    def _load_state(self, conn: sqlite3.Connection) -> None:
        # seq never goes back: a replaced or recreated file continues from the highest known
        on_file = dict(conn.execute("SELECT device_id, last_seq FROM seqs").fetchall())
        self._last_seq = {d: max(on_file.get(d, 0), self._last_seq.get(d, 0))
                          for d in on_file.keys() | self._last_seq.keys()}
        behind = [(d, n) for d, n in self._last_seq.items() if on_file.get(d, 0) < n]
        if behind:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)", behind)
        depth, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self._depth, self._bytes = depth, size
        self._drops = dict(conn.execute("SELECT reason, count FROM drops").fetchall())
        self._dead_letters = conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
        self._oldest_enqueued_at = self._oldest(conn)
        if depth:
            self.log.info("SPOOL_RECOVERED", path=str(self.path), pending=depth, bytes=size,
                          note="rows left by the previous run will be sent again")

    @staticmethod
    def _oldest(conn: sqlite3.Connection) -> float | None:
        row = conn.execute("SELECT enqueued_at FROM outbox ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    # ---- appending ------------------------------------------------------------------------

    async def append(self, record: Record) -> Accepted:
        """Accept one record; returns once it is committed to disk."""
        return (await self.append_many([record]))[0]

    async def append_many(self, records: Iterable[Record]) -> list[Accepted]:
        """Accept records (in order); returns once all are committed to disk.

        Raises `MessageInvalid` (before anything is queued) for a record Pub/Sub would reject,
        and `SpoolWriteError` if the group could not be committed.
        """
        items = list(records)
        if not items:
            return []
        self._validate(items)
        waiter = _Waiter(items, new_msg_ids(len(items)))
        self._pending.append(waiter)
        self._pending_rows += len(items)
        self._wakeup.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise SpoolWriteError(
                f"spool {self.path} could not commit {len(items)} records "
                f"({type(waiter.error).__name__}: {waiter.error}) — check free disk space and "
                "permissions; these records were not accepted") from waiter.error
        assert waiter.result is not None
        return waiter.result

    def _validate(self, items: list[Record]) -> None:
        """`Record.validate` for each record, in bulk: only the ids and the data length vary,
        so a group whose ids were all seen before and whose data is within the limit passes
        without per-record Python; any other group is checked record by record (raising for
        the first record Pub/Sub would reject)."""
        ids = set(zip(map(_site_of, items), map(_device_of, items), strict=True))
        if (ids <= self._valid_ids
                and max(map(len, map(_data_of, items))) <= MAX_MESSAGE_BYTES):
            return
        for record in items:
            record.validate()
        if len(self._valid_ids) + len(ids) > _MAX_VALID_IDS:
            self._valid_ids.clear()
        self._valid_ids |= ids

    # ---- the uplink's side ----------------------------------------------------------------

    async def lease(self, limit: int = MAX_BATCH_MESSAGES,
                    max_bytes: int = MAX_BATCH_BYTES) -> list[SpoolRow]:
        """The oldest pending rows not already leased (at most ``limit`` / ``max_bytes``).

        Leased rows are the caller's until it calls `ack`, `release` or `dead_letter`. When a
        lease already read to the end of the outbox and no row became leasable since, the answer
        is empty without touching the file (an idle uplink asks after every commit).
        """
        while True:
            await self._ready.wait()
            version = self._leasable_version
            if self._exhausted_at == version:
                return []
            leased = frozenset(self._leased)
            try:
                result = await trio.to_thread.run_sync(self._lease_sync, self._cursor, leased,
                                                       limit, max_bytes, limiter=self._limiter)
            except sqlite3.Error:
                # the disk fault is the commit path's to name; the uplink just waits for it
                await trio.sleep(self.fault_retry_s)
                continue
            if result is not None:
                break  # else the spool closed while we queued: wait for it to reopen
        rows, exhausted = result
        self._exhausted_at = version if exhausted else None
        for row in rows:
            self._leased.add(row.row_id)
        if rows:
            self._cursor = max(self._cursor, rows[-1].row_id)
        return rows

    def _lease_sync(self, cursor: int, leased: frozenset[int], limit: int,
                    max_bytes: int) -> tuple[list[SpoolRow], bool] | None:
        """The rows to lease, and whether the read reached the end of the outbox."""
        if self._conn is None:
            return None
        out: list[SpoolRow] = []
        size = 0
        while len(out) < limit:
            chunk = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, max(limit - len(out), 64))).fetchall()
            if not chunk:
                return out, True
            for t in chunk:
                cursor = t[0]
                if t[0] in leased:
                    continue
                row = _row(t)
                row_size = row.encoded_size()
                if out and size + row_size > max_bytes:
                    return out, False
                out.append(row)
                size += row_size
                if len(out) >= limit:
                    break
        return out, False

    def ack(self, rows: Iterable[SpoolRow]) -> None:
        """Pub/Sub returned ids for these rows: delete them at the next group commit.

        Does not wait; the rows stay leased (invisible to `lease`) until they are deleted.
        """
        ids = [r.row_id for r in rows]
        if ids:
            self._pending_deletes.extend(ids)
            self._wakeup.set()

    def release(self, rows: Iterable[SpoolRow]) -> None:
        """Give leased rows back unpublished; they are leased again, oldest first."""
        ids = [r.row_id for r in rows]
        if not ids:
            return
        self._leased.difference_update(ids)
        self._cursor = min(self._cursor, min(ids) - 1)
        self._leasable_version += 1

    def reset_leases(self) -> None:
        """Forget every lease (an uplink instance starting fresh after a crash)."""
        self._leased.clear()
        self._cursor = 0
        self._leasable_version += 1

    async def dead_letter(self, row: SpoolRow, reason: str) -> None:
        """Move a leased row to the dead-letter table (committed before this returns)."""
        done = trio.Event()
        self._pending_dead.append((row.row_id, reason, done))
        self._wakeup.set()
        await done.wait()

    async def wait_changed(self) -> None:
        """Wait until the next commit that added or freed rows."""
        await self._changed.wait()

    # ---- committing -----------------------------------------------------------------------

    async def _commit(self) -> None:
        self._wakeup = trio.Event()
        if self._conn is not None and self._fault is not None \
                and self._fault.condition in _REOPEN_ON:
            await self.aclose()  # re-open: a remounted or recreated file needs a new connection
        if self._conn is None and not await self.open():
            self._refuse_pending()
            return
        waiters, self._pending = self._pending, []
        self._pending_rows = 0
        deletes, self._pending_deletes = self._pending_deletes, []
        dead, self._pending_dead = self._pending_dead, []
        lost, self._lost = self._lost, []
        if not (waiters or deletes or dead or lost):
            return
        now = self.wall_clock()
        seqs = dict(self._last_seq)
        lost_gaps, lost_devices = self._lost_gap_rows(lost, seqs, now)
        # The hot path (100,000 rows a second): columns are built with map/zip over the whole
        # group, so no Python runs per row.
        records = list(itertools.chain.from_iterable(w.records for w in waiters))
        msg_ids = list(itertools.chain.from_iterable(w.msg_ids for w in waiters))
        devices = list(map(_device_of, records))
        touched = set(devices)
        counters = {d: itertools.count(seqs.get(d, 0) + 1) for d in touched}
        seq_list = list(map(next, map(counters.__getitem__, devices)))
        for device, counter in counters.items():
            seqs[device] = next(counter) - 1
        # bytearray: sqlite3 binds an exact bytearray as a BLOB at once, while bytes goes through
        # its adapter lookup (~0.3 us a row, with the GIL held); the stored BLOB is the same.
        datas = list(map(bytearray, map(_data_of, records)))
        sizes = list(map(ROW_OVERHEAD_BYTES.__add__, map(len, datas)))
        inserts = list(zip(seq_list, msg_ids, map(_site_of, records), devices,
                           map(_KIND_TEXT, map(_kind_of, records)), map(_time_of, records),
                           datas, map(_PRIORITY_INT, map(_priority_of, records)),
                           itertools.repeat(now), sizes))
        accepted_all = list(map(_new_accepted, zip(devices, seq_list, msg_ids, strict=True)))
        results: list[list[Accepted]] = []
        start = 0
        for waiter in waiters:
            end = start + len(waiter.records)
            results.append(accepted_all[start:end])
            start = end
        age_due = (self.max_age_s is not None
                   and trio.current_time() - self._last_age_check >= self.age_check_interval_s)
        lost_drops: dict[str, int] = defaultdict(int)
        for item in lost:
            if item.first_seq is None:
                lost_drops[item.reason] += item.count
        group = _Group(inserts=inserts, deletes=deletes,
                       dead=[(row_id, reason) for row_id, reason, _ in dead],
                       leased=frozenset(self._leased) - set(deletes), last_seq=seqs,
                       insert_bytes=sum(sizes), insert_devices=touched | lost_devices,
                       lost_gaps=lost_gaps, lost_drops=dict(lost_drops))
        self._inflight = waiters
        try:
            outcome = await trio.to_thread.run_sync(self._write_sync, group, now, age_due,
                                                    limiter=self._limiter)
        except _FileLost:
            self._requeue(waiters, deletes, dead, lost)
            await self._recreate()
            return
        except _SeqsMoved as moved:
            self._requeue(waiters, deletes, dead, lost)
            for device, n in moved.seqs.items():
                self._last_seq[device] = max(n, self._last_seq.get(device, 0))
            self._wakeup.set()  # stamp the group again at once
            return
        except (sqlite3.Error, OSError) as exc:
            self._requeue(waiters, deletes, dead, lost)
            self._enter_fault(exc)
            self._next_probe = trio.current_time() + self.fault_retry_s
            self._refuse_pending()
            self._last_commit = trio.current_time()
            return
        finally:
            self._inflight = []
        self._leave_fault()
        self._last_commit = trio.current_time()
        self._commits += 1
        if age_due:
            self._last_age_check = self._last_commit
        self._last_seq = group.last_seq
        self._leased.difference_update(deletes)
        self._leased.difference_update(row_id for row_id, _ in group.dead)
        self._depth, self._bytes = outcome.depth, outcome.bytes
        if inserts or outcome.gap_rows or outcome.dropped or lost_gaps or outcome.recounted:
            self._leasable_version += 1
        self._oldest_enqueued_at = outcome.oldest_enqueued_at
        self._dead_letters += len(group.dead)
        for reason, n in outcome.dropped.items():
            self._drops[reason] = self._drops.get(reason, 0) + n
            self.sink.count("bessai.spool.drops", n, reason=reason)
        if group.dead:
            self.sink.count("bessai.spool.dead_letters", len(group.dead))
        for waiter, accepted in zip(waiters, results, strict=True):
            waiter.result = accepted
            waiter.done.set()
        for _, _, done in dead:
            done.set()
        self._check_budget(outcome)
        self._report_gauges()
        if inserts or outcome.gap_rows or deletes or dead or lost_gaps or outcome.recounted:
            changed, self._changed = self._changed, trio.Event()
            changed.set()

    # ---- disk faults ----------------------------------------------------------------------

    def _enter_fault(self, exc: BaseException | DiskCondition) -> None:
        """Enter (or change to) a disk-fault state: one SPOOL_DISK_FAULT per state, not per try."""
        if isinstance(exc, DiskCondition):
            condition, error, detail = exc, exc.value, ""
        else:
            condition = classify(exc, self.path)
            error, detail = describe(exc)
        if self._fault is not None and self._fault.condition is condition:
            return
        self._fault = DiskFault(condition, error, detail, since_wall=self.wall_clock(),
                                since_s=trio.current_time())
        self.log.error("SPOOL_DISK_FAULT", path=str(self.path), condition=str(condition),
                       error=error, detail=detail, action=ACTIONS[condition])
        self.sink.count("bessai.spool.disk_faults", condition=str(condition))

    def _leave_fault(self, **extra: Any) -> None:
        if self._fault is None:
            return
        fault, self._fault = self._fault, None
        self.log.warning("SPOOL_DISK_RECOVERED", path=str(self.path),
                         condition=str(fault.condition),
                         lasted_s=round(trio.current_time() - fault.since_s, 3),
                         telemetry_dropped=self._fault_dropped, **extra)
        self._fault_dropped = 0

    def _requeue(self, waiters: list[_Waiter], deletes: list[int],
                 dead: list[tuple[int, str, trio.Event]], lost: list[_Lost]) -> None:
        """Put back a group that was not written (it goes first, in its order)."""
        self._pending[:0] = waiters
        self._pending_rows += sum(len(w.records) for w in waiters)
        self._pending_deletes[:0] = deletes
        self._pending_dead[:0] = dead
        self._lost[:0] = lost

    def _refuse_pending(self) -> None:
        """While the disk is faulty: refuse waiting telemetry (counted, and a gap row later),
        hold everything critical (its appender keeps waiting until the disk recovers)."""
        held: list[_Waiter] = []
        for waiter in self._pending:
            if any(r.priority == RowPriority.CRITICAL for r in waiter.records):
                held.append(waiter)
                continue
            for record in waiter.records:
                self.note_lost(record.site_id, record.device_id, 1, record.event_time,
                               record.event_time, reason="disk_fault")
            assert self._fault is not None
            waiter.error = SpoolWriteError(
                f"{self._fault.condition}: {self._fault.error} {self._fault.detail}".strip())
            waiter.done.set()
        self._pending = held
        self._pending_rows = sum(len(w.records) for w in held)
        if held or self._pending_deletes or self._pending_dead or self._lost:
            self._wakeup.set()  # try again at the next probe (`run` waits for it)

    def note_lost(self, site_id: str, device_id: str, count: int, first_ts: float,
                  last_ts: float, *, reason: str) -> None:
        """Readings of ``device_id`` that never reached the spool: counted now as
        ``drops{reason}``, and written as one gap row per device and reason (consuming
        ``count`` seqs, so downstream sees exactly which seqs are missing) at the next commit."""
        if count <= 0:
            return
        self._drops[reason] = self._drops.get(reason, 0) + count
        self.sink.count("bessai.spool.drops", count, reason=reason)
        if self._fault is not None:
            self._fault_dropped += count
        for item in reversed(self._lost):
            if (item.device_id == device_id and item.reason == reason
                    and item.first_seq is None):
                item.count += count
                item.first_ts = min(item.first_ts, first_ts)
                item.last_ts = max(item.last_ts, last_ts)
                return
        self._lost.append(_Lost(site_id, device_id, reason, count, first_ts, last_ts))
        self._wakeup.set()

    def _lost_gap_rows(self, lost: list[_Lost], seqs: dict[str, int],
                       now: float) -> tuple[list[tuple[Any, ...]], set[str]]:
        """The gap rows for ``lost`` (advancing ``seqs``), ready for `_write_sync`."""
        rows: list[tuple[Any, ...]] = []
        devices: set[str] = set()
        for item in lost:
            first, last = item.first_seq, item.last_seq
            if first is None or last is None:
                first = seqs.get(item.device_id, 0) + 1
                last = first + item.count - 1
                seqs[item.device_id] = last
            seq = max(seqs.get(item.device_id, 0), last) + 1
            seqs[item.device_id] = seq
            data = gap_payload(site_id=item.site_id, device_id=item.device_id, first_seq=first,
                               last_seq=last, count=item.count, first_ts=item.first_ts,
                               last_ts=item.last_ts, reason=item.reason)
            rows.append((seq, str(uuid.uuid4()), item.site_id, item.device_id,
                         str(RecordKind.GAP), item.last_ts, data, int(RowPriority.CRITICAL), now,
                         len(data) + ROW_OVERHEAD_BYTES))
            devices.add(item.device_id)
        return rows, devices

    async def _recreate(self) -> None:
        """The file was deleted (or replaced) under us: save what the still-open old file
        holds, then open a fresh file at the path."""
        self._enter_fault(DiskCondition.DELETED)
        conn, self._conn = self._conn, None
        self._ready = trio.Event()
        if conn is not None:
            lost, copied = await trio.to_thread.run_sync(self._salvage_deleted_sync, conn,
                                                         limiter=self._limiter)
        else:
            lost, copied = [], 0
        for item in lost:
            self._drops["file_deleted"] = self._drops.get("file_deleted", 0) + item.count
            self.sink.count("bessai.spool.drops", item.count, reason="file_deleted")
        self._lost[:0] = lost
        lost_rows = sum(item.count for item in lost)
        self._fault_dropped += lost_rows
        self._depth = self._bytes = 0
        self._oldest_enqueued_at = None
        # row ids in the uplink's hands: copied critical rows keep theirs; the others are gone
        self._cursor = 0
        self._leasable_version += 1
        if await self.open():
            self.log.info("SPOOL_RECREATED", path=str(self.path), rows_lost=lost_rows,
                          critical_rows_kept=copied,
                          note="gap records for the lost rows follow at the next commit")
        self._wakeup.set()

    def _salvage_deleted_sync(self, conn: sqlite3.Connection) -> tuple[list[_Lost], int]:
        """From the deleted file (still readable through ``conn``): keep its critical rows in
        memory for the new file, and describe the rest as lost, per device."""
        lost: list[_Lost] = []
        try:
            self._salvaged = conn.execute(
                "SELECT id, seq, msg_id, site_id, device_id, kind, event_time, data, priority, "
                "enqueued_at, size FROM outbox WHERE priority = ? ORDER BY id",
                (int(RowPriority.CRITICAL),)).fetchall()
            top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            self._salvaged_top_id = top[0] if top else 0
            for site, device, first, last, count, first_ts, last_ts in conn.execute(
                    "SELECT site_id, device_id, min(seq), max(seq), count(*), min(event_time), "
                    "max(event_time) FROM outbox WHERE priority != ? GROUP BY device_id",
                    (int(RowPriority.CRITICAL),)):
                lost.append(_Lost(site, device, "file_deleted", count, first_ts, last_ts,
                                  first_seq=first, last_seq=last))
        except sqlite3.Error as exc:
            self.log.error("SPOOL_DELETED_UNREADABLE", path=str(self.path),
                           error=describe(exc)[0], detail=describe(exc)[1],
                           note="the deleted file's rows could not be read; its loss is "
                                "reported by the seq hole downstream")
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        return lost, len(self._salvaged)

    def _write_sync(self, group: _Group, now: float, age_due: bool) -> _Outcome:
        conn = self._conn
        assert conn is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise _FileLost() from None
        if (st.st_dev, st.st_ino) != self._file_id:
            raise _FileLost()
        # Another process (``bessai spool import``) committed rows: count them, don't guess.
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        recount = version != self._data_version
        if recount:
            on_file = dict(conn.execute("SELECT device_id, last_seq FROM seqs").fetchall())
            if any(n > self._last_seq.get(d, 0) for d, n in on_file.items()):
                raise _SeqsMoved(on_file)
            depth, size = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        else:
            depth, size = self._depth, self._bytes
        dropped: dict[str, int] = {}
        gap_rows = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            if group.lost_gaps:
                conn.executemany(
                    "INSERT INTO outbox (seq, msg_id, site_id, device_id, kind, event_time, data,"
                    " priority, enqueued_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    group.lost_gaps)
                depth += len(group.lost_gaps)
                size += sum(t[9] for t in group.lost_gaps)
            if group.inserts:
                conn.executemany(
                    "INSERT INTO outbox (seq, msg_id, site_id, device_id, kind, event_time, data,"
                    " priority, enqueued_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    group.inserts)
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
            if age_due and self.max_age_s is not None:
                victims = self._select_victims_by_age(conn, group.leased, now - self.max_age_s)
                d, s, g = self._drop(conn, victims, "max_age", group, now)
                depth, size, gap_rows = depth + d, size + s, gap_rows + g
                if victims:
                    dropped["max_age"] = len(victims)
            if self.max_bytes is not None and size > self.max_bytes:
                target = int(self.max_bytes * DROP_TO_FRACTION)
                victims = self._select_victims_by_size(conn, group.leased, size - target)
                d, s, g = self._drop(conn, victims, "budget", group, now)
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
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        return _Outcome(depth=depth, bytes=size, oldest_enqueued_at=self._oldest(conn),
                        dropped=dropped, dead_letters=len(group.dead), gap_rows=gap_rows,
                        recounted=recount)

    @staticmethod
    def _select_victims_by_size(conn: sqlite3.Connection, leased: frozenset[int],
                                excess: int) -> list[tuple[Any, ...]]:
        victims: list[tuple[Any, ...]] = []
        freed = 0
        for priority in (RowPriority.TELEMETRY, RowPriority.EVENT):
            after = 0
            while freed < excess:
                chunk = conn.execute(
                    "SELECT id, site_id, device_id, seq, event_time, size FROM outbox "
                    "WHERE priority = ? AND id > ? ORDER BY id LIMIT 512",
                    (int(priority), after)).fetchall()
                if not chunk:
                    break
                for t in chunk:
                    after = t[0]
                    if t[0] in leased:
                        continue
                    victims.append(t)
                    freed += t[5]
                    if freed >= excess:
                        break
        return victims

    @staticmethod
    def _select_victims_by_age(conn: sqlite3.Connection, leased: frozenset[int],
                               before: float) -> list[tuple[Any, ...]]:
        rows = conn.execute(
            "SELECT id, site_id, device_id, seq, event_time, size FROM outbox "
            "WHERE priority > ? AND enqueued_at < ? ORDER BY id",
            (int(RowPriority.CRITICAL), before)).fetchall()
        return [t for t in rows if t[0] not in leased]

    def _drop(self, conn: sqlite3.Connection, victims: list[tuple[Any, ...]], reason: str,
              group: _Group, now: float) -> tuple[int, int, int]:
        """Delete victims and record one gap per device (merged into an unsent gap row)."""
        if not victims:
            return 0, 0, 0
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(t[0],) for t in victims])
        d_depth = -len(victims)
        d_size = -sum(t[5] for t in victims)
        per_device: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for t in victims:
            per_device[t[2]].append(t)
        gaps = 0
        for device_id, rows in per_device.items():
            site_id = rows[0][1]
            first_seq, last_seq = min(t[3] for t in rows), max(t[3] for t in rows)
            first_ts, last_ts = min(t[4] for t in rows), max(t[4] for t in rows)
            count = len(rows)
            existing = conn.execute(
                "SELECT id, data, size FROM outbox WHERE kind = ? AND device_id = ? "
                "ORDER BY id DESC LIMIT 1", (str(RecordKind.GAP), device_id)).fetchone()
            if existing and existing[0] not in group.leased:
                old = json.loads(existing[1])
                if old.get("reason") == reason:
                    prev = old["dropped"]
                    first_seq, first_ts = min(first_seq, prev["first_seq"]), min(
                        first_ts, prev["first_ts"])
                    last_seq, last_ts = max(last_seq, prev["last_seq"]), max(
                        last_ts, prev["last_ts"])
                    count += prev["count"]
                    data = gap_payload(site_id=site_id, device_id=device_id,
                                       first_seq=first_seq, last_seq=last_seq, count=count,
                                       first_ts=first_ts, last_ts=last_ts, reason=reason)
                    new_size = len(data) + ROW_OVERHEAD_BYTES
                    conn.execute("UPDATE outbox SET data = ?, size = ?, event_time = ? "
                                 "WHERE id = ?", (data, new_size, last_ts, existing[0]))
                    d_size += new_size - existing[2]
                    continue
            data = gap_payload(site_id=site_id, device_id=device_id, first_seq=first_seq,
                               last_seq=last_seq, count=count, first_ts=first_ts,
                               last_ts=last_ts, reason=reason)
            seq = group.last_seq.get(device_id, 0) + 1
            group.last_seq[device_id] = seq
            group.gap_devices.add(device_id)
            conn.execute(
                "INSERT INTO outbox (seq, msg_id, site_id, device_id, kind, event_time, data,"
                " priority, enqueued_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, str(uuid.uuid4()), site_id, device_id, str(RecordKind.GAP), last_ts, data,
                 int(RowPriority.CRITICAL), now, len(data) + ROW_OVERHEAD_BYTES))
            d_depth += 1
            d_size += len(data) + ROW_OVERHEAD_BYTES
            gaps += 1
        return d_depth, d_size, gaps

    def _check_budget(self, outcome: _Outcome) -> None:
        if self.max_bytes is None:
            return
        used = outcome.bytes / self.max_bytes
        if outcome.dropped.get("budget"):
            if self._budget_state != "dropping":
                self.log.warning("SPOOL_BUDGET_FULL", path=str(self.path), bytes=outcome.bytes,
                                 max_bytes=self.max_bytes, dropped=outcome.dropped["budget"],
                                 action="dropping the oldest telemetry with gap records; "
                                        "critical events are kept")
            self._budget_state = "dropping"
        elif used > 1.0 and self._budget_state != "exceeded":
            self.log.error("SPOOL_BUDGET_EXCEEDED", path=str(self.path), bytes=outcome.bytes,
                           max_bytes=self.max_bytes,
                           action="only critical rows are left and they are never dropped; "
                                  "restore the uplink or raise SPOOL_MAX_BYTES")
            self._budget_state = "exceeded"
        elif used >= WARN_FRACTION and self._budget_state == "ok":
            self.log.warning("SPOOL_BUDGET_WARN", path=str(self.path), bytes=outcome.bytes,
                             max_bytes=self.max_bytes, used_pct=round(used * 100, 1),
                             action="the uplink is behind; telemetry is dropped at 100 %")
            self._budget_state = "warned"
        elif used < WARN_FRACTION * 0.9 and self._budget_state != "ok":
            self.log.info("SPOOL_BUDGET_OK", path=str(self.path), used_pct=round(used * 100, 1))
            self._budget_state = "ok"

    def _report_gauges(self) -> None:
        self.sink.gauge("bessai.spool.depth", self._depth)
        self.sink.gauge("bessai.spool.bytes", self._bytes)
        age = self._oldest_age()
        self.sink.gauge("bessai.spool.oldest_age_s", age if age is not None else 0.0)

    def _oldest_age(self) -> float | None:
        if self._oldest_enqueued_at is None:
            return None
        return max(0.0, self.wall_clock() - self._oldest_enqueued_at)

    # ---- introspection --------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        """Current figures from memory (exact as of the last commit); never blocks."""
        fault = self._fault
        return SpoolStats(path=str(self.path), depth=self._depth, bytes=self._bytes,
                          max_bytes=self.max_bytes, oldest_pending_age_s=self._oldest_age(),
                          drops=dict(self._drops), dead_letters=self._dead_letters,
                          leased=len(self._leased), commits=self._commits,
                          condition="ok" if fault is None else str(fault.condition),
                          condition_detail=None if fault is None
                          else f"{fault.error}: {fault.detail}" if fault.detail else fault.error,
                          condition_for_s=None if fault is None
                          else round(trio.current_time() - fault.since_s, 3),
                          held=self.held)

    @property
    def held(self) -> int:
        """Critical records waiting in memory while the disk is faulty."""
        if self._fault is None:
            return 0
        return sum(len(w.records) for w in itertools.chain(self._pending, self._inflight))

    @property
    def fault(self) -> DiskFault | None:
        """The disk fault the spool is in, or None."""
        return self._fault

    @property
    def last_seq(self) -> dict[str, int]:
        """The last committed seq per device."""
        return dict(self._last_seq)


# ---- CLI helpers (`bessai spool stats|export`): synchronous, read-only ------------------------


def _open_ro(path: Path) -> sqlite3.Connection:
    if not Path(path).exists():
        raise SpoolError(f"no spool at {path} — check SPOOL_PATH (the gateway creates it on start)")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_stats(path: str | Path, *, wall_clock: WallClock = system_wall_clock) -> SpoolStats:
    """Figures for ``bessai spool stats``, read from the file (safe while the gateway runs)."""
    conn = _open_ro(Path(path))
    try:
        depth, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        oldest = conn.execute("SELECT enqueued_at FROM outbox ORDER BY id LIMIT 1").fetchone()
        drops = dict(conn.execute("SELECT reason, count FROM drops").fetchall())
        dead = conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
    finally:
        conn.close()
    return SpoolStats(path=str(path), depth=depth, bytes=size, max_bytes=None,
                      oldest_pending_age_s=(wall_clock() - oldest[0]) if oldest else None,
                      drops=drops, dead_letters=dead)


def iter_rows(path: str | Path, *, table: str = "outbox") -> Iterator[SpoolRow]:
    """Every row of ``outbox`` or ``dead_letter``, oldest first."""
    if table not in ("outbox", "dead_letter"):
        raise SpoolError(f"unknown table {table!r}: use 'outbox' or 'dead_letter'")
    conn = _open_ro(Path(path))
    try:
        for t in conn.execute(f"SELECT {_COLUMNS} FROM {table} ORDER BY id"):
            yield _row(t)
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


IMPORT_CHUNK_ROWS = 1000
"""Rows per transaction: the gateway's commits wait for the write lock at most one chunk."""


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
                    f"SELECT {_COLUMNS}, size FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
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
                out.executemany(
                    "INSERT INTO outbox (seq, msg_id, site_id, device_id, kind, event_time, data,"
                    " priority, enqueued_at, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [t[1:] for t in fresh])
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
