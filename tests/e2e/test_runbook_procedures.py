"""The runbook's procedures, run as an operator would: a real `bessai-run --simulator` process,
the `bessai` commands the runbook shows, the log greps it gives, real signals, Google's Pub/Sub
emulator as the cloud. Real clock (these are end-to-end process tests); each waits on a log line
or an exit, never on a fixed sleep longer than needed.

ops/RUNBOOK.md's last table maps each task of the old v0.3.0 runbook to the test here that
proves its replacement.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import attrs
import httpx
import pytest

from bessai.cli.command_cmd import command_message
from bessai.model import Action, Command
from tests.conftest_pubsub import make_topic
from tests.disk_faults import DiskFiller, require_root, small_tmpfs

ROOT = Path(__file__).resolve().parents[2]
READY_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1"}


def bessai(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """One `bessai ...` command, as the runbook shows it (with this test's env file)."""
    return subprocess.run([sys.executable, "-m", "bessai.cli.main", "--env-file", str(env_file),
                           *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=60)


@attrs.define
class GatewayProcess:
    """`python -m bessai.cli.run --simulator --no-screen` with its log in a file."""

    env_file: Path
    log_path: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bessai.cli.run", "--env-file", str(self.env_file),
                 "--simulator", "--no-screen", *self.args],
                cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        self.wait_for(r"event=GATEWAY_READY")
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, timeout_s: float = READY_S, *, nth: int = 1) -> str:
        """The ``nth`` log line matching ``pattern`` (a regex), waiting for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = [line for line in self.log().splitlines() if re.search(pattern, line)]
            if len(lines) >= nth:
                return lines[nth - 1]
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited {self.proc.returncode} before /{pattern}/:\n"
                            f"{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no /{pattern}/ within {timeout_s} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 25.0) -> int:
        """SIGTERM, as `docker stop` / `systemctl stop` send; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def site(tmp_path: Path):
    """An env file for one simulated site (uplink off) and a factory of gateway processes,
    all killed at teardown."""
    port = _free_port()
    env_file = tmp_path / ".env"
    env_file.write_text(f"SITE_ID=site-test-01\nSTATUS_BIND=127.0.0.1:{port}\n"
                        f"SPOOL_PATH={tmp_path / 'spool' / 'outbox.sqlite'}\n")
    started: list[GatewayProcess] = []

    def gateway(*args: str, log_name: str = "gateway.log") -> GatewayProcess:
        proc = GatewayProcess(env_file, tmp_path / log_name, args)
        started.append(proc)
        return proc.start()

    # `--simulator` runs keep their own spool beside SPOOL_PATH (never the production one).
    spool = tmp_path / "spool" / "outbox.simulator.sqlite"
    yield attrs.make_class("Site", ["env_file", "port", "gateway", "tmp", "spool"])(
        env_file, port, gateway, tmp_path, spool)
    for proc in started:
        proc.kill()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- start, health, status, graceful stop ---------------------------------------------------------


def test_gateway_answers_health_and_status_then_stops_on_sigterm_with_exit_0(site):
    gw = site.gateway()
    gw.wait_for(r"level=INFO event=DEVICE_LINK_UP .*device=inv1")
    code, body = _get(f"http://127.0.0.1:{site.port}/healthz")
    assert (code, body.strip()) == (200, "ok")
    health = bessai("health", env_file=site.env_file)
    assert health.returncode == 0, health.stderr
    assert health.stdout.startswith(f"healthy: http://127.0.0.1:{site.port}/healthz")
    code, body = _get(f"http://127.0.0.1:{site.port}/status")
    status = json.loads(body)
    assert code == 200
    assert status["site"] == "site-test-01"  # the env file's SITE_ID, not the demo default
    assert status["links"]["device:inv1"]["state"] == "up"
    assert status["sites"]["inv1"]["safety"]["rules"] == []
    assert status["sites"]["inv1"]["heartbeat"]["beats"] >= 1
    assert status["spool"]["depth"] >= 1
    assert all(a["restarts"] == 0 for a in status["actors"].values())

    assert gw.stop() == 0
    log = gw.log()
    # A start is not an incident: the runbook's alert grep finds nothing (§5).
    assert "level=CRITICAL" not in log
    assert "level=WARNING event=SAFETY_WAITING_FOR_DATA blocks=both deadline_s=30.0" in log
    assert "level=WARNING event=SHUTDOWN_REQUESTED signal=SIGTERM deadline_s=20.0" in log
    exits = re.findall(r"event=actor_exited child=(\S+) supervisor=gateway", log)
    assert exits[-2:] == ["data", "telemetry"]  # reverse start order
    data_exits = re.findall(r"event=actor_exited child=(\S+) supervisor=data", log)
    assert data_exits[-1] == "spool"  # the spool stops last in its branch
    assert "event=GATEWAY_STOPPED" in log.splitlines()[-1]
    # Nothing accepted is lost: with the uplink off, every reading is still in the spool.
    assert not (site.tmp / "spool" / "outbox.sqlite").exists()  # simulated data stays apart
    stats = bessai("spool", "stats", "--json", "--path", str(site.spool), env_file=site.env_file)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["depth"] >= status["spool"]["depth"]


def test_health_exits_4_with_a_hint_when_no_gateway_answers(site):
    result = bessai("health", "--timeout-s", "1", env_file=site.env_file)
    assert result.returncode == 4
    assert f"cannot reach http://127.0.0.1:{site.port}/healthz" in result.stderr
    assert "hint: is the gateway running?" in result.stderr


def test_a_second_signal_during_the_stop_forces_exit_130(site):
    gw = site.gateway()
    gw.wait_for(r"event=DEVICE_LINK_UP")
    # Two different signals (Trio merges a repeated pending one); the ordered stop takes ~0.5 s,
    # so the second lands while it runs.
    gw.signal(signal.SIGTERM)
    gw.signal(signal.SIGINT)
    assert gw.proc.wait(timeout=25) == 130
    log = gw.log()
    requested = re.findall(r"event=SHUTDOWN_REQUESTED signal=(\w+)", log)
    forced = re.findall(r"event=SHUTDOWN_FORCED signal=(\w+)", log)
    assert len(requested) == 1  # Trio may hand the two pending signals over in either order
    assert sorted(requested + forced) == ["SIGINT", "SIGTERM"]
    assert "event=GATEWAY_STOPPED" not in log


# --- §6.1 SAFETY_BLOCK ------------------------------------------------------------------------


def test_soc_below_min_is_found_by_the_runbooks_safety_block_grep(site):
    gw = site.gateway("--sim-soc", "4")
    line = gw.wait_for(r"level=CRITICAL event=SAFETY_BLOCK")
    # The exact grep the runbook gives, on the exact log.
    grep = subprocess.run(["grep", "level=CRITICAL event=SAFETY_BLOCK"], input=gw.log(),
                          capture_output=True, text=True)
    assert grep.stdout.splitlines() == [line]
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    assert fields["rule"] == "soc_min"
    assert float(fields["value"]) < float(fields["limit"]) == 5.0
    assert fields["blocks"] == "discharge"
    assert (fields["site"], fields["device"]) == ("site-test-01", "inv1")
    # A block is a safe state, not an unhealthy gateway.
    assert bessai("health", env_file=site.env_file).returncode == 0
    status = json.loads(_get(f"http://127.0.0.1:{site.port}/status")[1])
    assert status["sites"]["inv1"]["safety"]["blocked_discharge"] is True
    assert gw.stop() == 0


# --- §6.4 disk faults ----------------------------------------------------------------------------


def test_a_gateway_started_on_a_full_disk_runs_names_it_and_recovers_when_space_is_freed(site):
    """Why 2 of issue 19, as a real process: with the spool's filesystem full, the start-up
    SAFETY_BLOCK (no data yet) used to crash-loop the events actor and exit 1 after ~30 s,
    for ever under systemd. Now the gateway starts, keeps the inverter heartbeated, names
    the fault once in the log and in `bessai health`, and recovers when space is freed."""
    require_root()
    disk = site.tmp / "disk"
    with small_tmpfs(disk, "2m"):
        text = site.env_file.read_text().replace(str(site.tmp / "spool" / "outbox.sqlite"),
                                                 str(disk / "outbox.sqlite"))
        site.env_file.write_text(text)
        filler = DiskFiller(disk)
        filler.fill()
        gw = site.gateway()
        gw.wait_for(r"event=SPOOL_DISK_FAULT .*condition=disk_full")
        time.sleep(40)  # longer than the old crash loop took to exit
        assert gw.proc is not None
        assert gw.proc.poll() is None, gw.log()[-3000:]
        health = bessai("health", env_file=site.env_file)
        assert health.returncode == 1
        assert "spool disk fault: disk_full" in health.stdout + health.stderr
        status = json.loads(_get(f"http://127.0.0.1:{site.port}/status")[1])
        heartbeat = status["sites"]["inv1"]["heartbeat"]
        assert heartbeat["beats"] >= 3
        assert heartbeat["max_gap_s"] <= 11.0
        filler.free()
        gw.wait_for(r"event=SPOOL_DISK_RECOVERED")
        assert bessai("health", env_file=site.env_file).returncode == 0
        assert gw.stop() == 0
        log = gw.log()
    assert len(re.findall(r"event=SPOOL_DISK_FAULT ", log)) == 1
    assert len(re.findall(r"event=SPOOL_DISK_RECOVERED ", log)) == 1
    assert "SUPERVISOR_ESCALATED" not in log
    assert "DATA_BRANCH_DEGRADED" not in log


# --- §7 SIGHUP: log level and credentials ------------------------------------------------------


def test_sighup_applies_a_new_log_level_and_keeps_the_old_one_on_a_bad_value(site):
    gw = site.gateway()
    with site.env_file.open("a") as f:
        f.write("LOG_LEVEL=DEBUG\n")
    gw.signal(signal.SIGHUP)
    gw.wait_for(r"level=WARNING event=CONFIG_RELOADED applied=LOG_LEVEL:INFO->DEBUG "
                r"needs_restart=none unchanged=\d+ google_login=renewed")
    site.env_file.write_text(site.env_file.read_text().replace("LOG_LEVEL=DEBUG",
                                                               "LOG_LEVEL=LOUD"))
    gw.signal(signal.SIGHUP)
    failed = gw.wait_for(r"event=CONFIG_RELOAD_FAILED")
    assert "LOG_LEVEL='LOUD'" in failed, failed
    assert "kept=" in failed, failed
    gw.wait_for(r"level=DEBUG ", timeout_s=10)  # DEBUG still in force
    log = gw.log()
    assert "ACTOR_CRASHED" not in log
    assert "ACTOR_RESTARTED" not in log
    assert gw.stop() == 0


# --- §11 backup and restore of the spool -------------------------------------------------------


def test_spool_backup_of_a_running_gateway_is_complete_and_restores(site):
    gw = site.gateway()
    gw.wait_for(r"event=DEVICE_LINK_UP")
    time.sleep(2.0)  # a few committed readings, most still in the -wal file
    spool = site.spool
    assert Path(f"{spool}-wal").stat().st_size > spool.stat().st_size  # cp alone would miss it
    dest = site.tmp / "spool-backup.sqlite"
    result = bessai("spool", "backup", str(dest), "--path", str(spool), env_file=site.env_file)
    assert result.returncode == 0, result.stderr
    backed_up = json.loads(bessai("spool", "stats", "--json", "--path", str(dest),
                                  env_file=site.env_file).stdout)["depth"]
    assert backed_up >= 1
    assert f"{backed_up} pending" in result.stdout
    assert not Path(f"{dest}-wal").exists()  # one self-contained file
    again = bessai("spool", "backup", str(dest), "--path", str(spool), env_file=site.env_file)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert gw.stop() == 0

    live_ids = _msg_ids(spool, site.env_file)
    backup_ids = _msg_ids(dest, site.env_file)
    assert len(backup_ids) == backed_up
    assert backup_ids <= live_ids  # every backed-up row is a real, committed row

    # Restore (runbook §11): gateway stopped, old files removed, the copy put in place.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spool}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(dest, spool)
    restored = site.gateway(log_name="restored.log")
    line = restored.wait_for(r"event=SPOOL_RECOVERED")
    assert f"pending={backed_up} " in line
    assert restored.stop() == 0
    assert backup_ids <= _msg_ids(spool, site.env_file)


def _msg_ids(path: Path, env_file: Path) -> set[str]:
    result = bessai("spool", "export", "--path", str(path), env_file=env_file)
    assert result.returncode == 0, result.stderr
    return {json.loads(line)["msg_id"] for line in result.stdout.splitlines()}


# --- §6.3 and §8: Pub/Sub uplink and dispatch commands, against the emulator -------------------


def test_uplink_publishes_and_commands_pass_the_gate_through_the_emulator(site, pubsub_emulator):
    telemetry = make_topic(pubsub_emulator)
    commands = make_topic(pubsub_emulator, project=telemetry.project)
    with site.env_file.open("a") as f:
        f.write(f"INVERTER_IP=127.0.0.1\nGCP_PROJECT_ID={telemetry.project}\n"
                f"PUBSUB_EMULATOR_HOST={pubsub_emulator.host}\n"
                f"PUBSUB_TOPIC={telemetry.topic}\n"
                f"PUBSUB_COMMANDS_TOPIC={commands.topic}\n"
                f"PUBSUB_COMMANDS_SUBSCRIPTION={commands.subscription}\n")
    assert "uplink: emulator" in bessai("check-config", env_file=site.env_file).stdout
    gw = site.gateway("--sim-soc", "4")
    gw.wait_for(r"event=SAFETY_BLOCK")

    sent = bessai("command", "charge", "--power-w", "2000", "--ttl-s", "300",
                  env_file=site.env_file)
    assert sent.returncode == 0, sent.stderr
    charge_id = re.search(r"id=(\S+)", sent.stdout)[1]
    accepted = gw.wait_for(rf"event=COMMAND_ACCEPTED command_id={charge_id}")
    assert "decision=accepted" in accepted
    assert "applied_power_w=2000.0" in accepted

    sent = bessai("command", "discharge", "--power-w", "1000", env_file=site.env_file)
    discharge_id = re.search(r"id=(\S+)", sent.stdout)[1]
    rejected = gw.wait_for(rf"level=WARNING event=COMMAND_REJECTED command_id={discharge_id}")
    assert 'reason="discharge blocked by safety' in rejected

    now = time.time()
    late = Command(id=str(uuid.uuid4()), site_id="site-test-01", device_id="inv1",
                   action=Action.CHARGE, power_w=1000.0, issued_at=now - 600,
                   expires_at=now - 300)
    httpx.post(f"{pubsub_emulator.base_url}/v1/{commands.topic_path}:publish",
               json={"messages": [command_message(late)]}, timeout=10).raise_for_status()
    expired = gw.wait_for(rf"event=COMMAND_REJECTED command_id={late.id}")
    assert 'reason="expired' in expired

    status = json.loads(_get(f"http://127.0.0.1:{site.port}/status")[1])
    assert status["links"]["cloud"]["state"] == "up"
    assert gw.stop() == 0
    received = telemetry.pull_all()
    # Simulated data is marked on every message, so downstream can never take it for the site's.
    assert {m["attributes"].get("simulated") for m in received} == {"true"}
    kinds = {m["attributes"].get("kind") for m in received}
    assert "telemetry" in kinds
    names = {json.loads(m["data"]).get("name") for m in received
             if m["attributes"].get("kind") in ("event", "command_result")}
    assert {"SAFETY_BLOCK", "COMMAND_ACCEPTED", "COMMAND_REJECTED"} <= names, names


# --- §3 simulator mode: isolated from the production spool and topic ---------------------------


def test_simulator_with_a_real_topic_configured_publishes_nothing_and_keeps_its_own_spool(site):
    """A real config (a cloud topic, no emulator) with `--simulator`: the simulated readings
    go to their own spool and are not published, unless `--publish-simulated`."""
    with site.env_file.open("a") as f:
        f.write("GCP_PROJECT_ID=my-bess-project\nPUBSUB_TOPIC=bessai-telemetry\n")
    gw = site.gateway()
    line = gw.wait_for(r"event=SIMULATOR_MODE")
    assert f"spool={site.spool} uplink=off " in line, line
    assert "not_published_to=projects/my-bess-project/topics/bessai-telemetry" in line
    status = json.loads(_get(f"http://127.0.0.1:{site.port}/status")[1])
    assert status["uplink_mode"] == "off"
    assert "cloud" not in status["links"]
    assert gw.stop() == 0
    assert site.spool.exists()
    assert not (site.tmp / "spool" / "outbox.sqlite").exists()
