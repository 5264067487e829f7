"""The systemd layout as an operator meets it: the service reads /etc/bessai/bessai.env (the unit
sets BESSAI_ENV_FILE), and `bessai spool stats` run by hand, from any directory and without that
variable, finds the same file by the search order, and so the service's spool.

/etc/bessai is this test's own directory, bind-mounted in a private mount namespace
(`unshare -m`, root) around the CLI only: the host's /etc gets at most an empty mount point,
removed afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import ROOT, base_env, free_port, sim_port, start_gateway, start_sim

pytestmark = [pytest.mark.e2e]


def bessai_as_on_the_host(etc_bessai: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`bessai ARGS` with ``etc_bessai`` seen at /etc/bessai, no BESSAI_ENV_FILE, in ``cwd``."""
    assert shutil.which("unshare"), "util-linux's unshare is needed (apt-get install util-linux)"
    script = ('mkdir -p /etc/bessai && mount --bind "$1" /etc/bessai && shift && '
              'exec "$@"')
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(etc_bessai),
         sys.executable, "-m", "bessai.cli.main", *args],
        cwd=cwd, env=base_env({}), capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def mount_point() -> Iterator[None]:
    """The empty /etc/bessai directory the bind mount needs; removed again if this test made
    it (still empty: the files were only ever in the private namespace)."""
    existed = Path("/etc/bessai").exists()
    yield
    if not existed:
        Path("/etc/bessai").rmdir()


def test_spool_stats_by_hand_finds_the_services_spool(tmp_path, procs, mount_point):
    sim = start_sim(0)
    procs.append(sim)
    port = sim_port(sim)
    etc_bessai = tmp_path / "etc-bessai"
    etc_bessai.mkdir()
    spool = tmp_path / "var-lib-bessai" / "spool" / "outbox.sqlite"
    env_file = etc_bessai / "bessai.env"
    env_file.write_text(
        f"SITE_ID=systemd-site\nINVERTER_IP=127.0.0.1\nINVERTER_PORT={port}\n"
        f"DEVICE_PROFILE={ROOT / 'profiles' / 'huawei_sun2000.json'}\n"
        f"SPOOL_PATH={spool}\nSTATUS_BIND=127.0.0.1:{free_port()}\n")
    gateway = start_gateway({"BESSAI_ENV_FILE": str(env_file)})  # as the unit starts it
    procs.append(gateway)
    gateway.wait_for(r"event=DEVICE_LINK_UP", 20)
    gateway.wait_for(r"event=spool_group_committed|event=SAFETY_DATA_READY", 10)

    elsewhere = tmp_path / "home-operator"
    elsewhere.mkdir()
    stats = bessai_as_on_the_host(etc_bessai, elsewhere, "spool", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["path"] == str(spool)
    check = bessai_as_on_the_host(etc_bessai, elsewhere, "check-config")
    assert check.returncode == 0, check.stderr
    assert "read: /etc/bessai/bessai.env (search); not found: config/.env" in check.stdout
