"""What clients do is logged as one logfmt line per event."""

from __future__ import annotations

import logging

import trio
from sim_testclient import TrioTestClient

from bessai.sim import Simulator
from bessai.sim.logfmt import render


def test_render_quotes_and_keeps_one_line():
    line = render("SIM_PROFILE_ERROR", error='bad "x"\n  second line', port=502, ratio=0.5)
    assert "\n" not in line
    assert line == 'event=SIM_PROFILE_ERROR error="bad \\"x\\"\\n  second line" port=502 ratio=0.5'


async def test_connect_write_disconnect_and_comm_loss_are_logged(
    autojump_clock, huawei_profile, caplog
):
    caplog.set_level(logging.DEBUG, logger="bessai.sim")
    async with Simulator(huawei_profile) as sim:
        stream = await sim.stream_factory()()
        client = TrioTestClient(stream, huawei_profile)
        await client.write_tag("working_mode", 5)
        await client.write_single(huawei_profile.tag("heartbeat").address, 1)
        await stream.aclose()
        await trio.sleep(huawei_profile.watchdog.device_timeout_s + 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "bessai.sim"]
    assert any(line.startswith("event=client_connected peer=memory#") for line in lines)
    assert any(
        "event=client_write" in line and "tag=working_mode value=5" in line for line in lines
    )
    assert any(line.startswith("event=heartbeat ") for line in lines)
    assert any(line.startswith("event=client_disconnected") for line in lines)
    assert any(line.startswith("event=COMM_LOSS ") for line in lines)
