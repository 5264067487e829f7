"""Dispatch through SunSpec model 124 in virtual time: the gateway's site (device link, safety
guard, watchdog) runs on the profile that discovery wrote for the simulated SunSpec device, and
the simulator honours the revert timer (InOutWRte_RvrtTms) by itself."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import trio

from bessai.clock import trio_wall_clock
from bessai.control.gate import Decision
from bessai.device import ModbusClient
from bessai.device.profile import parse_profile
from bessai.model import Action, Command
from bessai.observe.sink import RecordingSink
from bessai.sim.sunspec import sunspec_simulator
from bessai.sunspec.discover import discover
from tests.sites import make_site, running_site
from tests.waits import wait_for

SITE, DEVICE = "site1", "ss1"
MODE, LEASE, HEARTBEAT = "124_storctl_mod", "124_inoutwrte_rvrttms", "802_ctrlhb"
ROOT = Path(__file__).resolve().parents[2]


async def discovered_profile(sim):
    client = ModbusClient(sim.stream_factory(), unit_id=1, post_connect_delay_s=0, cooldown_s=0)
    async with client:
        found = await discover(client)
    return parse_profile(json.dumps(found.profile))


def running(sim, profile):
    """The site's three children on ``profile`` (discovered from ``sim``), once polling."""
    return running_site(make_site(sim, SITE, DEVICE, profile=profile,
                                  driver={"post_connect_delay_s": 0}, metrics=RecordingSink()))


def command(action, power_w, ttl_s):
    now = trio_wall_clock()()
    return Command(id=f"c-{action}-{now}", site_id=SITE, device_id=DEVICE, action=action,
                   power_w=power_w, issued_at=now, expires_at=now + ttl_s)


async def test_revert_timer_renewed_while_gateway_lives_device_reverts_alone_after_it_dies(
        autojump_clock):
    sim = sunspec_simulator((1, 103, 124, 802), soc_pct=60.0)
    async with sim:
        profile = await discovered_profile(sim)
        lease_s = profile.dispatch.lease.period_s
        async with running(sim, profile) as site:
            outcome = await site.gate.submit(command(Action.DISCHARGE, 2000, ttl_s=3600))
            assert outcome.decision is Decision.ACCEPTED
            for _ in range(10):  # 200 s: six revert timers long, forcing holds throughout
                await trio.sleep(20)
                state = sim.state()
                assert state.forced_mode == 2
                assert abs(state.battery_power_w + 2000) < 1
            renewals = [w.at for w in sim.write_log if w.tag == LEASE]
            assert len(renewals) >= 19
            assert max(b - a for a, b in itertools.pairwise(renewals)) <= 10.5
            assert sim.state().heartbeat_count >= 18  # 802 CtrlHb every 10 s
        died = trio.current_time()  # the gateway is gone: nobody renews the revert timer
        ended = await wait_for(lambda: sim.state().forced_mode == 0, step_s=0.25)
        assert ended - died <= lease_s
        assert ended - died < profile.watchdog.device_timeout_s
        assert not sim.state().comm_lost  # the revert timer ended it, not the heartbeat loss
        assert not [w for w in sim.write_log if w.at >= died]  # the device did it alone
        await trio.sleep(5)
        assert abs(sim.state().battery_power_w + 2000) > 1  # no longer discharging at 2 kW


async def test_charge_power_in_watts_lands_as_the_percentage_model_124_expects(autojump_clock):
    sim = sunspec_simulator((1, 103, 124, 802), soc_pct=40.0)
    async with sim:
        profile = await discovered_profile(sim)
        async with running(sim, profile) as site:
            await site.gate.submit(command(Action.CHARGE, 1500, ttl_s=600))
            await trio.sleep(5)
            assert sim.state().forced_mode == 1
            assert sim.state().battery_power_w == 1500
            # on the wire: 1500 W of WChaMax 5000 W = 30.0 %, InOutWRte_SF -1 -> raw 300
            inwrte = profile.tags["124_inwrte"]
            assert sim.image.read(inwrte.table, inwrte.address, 1) == [300]


def test_bessai_sim_sunspec_is_discovered_by_the_cli(tmp_path):
    sim = subprocess.Popen([sys.executable, "-m", "bessai.sim", "--sunspec", "1,103,124,802",
                            "--port", "0", "--sunspec-base", "50000"],
                           stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = None
        for line in sim.stderr:
            if "SIM_LISTENING" in line:
                port = int(line.split("port=")[1].split()[0])
                break
        assert port is not None
        out = tmp_path / "sim.json"
        done = subprocess.run([sys.executable, "-m", "bessai.cli.main", "profile", "discover",
                               "--host", "127.0.0.1", "--port", str(port), "--out", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "SunSpec map at base 50000: models 1, 103, 124, 802" in done.stdout
        doc = json.loads(out.read_text())
        assert doc["dispatch"]["mode_tag"] == MODE
        assert doc["watchdog"]["heartbeat"]["tag"] == HEARTBEAT
    finally:
        sim.kill()
        sim.wait(timeout=10)
