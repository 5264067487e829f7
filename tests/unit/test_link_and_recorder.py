"""Link state transitions are logged once; the recorder spools everything it receives."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.model import Event, Snapshot, TagReading
from bessai.observe.sink import RecordingSink
from bessai.uplink.link import Link, LinkState
from bessai.uplink.recorder import Recorder, record_event
from bessai.uplink.spool import Spool


async def test_link_logs_down_once_then_up_once_however_many_attempts(autojump_clock):
    sink = RecordingSink()
    link = Link(down_after=3, sink=sink)
    with capture_logs() as logs:
        for _ in range(2):
            link.failed("ConnectError", 1.0)
        assert link.state is LinkState.DEGRADED
        for _ in range(50):
            link.failed("ConnectError", 30.0)
            link.probing()
            assert link.state is LinkState.PROBING
        await trio.sleep(120)
        link.succeeded()
    names = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert names == ["LINK_DOWN", "LINK_UP"]
    down = next(e for e in logs if e["event"] == "LINK_DOWN")
    assert down["reason"] == "ConnectError"
    assert down["retry_in_s"] == 30.0
    up = next(e for e in logs if e["event"] == "LINK_UP")
    assert up["down_for_s"] == 120.0
    assert sink.gauges[("bessai.uplink.link_state", (("link", "pubsub"),))] == 3
    assert link.status() == {"link": "pubsub", "state": "up", "reason": None,
                             "down_for_s": None, "consecutive_failures": 0}


async def test_config_fault_takes_the_link_down_at_once():
    link = Link(down_after=3)
    link.failed("404 Topic not found", 60.0, fatal=True)
    assert link.state is LinkState.DOWN


async def test_recorder_spools_snapshots_in_groups_and_refuses_invalid_ones(
        tmp_path, autojump_clock):
    sink = RecordingSink()
    wall = trio_wall_clock()
    spool = Spool(tmp_path / "s.sqlite", wall_clock=wall)
    snap_tx, snap_rx = trio.open_memory_channel(1000)
    recorder = Recorder(spool, snap_rx, sink=sink)
    async with trio.open_nursery() as n:
        await n.start(spool.run)
        async with trio.open_nursery() as inner:
            await inner.start(recorder.run)
            for i in range(500):
                await snap_tx.send(Snapshot("site1", "inv1", wall(), 0.0,
                                            {"soc": TagReading(i)}))
            await snap_tx.send(Snapshot("site1", "x" * 5000, wall(), 0.0, {}))  # id too long
            await snap_tx.aclose()
        n.cancel_scope.cancel()
    # the recorder returned when its mailbox closed, with everything on disk
    assert recorder.recorded == 500
    assert spool.stats().depth == 500
    assert sink.total("bessai.spool.drops", reason="invalid") == 1
    assert spool.stats().commits < 20  # bursts are written as groups, not row by row


async def test_a_critical_event_json_cannot_carry_or_pubsub_would_refuse_still_reaches_the_spool(
        tmp_path, autojump_clock):
    """`record_event` is the one path for critical events: it never raises for content, or
    the events child would crash on the same event forever."""
    wall = trio_wall_clock()
    spool = Spool(tmp_path / "s.sqlite", wall_clock=wall)
    async with trio.open_nursery() as n:
        await n.start(spool.run)
        with capture_logs() as logs:
            await record_event(spool, Event("SAFETY_BLOCK", "site1", "inv1", wall(),
                                            {"value": float("nan"), "obj": object()}))
            await record_event(spool, Event("SAFETY_BLOCK", "site1", "inv1", wall(),
                                            {"blob": "x" * 11_000_000}))
        n.cancel_scope.cancel()
    assert spool.stats().depth == 2  # both on disk: the 11 MB body as a clipped copy
    assert "EVENT_BODY_NOT_JSON" in {e["event"] for e in logs}
