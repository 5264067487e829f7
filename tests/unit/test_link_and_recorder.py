"""Link state transitions are logged once; the recorder spools everything it receives."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.model import Event, Snapshot, TagReading
from bessai.observe.sink import RecordingSink
from bessai.uplink.link import Link, LinkState
from bessai.uplink.recorder import Recorder
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


async def test_recorder_spools_snapshots_and_events_and_refuses_invalid_ones(
        tmp_path, autojump_clock):
    sink = RecordingSink()
    wall = trio_wall_clock()
    spool = Spool(tmp_path / "s.sqlite", wall_clock=wall)
    snap_tx, snap_rx = trio.open_memory_channel(1000)
    ev_tx, ev_rx = trio.open_memory_channel(10)
    recorder = Recorder(spool, snap_rx, ev_rx, sink=sink)
    async with trio.open_nursery() as n:
        await n.start(spool.run)
        async with trio.open_nursery() as inner:
            await inner.start(recorder.run)
            for i in range(500):
                await snap_tx.send(Snapshot("site1", "inv1", wall(), 0.0,
                                            {"soc": TagReading(i)}))
            await snap_tx.send(Snapshot("site1", "x" * 5000, wall(), 0.0, {}))  # id too long
            await ev_tx.send(Event("SAFETY_BLOCK", "site1", "inv1", wall(),
                                   {"rule": "soc_min"}))
            await snap_tx.aclose()
            await ev_tx.aclose()
        n.cancel_scope.cancel()
    # the recorder returned when both mailboxes closed, with everything on disk
    assert recorder.recorded == 501
    assert spool.stats().depth == 501
    assert sink.total("bessai.spool.drops", reason="invalid") == 1
    assert spool.stats().commits < 20  # bursts are written as groups, not row by row
