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
