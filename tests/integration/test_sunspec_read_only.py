"""A SunSpec device without a writable storage model: discovery writes a read-only profile
(no dispatch, no watchdog, no writable tag), the gateway polls and guards it but never writes to
it and rejects every command, and `bessai command` says so before sending anything."""

from __future__ import annotations

import argparse
import json

import pytest

from bessai.cli import command_cmd
from bessai.clock import trio_wall_clock
from bessai.control.gate import Decision
from bessai.device import ModbusClient
from bessai.device.profile import parse_profile
from bessai.errors import ConfigError
from bessai.model import Action, Command
from bessai.observe.sink import RecordingSink
from bessai.settings import get_settings
from bessai.sim.sunspec import sunspec_simulator
from bessai.sunspec.discover import discover
from tests.sites import make_site, running_site

READ_ONLY_CHAIN = (1, 103, 802)


async def discovered(sim):
    client = ModbusClient(sim.stream_factory(), unit_id=1, post_connect_delay_s=0, cooldown_s=0)
    async with client:
        return await discover(client)


async def test_without_model_124_the_profile_is_read_only_and_nothing_is_writable(
        autojump_clock):
    sim = sunspec_simulator(READ_ONLY_CHAIN, soc_pct=50.0)
    async with sim:
        found = await discovered(sim)
    doc = found.profile
    assert "dispatch" not in doc
    assert "watchdog" not in doc
    assert "read-only: no writable storage model" in doc["device"]["notes"]
    assert all(tag["access"] == "r" for tag in doc["tags"].values())
    assert parse_profile(json.dumps(doc)).read_only


async def test_gateway_polls_a_read_only_device_and_rejects_commands_without_writing(
        autojump_clock):
    sim = sunspec_simulator(READ_ONLY_CHAIN, soc_pct=50.0)
    async with sim:
        profile = parse_profile(json.dumps((await discovered(sim)).profile))
        site = make_site(sim, "s1", "ro1", profile=profile, driver={"post_connect_delay_s": 0},
                         metrics=RecordingSink())
        async with running_site(site, settle_s=60):
            now = trio_wall_clock()()
            outcome = await site.gate.submit(Command(
                id="c1", site_id="s1", device_id="ro1", action=Action.DISCHARGE, power_w=1000,
                issued_at=now, expires_at=now + 300))
            assert site.ctx.latest().value("soc") == pytest.approx(50.0, abs=1.0)
    assert outcome.decision is Decision.REJECTED
    assert "read-only" in outcome.reason
    assert sim.write_log == []  # no heartbeat, no command: nothing was ever written


async def test_bessai_command_refuses_a_read_only_device(autojump_clock, tmp_path):
    sim = sunspec_simulator(READ_ONLY_CHAIN)
    async with sim:
        doc = (await discovered(sim)).profile
    path = tmp_path / "ro.json"
    path.write_text(json.dumps(doc))
    settings = get_settings({"SITE_ID": "s1", "INVERTER_IP": "127.0.0.1",
                             "DEVICE_PROFILE": str(path)}, env_file=None)
    args = argparse.Namespace(action="stop", power_w=None, ttl_s=300.0, device=None)
    command = command_cmd.build_command(settings, args, now=1_767_225_600.0)
    with pytest.raises(ConfigError, match=r"is read-only: its profile .* has no dispatch"):
        command_cmd.refuse_read_only(settings, command)
