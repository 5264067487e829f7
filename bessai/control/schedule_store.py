"""Where schedules live: a small SQLite file on disk, and the book the executors read from.

* `ScheduleStore` — one row per device in its own SQLite file beside the spool
  (``schedules.sqlite``; WAL, ``synchronous=FULL``). `replace` swaps a device's schedule in one
  transaction: after a crash the file holds the old plan or the new one, never a mix, never none.
  It is not the spool: the spool is an outbox that empties; this is state that must be there at
  the next start (a restart in mid-slot resumes the slot).
* `ScheduleBook` — the schedules in memory, owned by the gateway tree (it outlives the executors'
  restarts). A new schedule reaches the book only after the store committed it; `wait_changed`
  wakes the executors.

Invariants: the control loop never touches SQLite — the store is called from the command path
(in a worker thread) and once at start-up; executors only read the book. Nothing here raises past
`ScheduleStore.load_all` for a damaged row: it is skipped and logged (``SCHEDULE_STORE_ROW_BAD``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import structlog
import trio

from bessai.bounds import clip
from bessai.control.schedule import InvalidSchedule, Schedule, parse_schedule

log = structlog.get_logger("bessai.control.schedule_store")

SCHEDULE_FILE_NAME = "schedules.sqlite"


def schedule_path_for(spool_path: Path | str) -> Path:
    """The schedule file beside the spool (``SPOOL_PATH``'s directory)."""
    return Path(spool_path).parent / SCHEDULE_FILE_NAME


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    device_id   TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    body        TEXT NOT NULL,
    stored_at   REAL NOT NULL
)
"""


@attrs.define(eq=False)
class ScheduleStore:
    """The durable schedules of one gateway, one per device. Blocking: call from a thread."""

    path: Path = attrs.field(converter=Path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            yield db
        finally:
            db.close()

    def replace(self, schedule: Schedule, stored_at: float) -> None:
        """Make ``schedule`` the device's plan, in one transaction (old or new, never neither)."""
        body = json.dumps(schedule.to_json(), separators=(",", ":"))
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO schedules (device_id, schedule_id, body, stored_at)"
                       " VALUES (?, ?, ?, ?)",
                       (schedule.device_id, schedule.schedule_id, body, stored_at))
            db.execute("COMMIT")

    def load_all(self) -> dict[str, Schedule]:
        """Every stored schedule by device (expired ones too: the executor ends them)."""
        if not self.path.exists():
            return {}
        result: dict[str, Schedule] = {}
        with self._connect() as db:
            rows = db.execute("SELECT device_id, body FROM schedules").fetchall()
        for device_id, body in rows:
            try:
                # checked against now when it arrived; read back as it is, expired or not
                schedule = parse_schedule(body, now_wall=None)
            except InvalidSchedule as exc:
                log.error("SCHEDULE_STORE_ROW_BAD", device=device_id, path=str(self.path),
                          error=clip(exc), consequence="row ignored; send the schedule again")
                continue
            result[device_id] = schedule
        return result


@attrs.define(eq=False)
class ScheduleBook:
    """The current schedule of every device, in memory; executors read it, intake writes it."""

    schedules: dict[str, Schedule] = attrs.field(factory=dict)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def get(self, device_id: str) -> Schedule | None:
        return self.schedules.get(device_id)

    def put(self, schedule: Schedule) -> None:
        self.schedules[schedule.device_id] = schedule
        self._changed.set()
        self._changed = trio.Event()

    def changed_event(self) -> trio.Event:
        """An event set at the next `put` (take it before deciding to wait)."""
        return self._changed
