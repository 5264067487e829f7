"""The Trio-facing spool: every reading and event is on disk before it counts as accepted.

`Spool` is the outbox the rest of the gateway talks to; it outlives actor restarts (the tree
owns it) and its `run` method is the spool actor. It never touches SQLite: the file and its
one connection belong to the store's thread (`bessai.uplink.spool.worker`), which this side
sends requests to and gets values back from. Everything here runs on the event loop.

Invariants:
- **Accepted means on disk.** `append` / `append_many` queue records in memory and return only
  after the group holding them was committed (one fsync per group, every ``commit_interval_s``,
  or at once when ``commit_batch_rows`` are already waiting: a full group gains nothing by
  waiting).
- Each row is stamped at enqueue with ``seq`` and a ``msg_id`` that is never regenerated
  (`bessai.uplink.spool.group`): a row sent twice is sent with the same ``msg_id``.
- A row is deleted only by `ack` (after Pub/Sub returned its id), by `dead_letter` (moved to the
  ``dead_letter`` table), or by the disk budget / max age (`bessai.uplink.spool.drops`), which
  never drop critical rows and record a gap row for what they drop.
- Rows leased to the uplink are never dropped and never leased twice; rows left by a crash are
  simply pending again on the next start (they are sent again with their original ``msg_id``).
- **A failing disk is a state, never a crash** (`bessai.uplink.spool.disk`): ENOSPC, a
  read-only or unwritable filesystem, a held write lock, I/O errors and a spool file deleted
  under the gateway each log one ``SPOOL_DISK_FAULT condition=...`` on entering and one
  ``SPOOL_DISK_RECOVERED`` on leaving (never one per commit), and `stats` names the condition.
  Meanwhile the spool actor keeps running and retries every ``fault_retry_s``: appends of
  critical records are *held* (their callers keep waiting; nothing critical is failed) and
  written when the disk recovers; telemetry that cannot be written is refused, counted as
  ``drops{reason=disk_fault}``, and recorded as a gap row (its seqs are consumed, so the seq
  range of the gap is exact) at the first successful commit. The same holds at start-up: a
  spool that cannot be opened does not stop the tree from starting.
- **A deleted spool file is noticed at the next commit**: the file is recreated, critical rows
  are copied over from the still-open old file, every other row of it is reported as a gap
  row, and seq continues from the highest known (never restarts at 1).
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

from bessai.clock import WallClock, system_wall_clock
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.uplink.message import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    Record,
    RowPriority,
    SpoolRow,
)
from bessai.uplink.spool.budget import BudgetAlarm
from bessai.uplink.spool.disk import DiskCondition, DiskFault, DiskState
from bessai.uplink.spool.drops import lost_gap_rows
from bessai.uplink.spool.errors import SpoolWriteError
from bessai.uplink.spool.group import Waiter, data_of, device_of, site_of, stamp
from bessai.uplink.spool.ids import new_msg_ids
from bessai.uplink.spool.messages import (
    FileLost,
    Limits,
    Lost,
    Salvage,
    SeqsMoved,
    WriteGroup,
)
from bessai.uplink.spool.store import Store
from bessai.uplink.spool.values import Accepted, SpoolStats
from bessai.uplink.spool.worker import Limiter, StoreClosed, StoreThread

_REOPEN_ON = frozenset({DiskCondition.READ_ONLY, DiskCondition.PERMISSION_DENIED,
                        DiskCondition.IO_ERROR, DiskCondition.CORRUPT, DiskCondition.DELETED})
"""Conditions whose probe closes and re-opens the file (a full disk or a held lock is simply
retried on the same connection: re-opening would run ``quick_check`` on every probe)."""

_MAX_VALID_IDS = 4096


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
    ``locked`` (in the store's thread: the event loop never waits on it)."""
    wall_clock: WallClock = system_wall_clock
    sink: MetricSink = NULL_SINK
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    limiter: Limiter | None = attrs.field(default=None, repr=False)
    """What serializes the calls to the store's thread: a `trio.CapacityLimiter(1)` by default;
    anything with ``acquire_on_behalf_of`` / ``release_on_behalf_of`` that admits ONE borrower
    at a time may be injected (to observe thread work, e.g. in virtual-time tests)."""

    _store: StoreThread | None = attrs.field(default=None, init=False, repr=False)
    """The thread that owns the open file, or None while closed (or faulty)."""
    _pending: list[Waiter] = attrs.field(factory=list, init=False, repr=False)
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
    _budget: BudgetAlarm = attrs.field(factory=BudgetAlarm, init=False, repr=False)
    _corrupt_moved_to: Path | None = attrs.field(default=None, init=False, repr=False)
    _disk: DiskState = attrs.field(factory=DiskState, init=False, repr=False)
    _next_probe: float = attrs.field(default=float("-inf"), init=False, repr=False)
    _lost: list[Lost] = attrs.field(factory=list, init=False, repr=False)
    _salvage: Salvage = attrs.field(factory=Salvage, init=False, repr=False)
    """Critical rows read from a deleted file, to write into its replacement."""
    _inflight: list[Waiter] = attrs.field(factory=list, init=False, repr=False)

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
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
                    if self._store is None:
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
        """Open (or create) the file in the store's thread; a file SQLite calls corrupt is
        moved aside there.

        Returns False, in a disk-fault state, when the file cannot be opened for any other
        reason (read-only, permission denied, locked, disk full): never raises for the disk.
        """
        if self._store is not None:
            return True
        # Leases survive a restart of the spool actor: the uplink that holds them still runs
        # and will ack or release them (an uplink restart calls `reset_leases`). Forgetting
        # them here re-sent every batch in flight (found by chaos crash-spool-mid-drain).
        self._cursor = 0
        self._leasable_version += 1
        opener = functools.partial(Store.open, self.path, now=self.wall_clock(),
                                   busy_timeout_s=self.busy_timeout_s,
                                   known_seqs=dict(self._last_seq), salvage=self._salvage,
                                   log=self.log)
        try:
            self._store, opened = await StoreThread.start(opener, self._limiter)
        except (sqlite3.Error, OSError) as exc:
            self._enter_fault(exc)
            self._next_probe = trio.current_time() + self.fault_retry_s
            return False
        self._salvage = Salvage()
        self._last_seq = opened.last_seq
        self._depth, self._bytes = opened.depth, opened.bytes
        self._drops = opened.drops
        self._dead_letters = opened.dead_letters
        self._oldest_enqueued_at = opened.oldest_enqueued_at
        if opened.moved_to is not None:
            self._corrupt_moved_to = opened.moved_to
            # a fresh file: row ids held by the uplink or queued for deletion mean nothing here
            self._leased.clear()
            self._pending_deletes.clear()
        # Opening wrote to the file (schema, user_version): the disk takes writes again.
        self._leave_fault()
        self._ready.set()
        self._report_gauges()
        return True

    async def aclose(self) -> None:
        if self._store is None:
            return
        store, self._store = self._store, None
        self._ready = trio.Event()
        await store.call(Store.close, last=True)

    @property
    def corrupt_moved_to(self) -> Path | None:
        """Where a corrupt file found at open was moved, if one was."""
        return self._corrupt_moved_to

    @property
    def _limiter(self) -> Limiter:
        if self.limiter is None:
            self.limiter = trio.CapacityLimiter(1)
        return self.limiter

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
        waiter = Waiter(items, new_msg_ids(len(items)))
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
        ids = set(zip(map(site_of, items), map(device_of, items), strict=True))
        if (ids <= self._valid_ids
                and max(map(len, map(data_of, items))) <= MAX_MESSAGE_BYTES):
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
            try:
                result = await self._read_leasable(self._cursor, frozenset(self._leased),
                                                   limit, max_bytes)
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

    async def _read_leasable(self, cursor: int, leased: frozenset[int], limit: int,
                             max_bytes: int) -> tuple[list[SpoolRow], bool] | None:
        """The store's read for `lease` (None if the spool closed before it could run)."""
        store = self._store
        if store is None:
            return None
        try:
            return await store.call(Store.lease, cursor, leased, limit, max_bytes)
        except StoreClosed:
            return None

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
        if self._store is not None and self._fault is not None \
                and self._fault.condition in _REOPEN_ON:
            await self.aclose()  # re-open: a remounted or recreated file needs a new connection
        if self._store is None and not await self.open():
            self._refuse_pending()
            return
        store = self._store
        assert store is not None
        waiters, self._pending = self._pending, []
        self._pending_rows = 0
        deletes, self._pending_deletes = self._pending_deletes, []
        dead, self._pending_dead = self._pending_dead, []
        lost, self._lost = self._lost, []
        if not (waiters or deletes or dead or lost):
            return
        now = self.wall_clock()
        seqs = dict(self._last_seq)
        lost_gaps, lost_devices = lost_gap_rows(lost, seqs, now)
        stamped = stamp(waiters, seqs, now)
        age_due = (self.max_age_s is not None
                   and trio.current_time() - self._last_age_check >= self.age_check_interval_s)
        lost_drops: dict[str, int] = defaultdict(int)
        for item in lost:
            if item.first_seq is None:
                lost_drops[item.reason] += item.count
        group = WriteGroup(inserts=stamped.inserts, deletes=deletes,
                           dead=[(row_id, reason) for row_id, reason, _ in dead],
                           leased=frozenset(self._leased) - set(deletes), last_seq=seqs,
                           known_seqs=dict(self._last_seq), depth=self._depth,
                           bytes=self._bytes, insert_bytes=stamped.insert_bytes,
                           insert_devices=stamped.devices | lost_devices,
                           lost_gaps=lost_gaps, lost_drops=dict(lost_drops))
        limits = Limits(max_bytes=self.max_bytes, max_age_s=self.max_age_s, age_due=age_due)
        self._inflight = waiters
        try:
            outcome = await store.call(Store.write, group, now, limits)
        except FileLost:
            self._requeue(waiters, deletes, dead, lost)
            await self._recreate()
            return
        except SeqsMoved as moved:
            self._requeue(waiters, deletes, dead, lost)
            for device, n in moved.seqs.items():
                self._last_seq[device] = max(n, self._last_seq.get(device, 0))
            self._wakeup.set()  # stamp the group again at once
            return
        except StoreClosed:
            self._requeue(waiters, deletes, dead, lost)
            self._wakeup.set()  # closed while this group waited: commit it after the re-open
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
        inserts = stamped.inserts
        if inserts or outcome.gap_rows or outcome.dropped or lost_gaps or outcome.recounted:
            self._leasable_version += 1
        self._oldest_enqueued_at = outcome.oldest_enqueued_at
        self._dead_letters += len(group.dead)
        for reason, n in outcome.dropped.items():
            self._drops[reason] = self._drops.get(reason, 0) + n
            self.sink.count("bessai.spool.drops", n, reason=reason)
        if group.dead:
            self.sink.count("bessai.spool.dead_letters", len(group.dead))
        for waiter, accepted in zip(waiters, stamped.results, strict=True):
            waiter.result = accepted
            waiter.done.set()
        for _, _, done in dead:
            done.set()
        self._budget.check(path=str(self.path), used_bytes=outcome.bytes,
                           max_bytes=self.max_bytes, dropped=outcome.dropped.get("budget", 0),
                           log=self.log)
        self._report_gauges()
        if inserts or outcome.gap_rows or deletes or dead or lost_gaps or outcome.recounted:
            changed, self._changed = self._changed, trio.Event()
            changed.set()

    # ---- disk faults ----------------------------------------------------------------------

    def _enter_fault(self, cause: BaseException | DiskCondition) -> None:
        self._disk.enter(cause, path=self.path, wall_s=self.wall_clock(), log=self.log,
                         sink=self.sink)

    def _leave_fault(self) -> None:
        self._disk.leave(path=self.path, log=self.log)

    @property
    def _fault(self) -> DiskFault | None:
        return self._disk.fault

    def _requeue(self, waiters: list[Waiter], deletes: list[int],
                 dead: list[tuple[int, str, trio.Event]], lost: list[Lost]) -> None:
        """Put back a group that was not written (it goes first, in its order)."""
        self._pending[:0] = waiters
        self._pending_rows += sum(len(w.records) for w in waiters)
        self._pending_deletes[:0] = deletes
        self._pending_dead[:0] = dead
        self._lost[:0] = lost

    def _refuse_pending(self) -> None:
        """While the disk is faulty: refuse waiting telemetry (counted, and a gap row later),
        hold everything critical (its appender keeps waiting until the disk recovers)."""
        held: list[Waiter] = []
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
            self._disk.telemetry_dropped += count
        for item in reversed(self._lost):
            if (item.device_id == device_id and item.reason == reason
                    and item.first_seq is None):
                item.count += count
                item.first_ts = min(item.first_ts, first_ts)
                item.last_ts = max(item.last_ts, last_ts)
                return
        self._lost.append(Lost(site_id, device_id, reason, count, first_ts, last_ts))
        self._wakeup.set()

    async def _recreate(self) -> None:
        """The file was deleted (or replaced) under us: save what the still-open old file
        holds, then open a fresh file at the path."""
        self._enter_fault(DiskCondition.DELETED)
        store, self._store = self._store, None
        self._ready = trio.Event()
        if store is not None:
            self._salvage, lost = await store.call(Store.salvage_and_close, last=True)
        else:
            lost = []
        for item in lost:
            self._drops["file_deleted"] = self._drops.get("file_deleted", 0) + item.count
            self.sink.count("bessai.spool.drops", item.count, reason="file_deleted")
        self._lost[:0] = lost
        lost_rows = sum(item.count for item in lost)
        copied = len(self._salvage.rows)
        self._disk.telemetry_dropped += lost_rows
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

    # ---- introspection --------------------------------------------------------------------

    def _report_gauges(self) -> None:
        self.sink.gauge("bessai.spool.depth", self._depth)
        self.sink.gauge("bessai.spool.bytes", self._bytes)
        age = self._oldest_age()
        self.sink.gauge("bessai.spool.oldest_age_s", age if age is not None else 0.0)

    def _oldest_age(self) -> float | None:
        if self._oldest_enqueued_at is None:
            return None
        return max(0.0, self.wall_clock() - self._oldest_enqueued_at)

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
