"""Metrics the gateway tree itself owns: readings the snapshot ring pushed out, and commands
the router rejects before any device's gate sees them."""

from __future__ import annotations

import json
from pathlib import Path

from bessai.clock import trio_wall_clock
from bessai.control import CommandRouter
from bessai.gateway import SNAPSHOT_RING_CAPACITY, Gateway
from bessai.model import Snapshot
from bessai.observe import RecordingSink
from bessai.settings import get_settings


def test_readings_the_full_snapshot_ring_pushes_out_are_counted_as_ring_full_drops(
        tmp_path: Path) -> None:
    settings = get_settings(env={"SITE_ID": "plant-7", "INVERTER_IP": "127.0.0.1",
                                 "SPOOL_PATH": str(tmp_path / "outbox.sqlite")}, env_file=None)
    gw = Gateway(settings, status_server=False)
    sink = RecordingSink()
    gw.telemetry.sink.target = sink
    site = gw.sites["inv1"]
    assert gw._push_snapshot in site.outputs  # the device link's output is the counting push
    snapshot = Snapshot(site_id="plant-7", device_id="inv1", ts=0.0, taken_at=0.0, readings={})
    for _ in range(SNAPSHOT_RING_CAPACITY + 3):
        gw._push_snapshot(snapshot)
    assert gw.snapshots.dropped == 3
    assert sink.total("bessai.spool.drops", reason="ring_full") == 3
    assert sink.total("bessai.spool.drops") == 3


async def test_commands_the_router_rejects_are_counted_under_device_dash() -> None:
    sink = RecordingSink()
    emitted = []
    router = CommandRouter("plant-7", {}, emit=emitted.append, wall_clock=trio_wall_clock(),
                           metrics=sink)
    now = trio_wall_clock()()
    await router.handle_command_message(b"{not json")
    await router.handle_command_message(json.dumps(
        {"id": "c1", "site_id": "plant-7", "device_id": "inv9", "action": "stop",
         "issued_at": now, "expires_at": now + 60}).encode())
    assert sink.total("bessai.commands", device="-", decision="rejected") == 2
    assert len(emitted) == 2  # each rejection is also an event


async def test_spool_oldest_age_gauge_keeps_rising_while_nothing_is_committed(
        autojump_clock, tmp_path: Path) -> None:
    """Device and cloud both down: no commits, yet the oldest row's age must keep growing."""
    import trio

    from bessai.model import TagReading
    from bessai.uplink.message import record_from_snapshot
    from bessai.uplink.spool import Spool
    from tests.pubsub_faults import FreezingLimiter

    sink = RecordingSink()
    wall = trio_wall_clock()
    spool = Spool(tmp_path / "outbox.sqlite", wall_clock=wall, sink=sink,
                  limiter=FreezingLimiter(), gauge_interval_s=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        await spool.append(record_from_snapshot(Snapshot(
            site_id="plant-7", device_id="inv1", ts=wall(), taken_at=trio.current_time(),
            readings={"soc": TagReading(50.0)})))
        ages = []
        for _ in range(3):
            await trio.sleep(60)
            ages.append(sink.gauges[("bessai.spool.oldest_age_s", ())])
        nursery.cancel_scope.cancel()
    assert ages[0] >= 55
    assert ages[1] - ages[0] >= 55
    assert ages[2] - ages[1] >= 55
    assert sink.gauges[("bessai.spool.depth", ())] == 1
