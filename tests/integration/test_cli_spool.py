"""``bessai spool stats|export`` read a spool the uplink's `Spool` really wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from bessai.model import Event, Snapshot, TagReading
from tests.integration.cli_harness import run_bessai


@pytest.fixture
def spool_file(tmp_path: Path) -> Path:
    """Three telemetry rows and one SAFETY_BLOCK event, committed by the real Spool."""
    from bessai.uplink.message import record_from_event, record_from_snapshot
    from bessai.uplink.spool import Spool

    path = tmp_path / "spool" / "outbox.sqlite"
    path.parent.mkdir()

    async def write() -> None:
        spool = Spool(path, max_bytes=50_000_000, wall_clock=lambda: 1_767_225_600.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(spool.run)
            records = [
                record_from_snapshot(Snapshot("s1", "inv1", 1_767_225_600.0 + i, float(i),
                                              {"soc": TagReading(50.0 + i)}))
                for i in range(3)
            ]
            records.append(record_from_event(Event("SAFETY_BLOCK", "s1", "inv1",
                                                   1_767_225_603.0, {"rule": "soc_min"})))
            await spool.append_many(records)
            nursery.cancel_scope.cancel()

    trio.run(write)
    return path


def test_spool_stats_reports_depth_and_budget(spool_file):
    result = run_bessai("spool", "stats", SITE_ID="s1", INVERTER_IP="127.0.0.1",
                     SPOOL_PATH=str(spool_file), SPOOL_MAX_BYTES="50MB")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"spool {spool_file}: 4 pending, ")
    assert first.endswith(" of 47.7 MiB")
    assert "dead letters: 0" in result.stdout


def test_spool_stats_json_without_settings_when_given_a_path(spool_file):
    result = run_bessai("spool", "stats", "--json", "--path", str(spool_file))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["depth"] == 4
    assert data["dead_letters"] == 0


def test_spool_export_writes_every_row_as_json_lines(spool_file, tmp_path):
    out = tmp_path / "rows.jsonl"
    result = run_bessai("spool", "export", "--path", str(spool_file), "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    assert result.stderr.strip() == "exported 4 rows from outbox"


def test_spool_stats_of_a_missing_file_says_to_check_spool_path(tmp_path):
    result = run_bessai("spool", "stats", "--path", str(tmp_path / "nope.sqlite"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: no spool at ")
    assert "hint: check SPOOL_PATH" in result.stderr


def test_spool_import_requeues_a_moved_aside_file_with_its_msg_ids_and_can_be_repeated(
        spool_file, tmp_path):
    """The rows of a file the gateway moved aside (SPOOL_CORRUPT moved_to=...) go back into
    the live spool with their original seq and msg_id; importing twice adds nothing."""
    import sqlite3

    from bessai.uplink.spool import Spool

    moved = tmp_path / "outbox.sqlite.corrupt-20261204T000000Z"
    spool_file.rename(moved)
    live = tmp_path / "live.sqlite"

    async def fresh() -> None:
        spool = Spool(live, wall_clock=lambda: 1_767_225_700.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(spool.run)
            nursery.cancel_scope.cancel()

    trio.run(fresh)
    first = run_bessai("spool", "import", str(moved), "--path", str(live))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"imported 4 rows from {moved} into {live} (0 already queued)"
    again = run_bessai("spool", "import", str(moved), "--path", str(live))
    assert again.stdout.strip() == f"imported 0 rows from {moved} into {live} (4 already queued)"
    conn = sqlite3.connect(moved)
    original = conn.execute("SELECT seq, msg_id FROM outbox ORDER BY id").fetchall()
    conn.close()
    conn = sqlite3.connect(live)
    queued = conn.execute("SELECT seq, msg_id FROM outbox ORDER BY id").fetchall()
    last = conn.execute("SELECT last_seq FROM seqs WHERE device_id = 'inv1'").fetchone()[0]
    conn.close()
    assert queued == original
    assert last == max(seq for seq, _ in original)


async def test_rows_imported_while_the_spool_runs_are_counted_and_leased(tmp_path, autojump_clock):
    from bessai.clock import trio_wall_clock
    from bessai.uplink.message import record_from_snapshot
    from bessai.uplink.spool import Spool, import_rows

    old = Spool(tmp_path / "old.sqlite", wall_clock=trio_wall_clock())
    async with trio.open_nursery() as nursery:
        await nursery.start(old.run)
        kept = await old.append_many([record_from_snapshot(
            Snapshot("s1", "inv1", float(i), 0.0, {"soc": TagReading(50.0)})) for i in range(3)])
        nursery.cancel_scope.cancel()
    live = Spool(tmp_path / "live.sqlite", wall_clock=trio_wall_clock())
    async with trio.open_nursery() as nursery:
        await nursery.start(live.run)
        result = await trio.to_thread.run_sync(import_rows, old.path, live.path)
        assert result.imported == 3
        after = await live.append(record_from_snapshot(
            Snapshot("s1", "inv1", 10.0, 0.0, {"soc": TagReading(50.0)})))
        assert live.stats().depth == 4  # the import was noticed, not just our own row
        leased = await live.lease(limit=100)
        assert [r.msg_id for r in leased[:3]] == [a.msg_id for a in kept]
        assert after.seq == 4  # seq goes on above the imported rows
        nursery.cancel_scope.cancel()


def test_backup_into_a_missing_directory_is_a_clear_error(spool_file, tmp_path):
    dest = tmp_path / "no" / "such" / "dir" / "backup.sqlite"
    result = run_bessai("spool", "backup", str(dest), "--path", str(spool_file))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"error: cannot write the backup: the directory {dest.parent} does not exist")
    assert f"mkdir -p {dest.parent}" in result.stderr
    assert "unexpected" not in result.stderr


def test_export_piped_into_head_ends_quietly(tmp_path):
    """`bessai spool export | head -1`: the reader leaves early; no error, no SPOOL_PATH hint."""
    import subprocess
    import sys

    from bessai.uplink.message import record_from_snapshot
    from bessai.uplink.spool import Spool
    from tests.integration.cli_harness import ROOT

    path = tmp_path / "big.sqlite"

    async def write() -> None:
        spool = Spool(path, max_bytes=500_000_000, wall_clock=lambda: 1_767_225_600.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(spool.run)
            await spool.append_many([
                record_from_snapshot(Snapshot("s1", "inv1", 1_767_225_600.0 + i, float(i),
                                              {"soc": TagReading(50.0)}))
                for i in range(20_000)])  # far more than a pipe buffer holds
            nursery.cancel_scope.cancel()

    trio.run(write)
    done = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{sys.executable}" -m bessai.cli.main spool export '
                       f'--path "{path}" | head -1'],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["seq"] == 1
    assert done.stderr == ""
