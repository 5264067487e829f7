"""Dropping rows and saying so: the disk budget, the maximum age, and gap rows.

A row leaves the spool unsent only here, and never silently: every drop is recorded as a gap
row (kind ``gap``, critical, so it is never dropped itself) naming the device, the seq range,
the count and the times dropped, so downstream knows exactly which seqs will not come.

- Victims are telemetry first, then non-critical events, **never critical rows**, and never a
  row leased to the uplink (it may be in flight; the ack would then find nothing).
- A device's drops merge into its newest gap row while that row is unsent and has the same
  reason: a long outage yields one gap row per device and reason, not one per drop round.
- Rows that never reached the file (`Lost`: refused during a disk fault, lost with a deleted
  file) get their gap rows from `lost_gap_rows`; rows that never got a seq consume seqs there,
  so the gap's range is exact.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import defaultdict

from bessai.model import RecordKind
from bessai.uplink.message import RowPriority, gap_payload
from bessai.uplink.spool.messages import Lost, StoredRow, WriteGroup
from bessai.uplink.spool.schema import INSERT_ROW, ROW_OVERHEAD_BYTES

Victim = tuple[int, str, str, int, float, int]
"""``(id, site_id, device_id, seq, event_time, size)`` of a row chosen to be dropped."""

_VICTIM_COLUMNS = "id, site_id, device_id, seq, event_time, size"


def select_by_size(conn: sqlite3.Connection, leased: frozenset[int],
                   excess: int) -> list[Victim]:
    """The oldest droppable rows whose sizes add up to ``excess`` bytes (telemetry first)."""
    victims: list[Victim] = []
    freed = 0
    for priority in (RowPriority.TELEMETRY, RowPriority.EVENT):
        after = 0
        while freed < excess:
            chunk = conn.execute(
                f"SELECT {_VICTIM_COLUMNS} FROM outbox "
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


def select_by_age(conn: sqlite3.Connection, leased: frozenset[int],
                  before: float) -> list[Victim]:
    """Every droppable row accepted before ``before`` (wall clock)."""
    rows: list[Victim] = conn.execute(
        f"SELECT {_VICTIM_COLUMNS} FROM outbox "
        "WHERE priority > ? AND enqueued_at < ? ORDER BY id",
        (int(RowPriority.CRITICAL), before)).fetchall()
    return [t for t in rows if t[0] not in leased]


def drop(conn: sqlite3.Connection, victims: list[Victim], reason: str, group: WriteGroup,
         now: float) -> tuple[int, int, int]:
    """Delete victims and record one gap per device (merged into an unsent gap row).

    Returns the change in rows and bytes, and how many gap rows were added. New gap rows take
    the device's next seq in ``group.last_seq``.
    """
    if not victims:
        return 0, 0, 0
    conn.executemany("DELETE FROM outbox WHERE id = ?", [(t[0],) for t in victims])
    d_depth = -len(victims)
    d_size = -sum(t[5] for t in victims)
    per_device: dict[str, list[Victim]] = defaultdict(list)
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
        conn.execute(INSERT_ROW, _gap_row(seq, site_id, device_id, last_ts, data, now))
        d_depth += 1
        d_size += len(data) + ROW_OVERHEAD_BYTES
        gaps += 1
    return d_depth, d_size, gaps


def lost_gap_rows(lost: list[Lost], seqs: dict[str, int],
                  now: float) -> tuple[list[StoredRow], set[str]]:
    """The gap rows for ``lost`` (advancing ``seqs``), and the devices they name."""
    rows: list[StoredRow] = []
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
        rows.append(_gap_row(seq, item.site_id, item.device_id, item.last_ts, data, now))
        devices.add(item.device_id)
    return rows, devices


def _gap_row(seq: int, site_id: str, device_id: str, last_ts: float, data: bytes,
             now: float) -> StoredRow:
    """A gap row for `INSERT_ROW` (critical: a gap record is never dropped)."""
    return (seq, str(uuid.uuid4()), site_id, device_id, str(RecordKind.GAP), last_ts, data,
            int(RowPriority.CRITICAL), now, len(data) + ROW_OVERHEAD_BYTES)
