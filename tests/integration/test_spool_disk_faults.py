"""Disk faults are states of the spool, proven on real filesystems (a tmpfs filled up for real,
a read-only bind mount, a second SQLite connection holding the write lock, an unlinked file,
a directory the gateway's user may not write).

Each condition logs exactly one SPOOL_DISK_FAULT on entering and one SPOOL_DISK_RECOVERED on
leaving, whatever the number of commits in between; critical records are held and written on
recovery; refused telemetry is counted and recorded as a gap row whose seq range is exact;
"locked" and "read-only" are never taken for "corrupt". Virtual time, with SQLite's thread work
frozen (`FreezingLimiter`), so a fault lasting many commit intervals takes no real time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.model import RecordKind
from bessai.uplink.message import Record, RowPriority
from bessai.uplink.spool import Spool, SpoolWriteError
from tests.disk_faults import (
    DiskFiller,
    make_writable,
    read_only_view,
    require_root,
    small_tmpfs,
)
from tests.pubsub_faults import FreezingLimiter

FAULT, RECOVERED = "SPOOL_DISK_FAULT", "SPOOL_DISK_RECOVERED"


def telemetry(ts: float, size: int = 200) -> Record:
    return Record(site_id="s1", device_id="inv1", kind=RecordKind.TELEMETRY, event_time=ts,
                  data=json.dumps({"ts": ts, "pad": "x" * size}).encode(),
                  priority=RowPriority.TELEMETRY)


def critical(ts: float, size: int = 100) -> Record:
    return Record(site_id="s1", device_id="inv1", kind=RecordKind.EVENT, event_time=ts,
                  data=json.dumps({"name": "SAFETY_BLOCK", "ts": ts, "pad": "y" * size}).encode(),
                  priority=RowPriority.CRITICAL)


def make_spool(path: Path, **kwargs) -> Spool:
    return Spool(path, wall_clock=trio_wall_clock(), limiter=FreezingLimiter(),
                 busy_timeout_s=0.2, **kwargs)


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


def rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT seq, msg_id, kind, priority, data FROM outbox "
                            "ORDER BY seq").fetchall()
    finally:
        conn.close()


async def wait_for(predicate, what: str, timeout_s: float = 60) -> None:
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout_s} s (virtual): {what}")


async def try_telemetry(spool: Spool, ts: float, size: int = 200) -> bool:
    try:
        await spool.append(telemetry(ts, size))
    except SpoolWriteError:
        return False
    return True


def assert_gap_covers(all_rows: list[tuple], reason: str, refused: int) -> dict:
    """One gap row of ``reason`` whose seq range is exactly the seqs nobody else holds."""
    gaps = [json.loads(r[4]) for r in all_rows if r[2] == "gap"
            and json.loads(r[4])["reason"] == reason]
    assert len(gaps) == 1, gaps
    dropped = gaps[0]["dropped"]
    assert dropped["count"] == refused
    assert dropped["last_seq"] - dropped["first_seq"] + 1 == refused
    taken = {r[0] for r in all_rows}
    assert not taken & set(range(dropped["first_seq"], dropped["last_seq"] + 1))
    seqs = sorted(taken | set(range(dropped["first_seq"], dropped["last_seq"] + 1)))
    assert seqs == list(range(1, len(seqs) + 1)), "seq has a hole nothing accounts for"
    return dropped


async def test_a_full_disk_is_one_state_and_critical_records_wait_for_the_space(
        tmp_path, autojump_clock):
    require_root()
    with small_tmpfs(tmp_path / "disk", "2m") as disk, capture_logs() as logs:
        path = disk / "spool.sqlite"
        filler = DiskFiller(disk)
        async with trio.open_nursery() as n:
            spool = make_spool(path)
            await n.start(spool.run)
            for i in range(5):
                assert await try_telemetry(spool, float(i))
            filler.fill()
            refused = 0
            for i in range(5, 25):  # 20 commit intervals on a full disk
                refused += not await try_telemetry(spool, float(i), size=20_000)
            assert refused == 20
            assert spool.stats().condition == "disk_full"
            held: list = []

            async def append_critical() -> None:
                held.append(await spool.append(critical(100.0, size=30_000)))

            n.start_soon(append_critical)
            await trio.sleep(5)
            assert held == []
            assert spool.stats().held == 1
            filler.free()
            await wait_for(lambda: held, "the held critical record written once space is back")
            assert spool.stats().condition == "ok"
            n.cancel_scope.cancel()
        all_rows = rows(path)
    assert len(events(logs, FAULT)) == 1
    assert events(logs, FAULT)[0]["condition"] == "disk_full"
    assert len(events(logs, RECOVERED)) == 1
    assert events(logs, RECOVERED)[0]["telemetry_dropped"] == 20
    assert not [e for e in logs if "cannot rollback" in json.dumps(e, default=str)]
    assert events(logs, FAULT)[0]["error"] == "SQLITE_FULL"
    assert held[0].msg_id in {r[1] for r in all_rows}
    dropped = assert_gap_covers(all_rows, "disk_fault", 20)
    assert dropped["first_seq"] == 6
    assert spool.stats().drops["disk_fault"] == 20


async def test_a_spool_locked_at_start_waits_and_is_never_moved_aside(tmp_path, autojump_clock):
    path = tmp_path / "spool.sqlite"
    async with trio.open_nursery() as n:
        first = make_spool(path)
        await n.start(first.run)
        kept = [await first.append(telemetry(float(i))) for i in range(5)]
        n.cancel_scope.cancel()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            spool = make_spool(path)
            await n.start(spool.run)  # ready although the file cannot be opened yet
            assert spool.stats().condition == "locked"
            held: list = []

            async def append_critical() -> None:
                held.append(await spool.append(critical(10.0)))

            n.start_soon(append_critical)
            await trio.sleep(10)
            assert not held
            holder.execute("ROLLBACK")
            holder.close()
            await wait_for(lambda: held, "the critical record written once the lock is gone")
            n.cancel_scope.cancel()
    assert not events(logs, "SPOOL_CORRUPT")
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert [e["condition"] for e in events(logs, FAULT)] == ["locked"]
    assert len(events(logs, RECOVERED)) == 1
    msg_ids = {r[1] for r in rows(path)}
    assert {a.msg_id for a in kept} | {held[0].msg_id} <= msg_ids
    assert held[0].seq == 6  # seq continues from the rows found in the file


async def test_a_lock_held_while_running_is_one_state_however_many_commits(
        tmp_path, autojump_clock):
    path = tmp_path / "spool.sqlite"
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            spool = make_spool(path)
            await n.start(spool.run)
            assert await try_telemetry(spool, 0.0)
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            held: list = []

            async def append_critical() -> None:
                held.append(await spool.append(critical(5.0)))

            refused = 0
            for i in range(1, 11):
                refused += not await try_telemetry(spool, float(i))
                if i == 3:
                    n.start_soon(append_critical)
            assert refused == 10
            assert not held
            assert spool.stats().condition == "locked"
            holder.execute("ROLLBACK")
            holder.close()
            await wait_for(lambda: held, "the held critical record written")
            assert await try_telemetry(spool, 20.0)
            n.cancel_scope.cancel()
    assert [e["condition"] for e in events(logs, FAULT)] == ["locked"]
    assert len(events(logs, RECOVERED)) == 1
    assert_gap_covers(rows(path), "disk_fault", 10)


async def test_a_read_only_filesystem_at_start_is_a_fault_not_corruption_and_rows_survive(
        tmp_path, autojump_clock):
    require_root()
    source = tmp_path / "data"
    source.mkdir()
    async with trio.open_nursery() as n:
        first = make_spool(source / "spool.sqlite")
        await n.start(first.run)
        kept = [await first.append(telemetry(float(i))) for i in range(5)]
        n.cancel_scope.cancel()
    with read_only_view(source, tmp_path / "ro") as ro, capture_logs() as logs:
        async with trio.open_nursery() as n:
            spool = make_spool(ro / "spool.sqlite")
            await n.start(spool.run)  # ready: the rest of the tree must start
            assert spool.stats().condition == "read_only"
            refused = sum([not await try_telemetry(spool, 10.0 + i) for i in range(3)])
            held: list = []

            async def append_critical() -> None:
                held.append(await spool.append(critical(20.0)))

            n.start_soon(append_critical)
            await trio.sleep(10)
            assert refused == 3
            assert not held
            make_writable(ro)
            await wait_for(lambda: held, "the held critical record written after remount rw")
            n.cancel_scope.cancel()
        all_rows = rows(ro / "spool.sqlite")
    assert not events(logs, "SPOOL_CORRUPT")
    assert not list(source.glob("*.corrupt-*"))
    assert [e["condition"] for e in events(logs, FAULT)] == ["read_only"]
    assert len(events(logs, RECOVERED)) == 1
    assert {a.msg_id for a in kept} <= {r[1] for r in all_rows}
    assert_gap_covers(all_rows, "disk_fault", 3)


@pytest.mark.parametrize("pattern", ["spool.sqlite", "spool.sqlite*"])
async def test_a_spool_deleted_while_running_is_recreated_within_one_commit_and_seq_goes_on(
        tmp_path, autojump_clock, pattern):
    path = tmp_path / "spool.sqlite"
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            spool = make_spool(path)
            await n.start(spool.run)
            for i in range(5):
                await spool.append(telemetry(float(i)))
            event = await spool.append(critical(5.0))
            for victim in tmp_path.glob(pattern):
                victim.unlink()
            after = await spool.append(telemetry(6.0))  # the next commit notices
            assert path.exists()  # recreated (the inode number itself may be reused)
            assert spool.stats().condition == "ok"
            n.cancel_scope.cancel()
    all_rows = rows(path)
    assert [e["condition"] for e in events(logs, FAULT)] == ["deleted"]
    assert len(events(logs, RECOVERED)) == 1
    assert events(logs, "SPOOL_RECREATED")[0]["rows_lost"] == 5
    # the critical row survived with its seq and msg_id; the telemetry is a gap record
    assert (event.seq, event.msg_id) in {(r[0], r[1]) for r in all_rows}
    gap = next(json.loads(r[4]) for r in all_rows if r[2] == "gap")
    assert gap["reason"] == "file_deleted"
    assert (gap["dropped"]["first_seq"], gap["dropped"]["last_seq"]) == (1, 5)
    assert after.seq > event.seq + 1  # never restarts at 1 (the gap row took the seq between)
    async with trio.open_nursery() as n:  # and after a restart, it still goes on
        again = make_spool(path)
        await n.start(again.run)
        assert (await again.append(telemetry(7.0))).seq == after.seq + 1
        n.cancel_scope.cancel()


_UNPRIVILEGED = textwrap.dedent("""
    import json, os, sys
    import structlog, trio
    from bessai.clock import system_wall_clock
    from bessai.uplink.message import RowPriority, Record
    from bessai.uplink.spool import Spool

    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    spool_dir = sys.argv[1]
    flag = sys.argv[2]

    async def main():
        spool = Spool(spool_dir + "/spool.sqlite", fault_retry_s=0.1, gauge_interval_s=0.2)
        async with trio.open_nursery() as n:
            await n.start(spool.run)
            print(json.dumps({"condition": spool.stats().condition}), flush=True)
            while not os.path.exists(flag):
                await trio.sleep(0.05)
            record = Record(site_id="s1", device_id="inv1", kind="event", event_time=1.0,
                            data=b'{"name": "SAFETY_BLOCK"}', priority=RowPriority.CRITICAL)
            accepted = await spool.append(record)
            print(json.dumps({"condition": spool.stats().condition, "seq": accepted.seq}),
                  flush=True)
            n.cancel_scope.cancel()

    trio.run(main)
""")


def _readline(proc: subprocess.Popen, timeout_s: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            proc.kill()
            raise AssertionError(f"no answer within {timeout_s} s: {proc.stderr.read()}")
    return proc.stdout.readline()


def test_a_directory_the_gateway_user_cannot_write_is_permission_denied_until_fixed(tmp_path):
    """EACCES for real: root ignores file modes, so the spool runs in a child process that
    dropped to uid/gid 65534 (nobody) over a root-owned 0755 directory; the test then
    opens the directory up and the held critical record is written."""
    require_root()
    import shutil
    import tempfile

    # pytest's tmp_path lives under a 0700 directory that nobody cannot even traverse
    base = Path(tempfile.mkdtemp(prefix="bessai-eacces-", dir="/tmp"))
    base.chmod(0o755)
    request_cleanup = shutil.rmtree
    spool_dir = base / "spool"
    spool_dir.mkdir(mode=0o755)
    flag = base / "fixed"
    proc = subprocess.Popen([sys.executable, "-c", _UNPRIVILEGED, str(spool_dir), str(flag)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    try:
        first = json.loads(_readline(proc, 30) or "{}")
        assert first.get("condition") == "permission_denied", proc.stderr.read()
        os.chmod(spool_dir, 0o777)
        flag.touch()
        second = json.loads(_readline(proc, 30) or "{}")
        proc.wait(timeout=30)
    finally:
        proc.kill()
        request_cleanup(base, ignore_errors=True)
    stderr = proc.stderr.read()
    assert second == {"condition": "ok", "seq": 1}, stderr
    assert stderr.count("SPOOL_DISK_FAULT") == 1
    assert "condition=permission_denied" in stderr
    assert stderr.count("SPOOL_DISK_RECOVERED") == 1
