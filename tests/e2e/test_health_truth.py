"""`bessai health` and /healthz tell the truth, as an operator and a container health check meet
them: the real gateway process, the simulator process, the real CLI.

Exit 0 means the process is healthy (what Docker's HEALTHCHECK acts on); what is degraded is
named, one condition per line, on the same answer: a safety block is not silence."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import bessai
from tests.e2e.procs import free_port, run_cli, sim_port, start_gateway, start_sim

pytestmark = [pytest.mark.e2e]


def env_for(tmp_path: Path, sim_port: int) -> dict[str, str]:
    return {"SITE_ID": "health-site", "INVERTER_IP": "127.0.0.1", "INVERTER_PORT": str(sim_port),
            "SPOOL_PATH": str(tmp_path / "spool.sqlite"),
            "STATUS_BIND": f"127.0.0.1:{free_port()}", "POLL_INTERVAL_S": "1",
            "SHUTDOWN_DEADLINE_S": "5"}


def test_a_hot_battery_is_named_by_bessai_health_and_status_while_the_exit_stays_0(
        tmp_path, procs):
    sim = start_sim(0, "--temp", "46")
    procs.append(sim)
    port = sim_port(sim)
    env = env_for(tmp_path, port)
    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"level=CRITICAL event=SAFETY_BLOCK rule=temp_max", 20)

    health = run_cli(["health"], {"STATUS_BIND": env["STATUS_BIND"]})
    assert health.returncode == 0, health.stderr
    lines = health.stdout.splitlines()
    assert lines[0].startswith("healthy, degraded (1): http://"), health.stdout
    assert lines[1].startswith("  safety_block inv1: charge and discharge blocked — temp_max "
                               "(battery_temp=46"), health.stdout

    healthz = httpx.get(f"http://{env['STATUS_BIND']}/healthz", timeout=5, trust_env=False)
    assert healthz.status_code == 200
    assert "warning: safety_block inv1" in healthz.text
    status = httpx.get(f"http://{env['STATUS_BIND']}/status", timeout=5, trust_env=False).json()
    assert status["health"]["healthy"] is True
    assert status["health"]["conditions"][0].startswith("safety_block inv1:")
    # ... and which version runs, in /status and in the GATEWAY_READY line.
    assert status["version"] == bessai.__version__
    assert f"event=GATEWAY_READY version={bessai.__version__} " in gateway.wait_for(
        r"event=GATEWAY_READY")


def test_health_with_the_device_down_names_the_link_and_does_not_ask_if_the_gateway_runs(
        tmp_path, procs):
    env = env_for(tmp_path, free_port())  # nothing listens there
    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"event=DEVICE_LINK_DOWN", 20)
    health = run_cli(["health"], {"STATUS_BIND": env["STATUS_BIND"]})
    assert health.returncode == 1
    assert "device:inv1 link is down" in health.stderr, health.stderr
    assert "is the gateway running" not in health.stderr, health.stderr
    assert "the gateway is running and answered" in health.stderr, health.stderr
