"""The ``bessai`` CLI, run as operators run it: a subprocess, from the repository root.

Commands whose implementation lives in another part of the gateway (device driver, health check,
spool, Pub/Sub commands, simulator) are run here with that part hidden (a ``sitecustomize`` that
makes the import fail), to prove the CLI fails cleanly when a part is missing from a build. Their
happy paths against real peers belong with those parts (see the ops branch report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import structlog

from bessai.cli import command_cmd, config_cmd, device_cmd, main
from bessai.settings import DeviceSpec, get_settings

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = textwrap.dedent(
    """
    import os, sys
    from importlib.abc import MetaPathFinder

    class _Hide(MetaPathFinder):
        blocked = [m for m in os.environ.get("BESSAI_TEST_HIDE", "").split(",") if m]

        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in self.blocked):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Hide())
    """
)


@pytest.fixture(autouse=True)
def _restore_logging():
    """`main()` run in-process configures structlog for a command; later tests need the default."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def site(tmp_path):
    """A clean environment, a profile file and a writable spool directory."""
    profile = tmp_path / "profile.json"
    profile.write_text("{}")
    hide_dir = tmp_path / "hide"
    hide_dir.mkdir()
    (hide_dir / "sitecustomize.py").write_text(BLOCKER)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(hide_dir),
        "BESSAI_TEST_HIDE": "",
        "SITE_ID": "site-test-01",
        "INVERTER_IP": "127.0.0.1",
        "DEVICE_PROFILE": str(profile),
        "SPOOL_PATH": str(tmp_path / "spool" / "outbox.sqlite"),
    }
    return env


def bessai(env: dict[str, str], *args: str, hide: str = "") -> subprocess.CompletedProcess[str]:
    env = {**env, "BESSAI_TEST_HIDE": hide}
    return subprocess.run(
        [sys.executable, "-m", "bessai.cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- check-config ---------------------------------------------------------------------------


def test_check_config_prints_the_site_summary_and_exits_0(site):
    result = bessai(site, "check-config", hide="bessai.device")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == (
        f"Site: site-test-01, IP: 127.0.0.1, devices: inv1@127.0.0.1:502/1, "
        f"profile: {site['DEVICE_PROFILE']}, uplink: off"
    )
    assert "SOC 5-98 %" in result.stdout
    assert "was not validated (no profile loader in this build)" in result.stdout


def test_check_config_reports_the_emulator_uplink(site):
    env = {**site, "GCP_PROJECT_ID": "test-project", "PUBSUB_TOPIC": "bessai-telemetry",
           "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}
    result = bessai(env, "check-config", hide="bessai.device")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("uplink: emulator")
    assert "projects/test-project/topics/bessai-telemetry" in result.stdout


def test_check_config_lists_every_problem_and_exits_2(site, tmp_path):
    env = {**site, "INVERTER_IP": "999.1.1.1", "SOC_MIN_PCT": "abc", "LOG_LEVEL": "LOUD"}
    del env["SITE_ID"]
    result = bessai(env, "check-config")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    # the 5th: the profile ("{}") is checked in the same run, not after the settings are fixed
    assert lines[0] == "error: 5 settings are wrong:"
    assert any(line.startswith("  DEVICE_PROFILE=") and "is not a valid profile" in line
               for line in lines)
    assert (
        "  INVERTER_IP='999.1.1.1' is not an IP address — set it to the inverter's address, "
        "e.g. 192.168.1.50"
    ) in lines
    assert any(line.startswith("  SOC_MIN_PCT='abc' is not a number") for line in lines)
    # No env file was found where it looked: the hint says so, and where it looked.
    assert lines[-1].startswith("hint: fix them in an env file (none found; looked for "
                                "config/.env, /etc/bessai/bessai.env) or the environment")
    assert "Traceback" not in result.stderr


def test_check_config_finds_missing_files_after_the_settings_are_valid(site, tmp_path):
    env = {
        **site,
        "DEVICE_PROFILE": str(tmp_path / "nope.json"),
        "GCP_PROJECT_ID": "test-project",
        "PUBSUB_TOPIC": "bessai-telemetry",
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "absent-key.json"),
    }
    result = bessai(env, "check-config", hide="bessai.device")
    assert result.returncode == 2
    assert "DEVICE_PROFILE=" in result.stderr
    assert "does not exist" in result.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS=" in result.stderr


def test_check_config_never_prints_the_key_file(site, tmp_path):
    key = tmp_path / "key.json"
    key.write_text("not json at all: PRIVATE-KEY-MATERIAL")
    env = {**site, "GCP_PROJECT_ID": "test-project", "PUBSUB_TOPIC": "bessai-telemetry",
           "GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    result = bessai(env, "check-config", hide="bessai.device")
    assert result.returncode == 2
    assert "is not a JSON key file" in result.stderr
    assert "PRIVATE-KEY-MATERIAL" not in result.stderr + result.stdout


def test_check_config_reads_an_explicit_env_file_under_the_environment(site, tmp_path):
    env_file = tmp_path / "site.env"
    env_file.write_text("SITE_ID=from-file\nINVERTER_IP=192.168.7.7\nSOC_MIN=3\n")
    env = {k: v for k, v in site.items() if k not in ("SITE_ID",)}
    result = bessai(env, "check-config", "--env-file", str(env_file), hide="bessai.device")
    assert result.returncode == 0, result.stderr
    # The environment's INVERTER_IP wins; the file supplies SITE_ID; the typo is flagged.
    assert result.stdout.startswith("Site: from-file, IP: 127.0.0.1,")
    assert "warning: " in result.stdout
    assert "did you mean SOC_MIN_PCT?" in result.stdout


def test_a_missing_explicit_env_file_is_a_config_error(site, tmp_path):
    result = bessai(site, "--env-file", str(tmp_path / "absent.env"), "check-config")
    assert result.returncode == 2
    assert "error: --env-file" in result.stderr
    assert "hint: " in result.stderr


def test_debug_shows_the_traceback_and_still_the_hint(site):
    env = {**site, "INVERTER_IP": "999.1.1.1"}
    plain = bessai(env, "check-config")
    debug = bessai(env, "check-config", "--debug")
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert "SettingsError" in debug.stderr
    assert debug.returncode == plain.returncode == 2
    assert debug.stderr.rstrip().endswith(plain.stderr.rstrip().splitlines()[-1])


# --- commands whose implementation is in another part -----------------------------------------


@pytest.mark.parametrize(
    ("args", "hidden", "missing"),
    [
        (["probe", "--tag", "soc"], "bessai.device", "bessai.device.driver"),
        (["health"], "bessai.observe.health", "bessai.observe.health"),
        (["profile", "validate", "profiles/huawei_sun2000.json"], "bessai.device",
         "bessai.device.profile"),
        (["profile", "plan", "profiles/huawei_sun2000.json"], "bessai.device",
         "bessai.device.profile"),
        (["spool", "stats"], "bessai.uplink", "bessai.uplink.spool"),
        (["spool", "export"], "bessai.uplink", "bessai.uplink.spool"),
        (["sim", "--port", "0"], "bessai.sim", "bessai.sim.cli"),
    ],
)
def test_a_command_missing_from_the_build_fails_cleanly_with_exit_3(site, args, hidden, missing):
    result = bessai(site, *args, hide=hidden)
    assert result.returncode == 3, result.stderr
    first, hint = result.stderr.splitlines()
    assert first == (
        f"error: `bessai {' '.join(a for a in args[:2] if not a.startswith(('-', 'profiles')))}` "
        f"is not available in this build ({missing} is missing)"
    )
    assert hint.startswith("hint: install a gateway release")
    assert "Traceback" not in result.stderr


def test_command_sends_nothing_without_a_commands_topic(site):
    result = bessai(site, "command", "stop")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        "error: PUBSUB_COMMANDS_TOPIC is not set, so there is nowhere to send the command"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["charge"], "error: `charge` needs a power: --power-w N (watts, > 0)"),
        (["discharge", "--power-w", "-5"], "error: `discharge` needs a power"),
        (["stop", "--power-w", "100"], "error: `stop` takes no --power-w"),
        (["auto", "--ttl-s", "1"], "error: --ttl-s 1 is out of range"),
        (["charge", "--power-w", "5000", "--ttl-s", "7200"],
         "error: --ttl-s 7200 is longer than COMMAND_MAX_TTL_S=3600"),
        (["discharge", "--power-w", "0.5"],
         "error: --power-w 0.5 is below COMMAND_MIN_POWER_W=100"),
        (["stop", "--device", "inv9"], "error: no device 'inv9' at site site-test-01"),
    ],
)
def test_command_rejects_requests_that_cannot_be_right(site, args, message):
    env = {**site, "GCP_PROJECT_ID": "test-project", "PUBSUB_COMMANDS_TOPIC": "bessai-commands"}
    result = bessai(env, "command", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)


def test_command_publisher_missing_from_the_build_fails_with_exit_3(site):
    env = {**site, "GCP_PROJECT_ID": "test-project", "PUBSUB_COMMANDS_TOPIC": "bessai-commands"}
    result = bessai(env, "command", "charge", "--power-w", "5000", hide="bessai.uplink")
    assert result.returncode == 3
    assert "(bessai.uplink.publisher is missing)" in result.stderr


def test_probe_without_settings_or_host_reports_the_settings(site):
    env = {k: v for k, v in site.items() if k != "INVERTER_IP"}
    result = bessai(env, "probe", hide="bessai.device")
    assert result.returncode == 2
    assert "INVERTER_IP is not set" in result.stderr


def test_usage_errors_exit_2_with_argparse_usage(site):
    result = bessai(site, "command", "explode")
    assert result.returncode == 2
    assert "invalid choice: 'explode'" in result.stderr


# --- in-process: behaviour of the pieces ------------------------------------------------------


def test_an_unexpected_exception_asks_for_debug_and_exits_1(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(config_cmd, "run", boom)
    assert main.main(["check-config"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: unexpected RuntimeError: disk on fire",
        "hint: run it again with --debug for the traceback, and report it with the output",
    ]


def test_built_command_carries_its_expiry():
    settings = get_settings({"SITE_ID": "s1", "DEVICES": "a@10.0.0.1,b@10.0.0.2"}, env_file=None)
    args = argparse.Namespace(action="charge", power_w=3000.0, ttl_s=120.0, device="b")
    command = command_cmd.build_command(settings, args, now=1_767_225_600.0)
    assert (command.site_id, command.device_id, command.action) == ("s1", "b", "charge")
    assert command.power_w == 3000.0
    assert command.expires_at - command.issued_at == 120.0
    assert json.loads(json.dumps(command.id))  # a plain string id (uuid4)


class ModbusReadError(Exception):
    """Stands in for bessai.device.errors.ModbusReadError: matched by name, not import."""


@pytest.mark.parametrize(
    ("exc", "exit_code", "fragment"),
    [
        (ConnectionRefusedError(111, "Connection refused"), 1, "cannot connect to the inverter"),
        (ModbusReadError("0x02 (illegal data address) reading 'soc' at 37760"), 1,
         "refused to read 'soc'"),
        (TimeoutError("no reply in 10 s"), 1, "no answer from the inverter"),
        (KeyError("no tag 'socc' in profile"), 2, "no tag 'socc'"),
    ],
)
def test_probe_failures_are_explained_with_a_hint(exc, exit_code, fragment):
    target = DeviceSpec("inv1", "192.168.1.50", 502, 1)
    err = device_cmd._explain(exc, target, "soc")
    assert err.exit_code == exit_code
    assert fragment in err.message
    assert err.hint


def test_probe_prints_value_and_unit():
    class Reading:
        value = 51.2
        valid = True

    assert device_cmd._format("soc", Reading(), "%") == "SOC: 51.2 %"
    assert device_cmd._format("soc", 51.2, None) == "SOC: 51.2"


def test_probe_reports_an_invalid_reading_instead_of_a_number():
    class Invalid:
        value = None
        valid = False
        reason = "0xFFFF (invalid marker)"

    assert device_cmd._format("soc", Invalid(), "%") == "SOC: invalid (0xFFFF (invalid marker))"
    assert device_cmd._format("soc", None, "%").startswith("SOC: invalid (")
