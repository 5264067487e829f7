"""One configuration for the service and the CLI: the env file search order, run as operators
run the commands (subprocesses, from a working directory of the test's choosing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bessai.config_files import SEARCH_PATHS, find_env_file
from bessai.errors import ConfigError
from bessai.settings import KNOWN_KEYS

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "huawei_sun2000.json"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in KNOWN_KEYS and k != "BESSAI_ENV_FILE" and not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def site_file(path: Path, site: str, tmp_path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"SITE_ID={site}\nINVERTER_IP=10.0.0.5\nDEVICE_PROFILE={PROFILE}\n"
                    f"SPOOL_PATH={tmp_path / 'spool' / 'outbox.sqlite'}\n")
    return path


def run(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_config_reads_config_env_in_the_working_directory_and_says_so(tmp_path):
    site_file(tmp_path / "config" / ".env", "from-cwd", tmp_path)
    done = run("bessai.cli.main", "check-config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Site: from-cwd,")
    assert "  config:    read: config/.env (search); not found: -" in done.stdout


def test_bessai_env_file_wins_over_the_working_directory(tmp_path):
    site_file(tmp_path / "config" / ".env", "from-cwd", tmp_path)
    chosen = site_file(tmp_path / "etc" / "bessai.env", "from-variable", tmp_path)
    done = run("bessai.cli.main", "check-config", cwd=tmp_path, BESSAI_ENV_FILE=str(chosen))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Site: from-variable,")
    assert f"read: {chosen} (BESSAI_ENV_FILE)" in done.stdout


def test_with_no_file_found_the_error_says_where_it_looked(tmp_path):
    done = run("bessai.cli.main", "check-config", cwd=tmp_path)
    assert done.returncode == 2
    assert "SITE_ID is not set" in done.stderr
    assert "none found; looked for config/.env, /etc/bessai/bessai.env" in done.stderr


@pytest.mark.parametrize("module", ["bessai.cli.main", "bessai.cli.run"])
def test_a_missing_env_file_is_an_error_everywhere(tmp_path, module):
    site_file(tmp_path / "config" / ".env", "from-cwd", tmp_path)  # never a silent fallback
    args = ["--env-file", "/nope/bessai.env"] + (["check-config"] if module.endswith("main")
                                                  else ["--no-screen", "--duration", "1"])
    done = run(module, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: --env-file '/nope/bessai.env' does not exist")
    assert not (tmp_path / "spool").exists()  # nothing started


def test_a_missing_bessai_env_file_is_an_error_too(tmp_path):
    done = run("bessai.cli.main", "spool", "stats", cwd=tmp_path,
               BESSAI_ENV_FILE=str(tmp_path / "absent.env"))
    assert done.returncode == 2
    assert "error: BESSAI_ENV_FILE=" in done.stderr


def test_the_search_order_is_the_documented_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (Path("config/.env"), Path("/etc/bessai/bessai.env")) == SEARCH_PATHS
    explicit = site_file(tmp_path / "a.env", "a", tmp_path)
    variable = site_file(tmp_path / "b.env", "b", tmp_path)
    assert find_env_file(str(explicit), {"BESSAI_ENV_FILE": str(variable)}).path == explicit
    assert find_env_file(None, {"BESSAI_ENV_FILE": str(variable)}).path == variable
    with pytest.raises(ConfigError):
        find_env_file(None, {"BESSAI_ENV_FILE": str(tmp_path / "c.env")})
