"""Configuration edge cases, run as operators run them (real subprocesses, real files).

Each case used to end in a traceback, an ``unexpected ...`` exit 1 (which systemd retries
forever), or a check-config that passed and a gateway that then crash-looped. Each must now be a
listed error: exit 2 for a configuration fault (1 for a damaged spool file, a data fault), no
traceback, and check-config lists every problem in ONE run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_harness import ROOT, cli_env, run_bessai

PROFILE = str(ROOT / "profiles" / "huawei_sun2000.json")


def _site(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"SITE_ID": "site-test-01", "INVERTER_IP": "127.0.0.1", "DEVICE_PROFILE": PROFILE,
            "SPOOL_PATH": str(tmp_path / "spool" / "outbox.sqlite"), **extra}


def _no_crash(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "unexpected" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr


def run_gateway(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``bessai-run`` as a subprocess, for the cases that must fail before anything starts."""
    return subprocess.run([sys.executable, "-m", "bessai.cli.run", *args], cwd=ROOT,
                          env=cli_env(**env), capture_output=True, text=True, timeout=60)


def test_a_latin1_byte_in_the_env_file_is_a_config_error_naming_line_and_column(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"SITE_ID=site-test-01\nINVERTER_IP=127.0.0.1\n# caf\xe9\n")
    for result in (run_bessai("check-config", "--env-file", str(env_file)),
                   run_gateway("--env-file", str(env_file), "--duration", "1")):
        assert result.returncode == 2, result.stderr
        _no_crash(result)
        assert "is not UTF-8 text: byte 0xE9 at line 3, column 6" in result.stderr


def test_a_5000_character_device_profile_is_a_listed_setting_error(tmp_path):
    result = run_bessai("check-config", **_site(tmp_path, DEVICE_PROFILE="p" * 5000))
    assert result.returncode == 2
    _no_crash(result)
    assert "DEVICE_PROFILE=" in result.stderr
    assert "is 5000 bytes long — the limit is 4096 bytes" in result.stderr
    assert max(len(line) for line in result.stderr.splitlines()) < 400  # the value is clipped


def test_a_300_character_spool_file_name_fails_check_config_and_the_gateway_start(tmp_path):
    env = _site(tmp_path, SPOOL_PATH=str(tmp_path / ("s" * 300 + ".sqlite")))
    result = run_bessai("check-config", **env)
    assert result.returncode == 2
    _no_crash(result)
    assert "SPOOL_PATH=" in result.stderr
    gateway = run_gateway("--duration", "5", **env)
    assert gateway.returncode == 2, gateway.stderr
    assert "SPOOL_PATH=" in gateway.stderr


def test_a_spool_file_name_just_too_long_for_the_spool_suffixes_is_refused(tmp_path):
    # 230 bytes is a legal name, but "<name>.corrupt-20260101T000000Z-wal" would not be
    env = _site(tmp_path, SPOOL_PATH=str(tmp_path / ("s" * 230)))
    result = run_bessai("check-config", **env)
    assert result.returncode == 2
    assert "for its -wal" in result.stderr or "for the spool" in result.stderr


@pytest.mark.parametrize("port", ["\u0665\u0660\u0662",  # "٥٠٢", Arabic-Indic 502
                                  "5_0_2", "0x1F6", " 1e3", "502.0", "+\u0665"])
def test_inverter_port_in_anything_but_ascii_digits_is_refused(tmp_path, port):
    result = run_bessai("check-config", **_site(tmp_path, INVERTER_PORT=port))
    assert result.returncode == 2
    _no_crash(result)
    assert "INVERTER_PORT=" in result.stderr
    assert "ASCII digits" in result.stderr


def test_check_config_lists_settings_profile_credentials_and_spool_problems_in_one_run(
        tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool's directory should be")
    env = _site(
        tmp_path,
        INVERTER_IP="999.1.1.1",                              # a setting
        DEVICE_PROFILE=str(tmp_path / "missing.json"),        # a profile
        GCP_PROJECT_ID="test-project", PUBSUB_TOPIC="bessai-telemetry",
        GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "no-key.json"),  # credentials
        SPOOL_PATH=str(blocker / "outbox.sqlite"),            # the spool directory
    )
    result = run_bessai("check-config", **env)
    assert result.returncode == 2
    _no_crash(result)
    assert result.stderr.splitlines()[0] == "error: 4 settings are wrong:"
    for key in ("INVERTER_IP=", "DEVICE_PROFILE=", "GOOGLE_APPLICATION_CREDENTIALS=",
                "SPOOL_PATH="):
        assert key in result.stderr, (key, result.stderr)
    assert "is a file, not a directory" in result.stderr


def test_check_config_reports_a_spool_directory_it_cannot_write(tmp_path):
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="bessai-ro-"))  # /tmp/..., reachable by nobody
    base.chmod(0o755)
    locked = base / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        env = _site(tmp_path, SPOOL_PATH=str(locked / "sub" / "outbox.sqlite"))
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "bessai.cli.main", "check-config"],
            cwd=ROOT, env=cli_env(**env), capture_output=True, text=True, timeout=60,
        ) if _is_root() else run_bessai("check-config", **env)
        if _is_root() and "Permission denied" in result.stderr and "SPOOL_PATH" not in \
                result.stderr:
            pytest.skip("nobody cannot read the worktree here")
        assert result.returncode == 2, result.stderr
        assert "SPOOL_PATH=" in result.stderr
        assert "not writable" in result.stderr
    finally:
        locked.chmod(0o700)
        shutil.rmtree(base)


def _is_root() -> bool:
    import os
    return os.geteuid() == 0


def test_spool_stats_on_a_corrupt_file_is_a_listed_failure(tmp_path):
    corrupt = tmp_path / "outbox.sqlite"
    corrupt.write_bytes(b"this is not a database " * 400)
    result = run_bessai("spool", "stats", "--path", str(corrupt))
    assert result.returncode == 1
    _no_crash(result)
    assert "cannot be read as a spool database" in result.stderr
    assert "file is not a database" in result.stderr


def test_profile_validate_on_a_deeply_nested_profile_is_a_listed_problem(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"device": ' + "[" * 50_000 + "]" * 50_000 + "}")
    result = run_bessai("profile", "validate", str(deep))
    assert result.returncode == 2
    _no_crash(result)
    assert "nest more than" in result.stderr


def test_profile_validate_on_a_non_utf8_profile_is_a_listed_problem(tmp_path):
    bad = tmp_path / "latin1.json"
    bad.write_bytes(json.dumps({"device": {"id": "x"}}).encode().replace(b"x", b"\xe9"))
    result = run_bessai("profile", "validate", str(bad))
    assert result.returncode == 2
    _no_crash(result)
    assert "is not UTF-8 text" in result.stderr
