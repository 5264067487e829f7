"""Accounting for the real-process scenarios: what the spool assigned against what the emulator
holds (shared by ``sigkill-restart`` and ``bench.chaos_net``).

After the gateway process stopped, its spool file says which seq it gave each device
(``seqs.last_seq``) and which rows it still holds (``outbox``); the topic, pulled back, says
what was delivered. Every seq 1..last_seq must be delivered, named by a gap record (dropped by
the disk budget) or still on disk — otherwise it is *lost*. A seq seen under two ``msg_id`` is a
seq reused after a restart; the same ``msg_id`` twice is a duplicate (an at-least-once re-send).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from bench.chaos.rig import Result


@attrs.frozen
class Ledger:
    """What `account_spool` found besides the figures it wrote into the result."""

    last_seqs: dict[str, int]
    missing_accepted: list[str]
    holes: int
    reused: list[tuple[str, int]]
    kinds: dict[str, int]
    """Delivered rows by kind (telemetry, event, command_result, gap)."""
    events: list[dict[str, Any]]
    """Delivered events and command results, decoded."""


def read_spool(spool: Path) -> tuple[dict[str, int], dict[str, tuple[str, int, str, bytes]]]:
    """(last seq per device, pending rows by msg_id) from a stopped gateway's spool, read-only."""
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        last = dict(conn.execute("SELECT device_id, last_seq FROM seqs").fetchall())
        left = {m: (d, s, k, data) for m, d, s, k, data in conn.execute(
            "SELECT msg_id, device_id, seq, kind, data FROM outbox")}
    finally:
        conn.close()
    return last, left


def account_spool(result: Result, received: list[dict[str, Any]], spool: Path,
                  accepted: Mapping[str, tuple[str, int]] | None = None) -> Ledger:
    """Fill ``result``'s produced/spooled/delivered/dup/dropped/pending/lost from the pulled
    messages and the spool; ``accepted`` (msg_id → (device, seq)) are rows seen committed
    earlier (at kill times), each of which must be delivered or still on disk."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in received:
        by_id[m["attributes"]["msg_id"]].append(m)
    last, left = read_spool(spool)
    seq_owner: dict[tuple[str, int], set[str]] = defaultdict(set)
    covered: dict[str, set[int]] = defaultdict(set)
    kinds: dict[str, int] = defaultdict(int)
    events: list[dict[str, Any]] = []
    dropped = gaps = 0

    def gap(data: bytes | str, device: str) -> None:
        nonlocal dropped, gaps
        g = json.loads(data)["dropped"]
        dropped += int(g["count"])
        gaps += 1
        covered[device].update(range(int(g["first_seq"]), int(g["last_seq"]) + 1))

    for msg_id, copies in by_id.items():
        a = copies[0]["attributes"]
        device, seq = a["device_id"], int(a["seq"])
        seq_owner[(device, seq)].add(msg_id)
        covered[device].add(seq)
        kinds[a["kind"]] += 1
        if a["kind"] == "gap":
            gap(copies[0]["data"], device)
        elif a["kind"] in ("event", "command_result"):
            events.append(json.loads(copies[0]["data"]))
    for msg_id, (device, seq, kind, data) in left.items():
        seq_owner[(device, seq)].add(msg_id)
        covered[device].add(seq)
        if kind == "gap":
            gap(data, device)
    # a seq missing from 1..last, or one delivered past last (last_seq went backwards)
    holes = sum(len(set(range(1, n + 1)) ^ covered[d]) for d, n in last.items())
    missing = [m for m in (accepted or {}) if m not in by_id and m not in left]
    r = result
    r.produced = r.spooled = sum(last.values())
    r.delivered = len(by_id)
    r.duplicates = len(received) - len(by_id)
    r.dropped, r.gap_records = dropped, gaps
    r.pending_at_stop = len(left)
    r.lost = len(missing) + holes
    return Ledger(last_seqs=last, missing_accepted=missing, holes=holes,
                  reused=[k for k, ids in seq_owner.items() if len(ids) > 1],
                  kinds=dict(kinds), events=events)
