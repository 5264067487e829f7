"""``bessai probe`` beside a running gateway: real processes (bessai-sim single-client as the
inverter, bessai-run, the bessai CLI), real sockets, real clock — waiting on events."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.e2e.procs import Proc, free_port, run_cli, sim_port, start_gateway, start_sim


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    return {"SITE_ID": "probe-site", "INVERTER_IP": "127.0.0.1", "INVERTER_PORT": str(port),
            "SPOOL_PATH": str(tmp_path / "spool.sqlite"),
            "STATUS_BIND": f"127.0.0.1:{free_port()}", "POLL_INTERVAL_S": "1",
            "SHUTDOWN_DEADLINE_S": "5"}


def _gateway_beside_a_one_client_sim(tmp_path: Path,
                                     procs: list[Proc]) -> tuple[Proc, Proc, dict[str, str]]:
    """A single-client simulator and a gateway holding its one connection (link up)."""
    sim = start_sim(0, "--single-client")
    procs.append(sim)
    env = _env(tmp_path, sim_port(sim))
    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"event=DEVICE_LINK_UP", 30)
    return sim, gateway, env


def _wait_for_a_poll_after(env: dict[str, str], since: float, timeout_s: float = 20) -> None:
    """Until the gateway's status shows a snapshot taken after ``since`` (time.monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        link = httpx.get(f"http://{env['STATUS_BIND']}/status", timeout=5,
                         trust_env=False).json()["sites"]["inv1"]["link"]
        age = link["snapshot_age_s"]
        if link["state"] == "up" and age is not None and age < time.monotonic() - since - 0.5:
            return
        time.sleep(0.2)
    raise AssertionError(f"no snapshot after the probe within {timeout_s} s")


def test_probe_beside_a_running_gateway_reads_through_it_and_takes_no_connection(
        tmp_path, procs):
    sim, gateway, env = _gateway_beside_a_one_client_sim(tmp_path, procs)
    gateway.wait_for(r"event=GATEWAY_READY", 30)
    mark = gateway.mark()
    sim_mark = sim.mark()
    result = run_cli(["probe", "--tag", "soc"], env)
    assert result.returncode == 0, result.stderr
    assert re.match(r"SOC: [\d.]+ % \(from the running gateway at http://127\.0\.0\.1:\d+/"
                    r"status: device inv1, link up, snapshot [\d.]+ s old\)", result.stdout)
    _wait_for_a_poll_after(env, time.monotonic())  # a stolen connection would show by now
    assert gateway.matching(r"event=DEVICE_LINK_DOWN", after=mark) == []
    assert gateway.matching(r"event=SAFETY_BLOCK", after=mark) == []
    assert sim.matching(r"client_connected", after=sim_mark) == []  # no second client


def test_probe_direct_warns_and_takes_the_devices_only_connection(tmp_path, procs):
    """--direct does what it says: it connects, and a one-client device drops the gateway's
    connection (the gateway may take it straight back, so the probe itself may then fail)."""
    _, gateway, env = _gateway_beside_a_one_client_sim(tmp_path, procs)
    mark = gateway.mark()
    result = run_cli(["probe", "--tag", "soc", "--direct"], env)
    assert "WARNING: --direct opens a Modbus connection of its own" in result.stderr
    assert "from the running gateway" not in result.stdout
    gateway.wait_for(r"event=DEVICE_LINK_DOWN", 15, after=mark)  # the evidence
    gateway.wait_for(r"event=DEVICE_LINK_UP", 30, after=mark)  # and it recovers
