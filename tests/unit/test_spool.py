"""The spool's promises: accepted means on disk, seq and msg_id are stamped once, the budget
drops only old telemetry with a gap record, a corrupt file never stops the gateway."""

from __future__ import annotations

import json
import sqlite3

import pytest
import trio

from bessai.clock import trio_wall_clock
from bessai.model import Event, Snapshot, TagReading
from bessai.observe.sink import RecordingSink
from bessai.uplink import spool as spool_mod
from bessai.uplink.message import (
    MessageInvalid,
    Record,
    RowPriority,
    record_from_event,
    record_from_snapshot,
)
from bessai.uplink.spool import Spool


def snap(device: str, ts: float, soc: float = 50.0) -> Record:
    return record_from_snapshot(Snapshot(site_id="site1", device_id=device, ts=ts, taken_at=0.0,
                                         readings={"soc": TagReading(soc)}))


def safety(device: str, ts: float) -> Record:
    return record_from_event(Event(name="SAFETY_BLOCK", site_id="site1", device_id=device,
                                   ts=ts, body={"rule": "soc_min"}))


async def running(nursery: trio.Nursery, spool: Spool) -> Spool:
    await nursery.start(spool.run)
    return spool


async def test_append_returns_only_after_the_row_is_on_disk(tmp_path, autojump_clock):
    path = tmp_path / "spool.sqlite"
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
        accepted = await spool.append(snap("inv1", 1.0))
        # a second, independent connection sees the committed row
        rows = sqlite3.connect(path).execute("SELECT seq, msg_id FROM outbox").fetchall()
        assert rows == [(accepted.seq, accepted.msg_id)]
        n.cancel_scope.cancel()


async def test_concurrent_appends_share_one_group_commit(tmp_path, autojump_clock):
    path = tmp_path / "spool.sqlite"
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
        before = spool.stats().commits
        results = []

        async def one(i):
            results.append(await spool.append(snap("inv1", float(i))))

        async with trio.open_nursery() as inner:
            for i in range(50):
                inner.start_soon(one, i)
        assert spool.stats().commits - before == 1
        assert sorted(r.seq for r in results) == list(range(1, 51))
        n.cancel_scope.cancel()


async def test_seq_continues_across_restarts_per_device(tmp_path, autojump_clock):
    path = tmp_path / "spool.sqlite"
    for _ in range(3):
        async with trio.open_nursery() as n:
            spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
            await spool.append_many([snap("inv1", 1.0), snap("inv2", 1.0), snap("inv1", 2.0)])
            rows = await spool.lease(1000)
            spool.ack(rows)  # delete everything: seq must still continue
            n.cancel_scope.cancel()
    seqs = sqlite3.connect(path).execute("SELECT device_id, last_seq FROM seqs").fetchall()
    assert dict(seqs) == {"inv1": 6, "inv2": 3}


async def test_rows_left_by_a_crash_are_leased_again_with_their_original_msg_id(
        tmp_path, autojump_clock):
    path = tmp_path / "spool.sqlite"
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
        accepted = await spool.append_many([snap("inv1", float(i)) for i in range(5)])
        leased = await spool.lease(2)
        assert [r.seq for r in leased] == [1, 2]
        n.cancel_scope.cancel()  # "crash": leased rows never acked
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
        rows = await spool.lease(1000)
        assert [(r.seq, r.msg_id) for r in rows] == [(a.seq, a.msg_id) for a in accepted]
        n.cancel_scope.cancel()


async def test_lease_never_hands_out_a_row_twice_and_release_returns_it_oldest_first(
        tmp_path, autojump_clock):
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(tmp_path / "s.sqlite", wall_clock=trio_wall_clock()))
        await spool.append_many([snap("inv1", float(i)) for i in range(10)])
        a = await spool.lease(3)
        b = await spool.lease(3)
        assert [r.seq for r in a] == [1, 2, 3]
        assert [r.seq for r in b] == [4, 5, 6]
        spool.release(a)
        c = await spool.lease(10)
        assert [r.seq for r in c] == [1, 2, 3, 7, 8, 9, 10]
        spool.ack(b)
        await spool.wait_changed()
        assert spool.stats().depth == 7
        n.cancel_scope.cancel()


async def test_budget_drops_only_oldest_telemetry_and_records_a_gap(tmp_path, autojump_clock):
    sink = RecordingSink()
    row_size = len(snap("inv1", 0.0).data) + spool_mod.ROW_OVERHEAD_BYTES
    budget = row_size * 100
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(tmp_path / "s.sqlite", max_bytes=budget, sink=sink,
                                       wall_clock=trio_wall_clock()))
        await spool.append(safety("inv1", 0.0))
        for i in range(1, 300):
            await spool.append(snap("inv1", float(i)))
        rows = await spool.lease(10_000)
        n.cancel_scope.cancel()
    stats = spool.stats()
    assert stats.bytes <= budget
    kinds = [r.kind for r in rows]
    assert kinds[0] == "event"  # the safety event, the oldest row, survived
    gaps = [json.loads(r.data) for r in rows if r.kind == "gap"]
    assert len(gaps) == 1  # later drop rounds merged into the unsent gap row
    dropped = gaps[0]["dropped"]
    telemetry_seqs = {r.seq for r in rows if r.kind == "telemetry"}
    gap_seq = next(r.seq for r in rows if r.kind == "gap")
    assert dropped["count"] == stats.drops["budget"] == sink.total("bessai.spool.drops")
    # every seq is either still pending or inside the gap's range: no silent hole
    everything = set(range(1, max(r.seq for r in rows) + 1))
    covered = ({r.seq for r in rows}
               | set(range(dropped["first_seq"], dropped["last_seq"] + 1)))
    assert everything <= covered
    assert min(telemetry_seqs) > dropped["first_seq"]  # the oldest telemetry went first
    assert gap_seq not in telemetry_seqs


async def test_budget_warns_once_at_80_percent(tmp_path, autojump_clock):
    from structlog.testing import capture_logs
    row_size = len(snap("inv1", 0.0).data) + spool_mod.ROW_OVERHEAD_BYTES
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            spool = await running(n, Spool(tmp_path / "s.sqlite", max_bytes=row_size * 10,
                                           wall_clock=trio_wall_clock()))
            for i in range(9):
                await spool.append(snap("inv1", float(i)))
            n.cancel_scope.cancel()
    assert [e["event"] for e in logs].count("SPOOL_BUDGET_WARN") == 1


async def test_critical_events_are_never_dropped_even_past_the_budget(tmp_path, autojump_clock):
    row_size = len(safety("inv1", 0.0).data) + spool_mod.ROW_OVERHEAD_BYTES
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(tmp_path / "s.sqlite", max_bytes=row_size * 5,
                                       wall_clock=trio_wall_clock()))
        for i in range(20):
            await spool.append(safety("inv1", float(i)))
        rows = await spool.lease(1000)
        n.cancel_scope.cancel()
    assert [r.seq for r in rows] == list(range(1, 21))


async def test_max_age_drops_old_telemetry_with_a_gap(tmp_path, autojump_clock):
    wall = None
    async with trio.open_nursery() as n:
        wall = trio_wall_clock()
        spool = await running(n, Spool(tmp_path / "s.sqlite", max_age_s=3600,
                                       age_check_interval_s=60, wall_clock=wall))
        await spool.append_many([snap("inv1", wall() + i) for i in range(10)])
        await trio.sleep(7200)
        await spool.append(snap("inv1", wall()))
        rows = await spool.lease(1000)
        n.cancel_scope.cancel()
    assert [r.kind for r in rows] == ["telemetry", "gap"]
    gap = json.loads(rows[1].data)
    assert gap["reason"] == "max_age"
    assert (gap["dropped"]["first_seq"], gap["dropped"]["last_seq"]) == (1, 10)


async def test_corrupt_spool_is_moved_aside_and_a_fresh_one_started(tmp_path, autojump_clock):
    from structlog.testing import capture_logs
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
            accepted = await spool.append(snap("inv1", 1.0))
            n.cancel_scope.cancel()
    assert accepted.seq == 1
    assert spool.corrupt_moved_to is not None
    assert spool.corrupt_moved_to.read_bytes().startswith(b"this is not a database")
    assert any(e["event"] == "SPOOL_CORRUPT" and e["log_level"] == "error" for e in logs)


async def test_dead_letter_moves_the_row_out_of_the_outbox(tmp_path, autojump_clock):
    path = tmp_path / "s.sqlite"
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
        await spool.append_many([snap("inv1", 1.0), snap("inv1", 2.0)])
        rows = await spool.lease(10)
        await spool.dead_letter(rows[0], "400 INVALID_ARGUMENT")
        assert spool.stats().dead_letters == 1
        assert spool.stats().depth == 1
        n.cancel_scope.cancel()
    dead = list(spool_mod.iter_rows(path, table="dead_letter"))
    assert [r.msg_id for r in dead] == [rows[0].msg_id]


async def test_invalid_record_is_refused_before_it_enters_the_spool(tmp_path, autojump_clock):
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(tmp_path / "s.sqlite", wall_clock=trio_wall_clock()))
        bad = Record(site_id="s" * 2000, device_id="inv1", kind="telemetry", event_time=0.0,
                     data=b"{}", priority=RowPriority.TELEMETRY)
        with pytest.raises(MessageInvalid, match="shorten the site or device id"):
            await spool.append(bad)
        assert spool.stats().depth == 0
        n.cancel_scope.cancel()


async def test_cli_stats_and_export_read_the_file(tmp_path, autojump_clock):
    import io
    path = tmp_path / "s.sqlite"
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
        await spool.append_many([snap("inv1", 1.0), safety("inv1", 2.0)])
        n.cancel_scope.cancel()
    stats = spool_mod.read_stats(path)
    assert stats.depth == 2
    out = io.StringIO()
    assert spool_mod.export_rows(path, out) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [ln["kind"] for ln in lines] == ["telemetry", "event"]
    assert lines[1]["data"]["name"] == "SAFETY_BLOCK"


@pytest.mark.parametrize("n", [1, 31, 32, 5000])
def test_msg_ids_are_version_4_uuids_and_unique(n):
    import uuid
    ids = spool_mod.new_msg_ids(n)
    assert len(ids) == len(set(ids)) == n
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


async def test_one_group_of_several_appends_stamps_each_device_in_arrival_order(
        tmp_path, autojump_clock):
    path = tmp_path / "spool.sqlite"
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(path, wall_clock=trio_wall_clock()))
        await spool.append(snap("inv2", 0.0))
        before = spool.stats().commits
        results = {}

        async def many(name, devices):
            results[name] = await spool.append_many(
                [snap(d, float(i)) for i, d in enumerate(devices)])

        async with trio.open_nursery() as inner:
            inner.start_soon(many, "a", ["inv1", "inv2", "inv1"])
            await trio.sleep(0)
            inner.start_soon(many, "b", ["inv2", "inv1"])
        assert spool.stats().commits - before == 1
        assert [(r.device_id, r.seq) for r in results["a"]] == [
            ("inv1", 1), ("inv2", 2), ("inv1", 2)]
        assert [(r.device_id, r.seq) for r in results["b"]] == [("inv2", 3), ("inv1", 3)]
        on_disk = sqlite3.connect(path).execute(
            "SELECT device_id, seq, msg_id, size - length(data) FROM outbox WHERE id > 1 "
            "ORDER BY id").fetchall()
        assert on_disk == [(r.device_id, r.seq, r.msg_id, spool_mod.ROW_OVERHEAD_BYTES)
                           for r in results["a"] + results["b"]]
        assert spool.last_seq == {"inv1": 3, "inv2": 3}
        n.cancel_scope.cancel()


async def test_an_oversized_record_among_known_ids_refuses_the_whole_group(
        tmp_path, autojump_clock):
    async with trio.open_nursery() as n:
        spool = await running(n, Spool(tmp_path / "s.sqlite", wall_clock=trio_wall_clock()))
        await spool.append_many([snap("inv1", 1.0)])  # (site1, inv1) is now known-good
        big = Record(site_id="site1", device_id="inv1", kind="telemetry", event_time=2.0,
                     data=b"x" * 10_000_001, priority=RowPriority.TELEMETRY)
        with pytest.raises(MessageInvalid, match="Pub/Sub allows"):
            await spool.append_many([snap("inv1", 2.0), big])
        assert spool.stats().depth == 1
        n.cancel_scope.cancel()


async def test_a_new_spool_file_has_the_schema_files_of_version_1_have(tmp_path, autojump_clock):
    # The format is a contract with files already on disk and with `bessai spool import`:
    # the dead-letter table is the outbox's columns plus reason and dead_at, in that order.
    path = tmp_path / "spool.sqlite"
    async with trio.open_nursery() as n:
        await running(n, Spool(path, wall_clock=trio_wall_clock()))
        n.cancel_scope.cancel()
    conn = sqlite3.connect(path)
    row_columns = ("seq INTEGER NOT NULL", "msg_id TEXT NOT NULL", "site_id TEXT NOT NULL",
                   "device_id TEXT NOT NULL", "kind TEXT NOT NULL", "event_time REAL NOT NULL",
                   "data BLOB NOT NULL", "priority INTEGER NOT NULL",
                   "enqueued_at REAL NOT NULL", "size INTEGER NOT NULL")

    def table(name: str, *columns: str) -> str:
        return f"CREATE TABLE {name} (\n" + ",\n".join(f"    {c}" for c in columns) + "\n)"

    assert dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")) == {
        "outbox": table("outbox", "id INTEGER PRIMARY KEY AUTOINCREMENT", *row_columns),
        "sqlite_sequence": "CREATE TABLE sqlite_sequence(name,seq)",
        "outbox_gaps": "CREATE INDEX outbox_gaps ON outbox (device_id, id) WHERE kind = 'gap'",
        "seqs": "CREATE TABLE seqs (device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)",
        "drops": "CREATE TABLE drops (reason TEXT PRIMARY KEY, count INTEGER NOT NULL)",
        "dead_letter": table("dead_letter", "id INTEGER PRIMARY KEY", *row_columns,
                             "reason TEXT NOT NULL", "dead_at REAL NOT NULL"),
    }
    assert conn.execute("PRAGMA user_version").fetchone() == (spool_mod.SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
