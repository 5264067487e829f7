"""`bessai spool stats|export` read the file; `bessai command` publishes to the emulator."""

from __future__ import annotations

import argparse
import json

import pytest
import trio

from bessai.clock import trio_wall_clock
from bessai.model import Event, Snapshot, TagReading
from bessai.uplink.cli import add_command_parser, add_spool_parser, run_command, run_spool
from bessai.uplink.message import record_from_event, record_from_snapshot
from bessai.uplink.spool import Spool


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bessai")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_spool_parser(sub)
    add_command_parser(sub)
    return p


def fill(path) -> None:
    async def main():
        wall = trio_wall_clock()
        spool = Spool(path, wall_clock=wall)
        async with trio.open_nursery() as n:
            await n.start(spool.run)
            await spool.append_many([
                record_from_snapshot(Snapshot("site1", "inv1", wall(), 0, {"soc": TagReading(5)})),
                record_from_event(Event("SAFETY_BLOCK", "site1", "inv1", wall(), {"v": 4.9})),
            ])
            n.cancel_scope.cancel()
    trio.run(main)


def test_spool_stats_and_export_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "spool.sqlite"
    fill(path)
    assert run_spool(parser().parse_args(["spool", "stats", "--spool", str(path), "--json"])) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["depth"] == 2
    assert run_spool(parser().parse_args(["spool", "export", "--spool", str(path)])) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[1]["data"]["name"] == "SAFETY_BLOCK"


def test_spool_stats_on_a_missing_file_says_what_to_check(tmp_path, capsys):
    code = run_spool(parser().parse_args(["spool", "stats", "--spool", str(tmp_path / "no")]))
    assert code == 2
    assert "check SPOOL_PATH" in capsys.readouterr().err


@pytest.mark.emulator
def test_command_is_published_to_the_commands_topic(pubsub_topic, monkeypatch, capsys):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_topic.emulator.host)
    args = parser().parse_args(["command", "discharge", "--site", "site1", "--device", "inv1",
                                "--power-w", "2500", "--project", pubsub_topic.project,
                                "--topic", pubsub_topic.topic, "--id", "cmd-42"])
    assert run_command(args) == 0
    assert "published command cmd-42" in capsys.readouterr().out
    [message] = pubsub_topic.pull_all()
    body = json.loads(message["data"])
    assert body["id"] == "cmd-42"
    assert body["action"] == "discharge"
    assert body["power_w"] == 2500.0
    assert body["expires_at"] - body["issued_at"] == pytest.approx(300.0)
    assert message["attributes"]["kind"] == "command"
