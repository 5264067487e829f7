"""`systemctl reload` (SIGHUP) as an operator meets it: the real `bessai-run` process reading its
env file, the simulator as a separate process (`python -m bessai.sim`), real signals.

What the runbook promises (§7): a new safety limit is in force from the guard's next decision;
a key that cannot change live is named as needing a restart; a file with a bad value changes
nothing and every problem is logged; the process never crashes on a reload.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import (
    Proc,
    free_port,
    logfmt_ts,
    sim_port,
    start_gateway,
    start_sim,
    wait_until,
)

pytestmark = [pytest.mark.e2e]

POLL_S = 1.0


def write_env(path: Path, sim_port: int, status_port: int, spool: Path, **keys: str) -> None:
    """The whole configuration in the file (as under systemd): nothing in the environment."""
    values = {"SITE_ID": "reload-site", "INVERTER_IP": "127.0.0.1",
              "INVERTER_PORT": str(sim_port), "SPOOL_PATH": str(spool),
              "STATUS_BIND": f"127.0.0.1:{status_port}", "POLL_INTERVAL_S": f"{POLL_S:g}",
              "SHUTDOWN_DEADLINE_S": "5", "SOC_MAX_PCT": "98", **keys}
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


@pytest.fixture
def running(tmp_path: Path, procs: list[Proc]):
    """A gateway reading ``gateway.env``, polling a simulator at SOC 60 %, once its first
    reading was evaluated; returns (gateway, rewrite(**keys), status_url)."""
    sim = start_sim(0, "--soc", "60")
    procs.append(sim)
    port = sim_port(sim)
    status_port = free_port()
    env_file = tmp_path / "gateway.env"
    spool = tmp_path / "spool.sqlite"
    write_env(env_file, port, status_port, spool)
    gateway = start_gateway({}, "--env-file", str(env_file))
    procs.append(gateway)
    gateway.wait_for(r"event=GATEWAY_READY", 20)
    gateway.wait_for(r"event=DEVICE_LINK_UP", 20)

    def rewrite(**keys: str) -> None:
        write_env(env_file, port, status_port, spool, **keys)

    return gateway, rewrite, f"http://127.0.0.1:{status_port}"


def safety(status_url: str) -> dict:
    return httpx.get(status_url + "/status", timeout=5, trust_env=False).json()[
        "sites"]["inv1"]["safety"]


def spooled(status_url: str) -> int:
    """Readings in the spool: one more per poll the guard has already evaluated."""
    return int(httpx.get(status_url + "/status", timeout=5, trust_env=False).json()[
        "spool"]["depth"])


def wait_for_polls(status_url: str, polls: int) -> None:
    """Until ``polls`` more readings are spooled: that many polls were taken and judged (the
    guard sees a snapshot before the recorder's spool commit does), however slow the machine."""
    target = spooled(status_url) + polls
    wait_until(lambda: spooled(status_url) >= target, 30, f"{polls} more polls spooled")


def reload(gateway: Proc, pattern: str) -> tuple[int, str]:
    mark = gateway.mark()
    gateway.send(signal.SIGHUP)
    return mark, gateway.wait_for(pattern, 10, after=mark)


def test_lower_soc_max_applies_on_sighup_and_blocks_charge_within_one_poll(running):
    gateway, rewrite, status_url = running
    assert safety(status_url)["blocked_charge"] is False
    rewrite(SOC_MAX_PCT="55")
    mark, reloaded = reload(gateway, r"event=CONFIG_RELOADED ")
    assert "applied=SOC_MAX_PCT:98->55 " in reloaded, reloaded
    assert "needs_restart=none" in reloaded, reloaded
    block = gateway.wait_for(r"level=CRITICAL event=SAFETY_BLOCK rule=soc_max", 5, after=mark)
    assert "limit=55" in block, block
    delay_s = logfmt_ts(block) - logfmt_ts(reloaded)
    assert delay_s <= POLL_S + 0.25, f"SAFETY_BLOCK {delay_s:.3f} s after the reload"
    print(f"SAFETY_BLOCK soc_max {delay_s * 1000:.0f} ms after CONFIG_RELOADED")
    assert safety(status_url)["blocked_charge"] is True

    rewrite(SOC_MAX_PCT="98")  # and back: the block clears (60 <= 98 - hysteresis)
    mark, reloaded = reload(gateway, r"event=CONFIG_RELOADED ")
    assert "applied=SOC_MAX_PCT:55->98 " in reloaded, reloaded
    gateway.wait_for(r"event=SAFETY_CLEAR rule=soc_max", 5, after=mark)
    assert gateway.popen.poll() is None


def test_an_invalid_file_changes_nothing_and_every_problem_is_logged(running):
    gateway, rewrite, status_url = running
    rewrite(SOC_MAX_PCT="55", POLL_INTERVAL_S="banana", TEMP_MAX_C="999")
    mark, failed = reload(gateway, r"event=CONFIG_RELOAD_FAILED")
    for part in ("level=ERROR", "errors=2", "POLL_INTERVAL_S='banana'", "TEMP_MAX_C='999'"):
        assert part in failed, failed
    wait_for_polls(status_url, 3)  # three polls: the old limit (98) is still the one in force
    assert not gateway.matching(r"event=SAFETY_BLOCK rule=soc_max", after=mark)
    assert not gateway.matching(r"event=CONFIG_RELOADED", after=mark)
    assert safety(status_url)["blocked_charge"] is False
    assert gateway.popen.poll() is None
    assert not gateway.matching(r"ACTOR_CRASHED|ACTOR_RESTARTED")


def test_keys_that_need_a_restart_are_named_and_not_applied(running, tmp_path):
    gateway, rewrite, status_url = running
    moved = tmp_path / "elsewhere.sqlite"
    rewrite(SPOOL_PATH=str(moved), SOC_MAX_PCT="97", LOG_LEVEL="DEBUG")
    _, reloaded = reload(gateway, r"event=CONFIG_RELOADED ")
    assert "applied=SOC_MAX_PCT:98->97,LOG_LEVEL:INFO->DEBUG " in reloaded, reloaded
    assert "needs_restart=SPOOL_PATH " in reloaded, reloaded
    wait_for_polls(status_url, 2)
    status = httpx.get(status_url + "/status", timeout=5, trust_env=False).json()
    assert status["spool"]["path"] != str(moved), status["spool"]
    assert not moved.exists()
