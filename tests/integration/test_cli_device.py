"""``bessai probe`` and ``bessai sim`` against each other: real processes, real sockets.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.integration.cli_harness import ROOT, cli_env, run_bessai


def _bessai(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_bessai(*args, **{"SITE_ID": "s1", **env})


@pytest.fixture
def simulator() -> Iterator[int]:
    """`bessai sim` on a free port; yields the port, then stops it with SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bessai.cli.main", "sim", "--host", "127.0.0.1", "--port", "0",
         "--soc", "51.2"],
        cwd=ROOT, env=cli_env(SITE_ID="s1"), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            match = re.search(r"event=SIM_LISTENING .*port=(\d+)", line)
            port = int(match[1]) if match else None
        assert port, "the simulator did not report SIM_LISTENING"
        yield port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0  # the simulator stops cleanly on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()


def test_probe_reads_the_state_of_charge_from_the_simulator(simulator):
    result = _bessai("probe", "--tag", "soc", INVERTER_IP="127.0.0.1",
                     INVERTER_PORT=str(simulator))
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"SOC: (\d+(?:\.\d+)?) %\n", result.stdout)
    assert match, result.stdout
    assert abs(float(match[1]) - 51.2) < 1.0  # the simulated battery moves a little
    assert result.stderr == ""  # library log lines stay out of the command's output


def test_probe_with_a_wrong_unit_id_says_which_setting_to_check(simulator):
    result = _bessai("probe", "--host", "127.0.0.1", "--port", str(simulator), "--unit-id", "7")
    assert result.returncode == 1
    first, hint = result.stderr.strip().splitlines()
    assert first.startswith("error: the inverter at 127.0.0.1:")
    assert "refused to read 'soc'" in first
    assert hint.startswith("hint: check MODBUS_UNIT_ID")


def test_probe_of_an_unknown_tag_lists_the_known_ones(simulator):
    result = _bessai("probe", "--tag", "socc", INVERTER_IP="127.0.0.1",
                     INVERTER_PORT=str(simulator))
    assert result.returncode == 2
    assert "no tag 'socc'" in result.stderr
    assert "soc," in result.stderr


def test_probe_of_a_closed_port_fails_with_a_connection_hint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    result = _bessai("probe", "--timeout-s", "15", INVERTER_IP="127.0.0.1", INVERTER_PORT=str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot connect to the inverter at 127.0.0.1:{port}")
    assert "hint: check INVERTER_IP / INVERTER_PORT" in result.stderr
