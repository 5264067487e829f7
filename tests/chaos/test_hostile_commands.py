"""Issue 19, Why 1, where the user meets it: the whole gateway (every actor, the simulator, Google's
Pub/Sub emulator) in virtual time receives a command whose ``power_w`` is a 6 MB string.

It used to echo the field twice: a 12 MB COMMAND_REJECTED log line and a 12 MB event that the
spool refused (MessageInvalid); the events actor crash-looped, the top supervisor escalated and
the process exited 1 — sites, safety guard and heartbeat with it. Now the rejection is one
bounded log line and one bounded event that reaches Pub/Sub, and nothing restarts.
"""

from __future__ import annotations

import io
import json

import pytest
import trio

from bench.chaos.rig import SITE, Rig, run_rig
from bessai.observe.logs import configure_logging, reset_logging

pytestmark = [pytest.mark.emulator, pytest.mark.chaos]

LINE_LIMIT = 16_384  # MAX_LOG_LINE_CHARS, as stated in the runbook
EVENT_LIMIT = 65_536  # MAX_EVENT_BODY_BYTES


async def test_a_6MB_command_is_one_bounded_rejection_and_the_site_keeps_heartbeating(
        clock, tmp_path, pubsub_emulator):
    log = io.StringIO()
    configure_logging("INFO", log, site_id=SITE)
    seen: dict[str, object] = {}

    async def script(rig: Rig) -> None:
        await trio.sleep(20)
        now = rig.wall()
        command = {"id": "huge-1", "site_id": SITE, "device_id": "inv1", "action": "charge",
                   "power_w": "9" * 6_000_000, "issued_at": now, "expires_at": now + 300}
        await rig.publish_raw(json.dumps(command).encode())
        beats_before = len(rig.heartbeat_times())
        await trio.sleep(60)
        seen["beats_during"] = len(rig.heartbeat_times()) - beats_before
        seen["tree_running"] = rig.gw.status()["tree_running"]
        source = rig.gw.commands_status.value  # what the running commands source published
        seen["handled"] = None if source is None else (source.count, source.failed)

    rig = Rig("why1-oversized", 20261127, tmp_path, pubsub_emulator.host)
    try:
        result = await run_rig(rig, script, lambda r: r.standard_checks())
    finally:
        reset_logging()

    # the process and its tree did not escalate; the site kept heartbeating through it
    assert seen["tree_running"] is True
    assert "data/events" in result.restarts
    assert not any(result.restarts.values()), result.restarts
    assert seen["beats_during"] >= 5  # every 10 s for 60 s
    assert result.passed, result.summary()  # zero loss, heartbeat gap, every event delivered
    assert seen["handled"] == (1, 0)  # handled once, acknowledged, never failed

    # one rejection event reached Pub/Sub, bounded, saying why
    rejections = [e for e in rig.delivered_events if e["name"] == "COMMAND_REJECTED"]
    assert len(rejections) == 1
    assert len(json.dumps(rejections[0])) <= EVENT_LIMIT
    assert rejections[0]["body"]["code"] == "too_large"
    assert "6000" in rejections[0]["body"]["reason"]

    # one bounded log line for it, and no line anywhere over the stated limit
    lines = log.getvalue().splitlines()
    rejected_lines = [line for line in lines if "event=COMMAND_REJECTED" in line]
    assert len(rejected_lines) == 1
    assert len(rejected_lines[0]) < 2000
    assert max(len(line) for line in lines) <= LINE_LIMIT
