"""``bessai-sim`` as a process: starts, answers pymodbus's client, exits 0 on SIGTERM/SIGINT.

Real clock and real processes, kept short (a few seconds).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"event=SIM_LISTENING host=\S+ port=(\d+)")

pytestmark = pytest.mark.e2e


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bessai.sim", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if m := LISTENING.search(line):
            return proc, int(m.group(1))
    proc.kill()
    proc.wait()
    pytest.fail("bessai-sim did not report SIM_LISTENING within 15 s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_bessai_sim_process_answers_pymodbus_and_exits_0_on_signal(sig):
    proc, port = _start("--soc", "42.5", "--unit-id", "1")
    try:
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        assert client.connect()
        rr = client.read_holding_registers(37760, count=1, device_id=1)
        assert not rr.isError()
        assert 41.0 <= rr.registers[0] / 10 <= 44.0  # noon sun may have moved it a little
        assert not client.write_register(49999, 1, device_id=1).isError()
        client.close()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        rest = proc.stderr.read()
        assert "event=client_connected" in rest
        assert "event=SIM_STOPPING" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bessai_sim_busy_flag_answers_exception_0x06():
    proc, port = _start("--busy")
    try:
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert client.connect()
        rr = client.read_holding_registers(37760, count=1, device_id=1)
        assert rr.isError()
        assert rr.exception_code == 0x06
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_bessai_sim_exits_1_with_a_hint_when_the_port_is_taken():
    first, port = _start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "bessai.sim", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert second.returncode == 1
        assert "event=SIM_BIND_ERROR" in second.stderr
        assert "--port" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0


def test_bessai_sim_exits_1_naming_a_broken_profile(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1}')
    result = subprocess.run(
        [sys.executable, "-m", "bessai.sim", "--port", "0", "--profile", str(broken)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert "event=SIM_PROFILE_ERROR" in result.stderr
    assert "broken.json" in result.stderr


def test_sigusr1_drops_clients_and_sigusr2_toggles_silent():
    proc, port = _start()
    try:
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        assert client.connect()
        assert not client.read_holding_registers(37760, count=1, device_id=1).isError()
        proc.send_signal(signal.SIGUSR2)  # silent on
        time.sleep(0.3)
        with pytest.raises(ModbusIOException):  # no answer within the timeout
            client.read_holding_registers(37760, count=1, device_id=1)
        client.close()
        proc.send_signal(signal.SIGUSR2)  # silent off
        proc.send_signal(signal.SIGUSR1)  # drop (nobody connected: a no-op, must not crash)
        time.sleep(0.3)
        again = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert again.connect()
        assert not again.read_holding_registers(37760, count=1, device_id=1).isError()
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        again.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        rest = proc.stderr.read()
        assert "event=SIM_FAULT silent=True" in rest
        assert "reason=fault_drop" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pin_and_invalid_flags_shape_what_the_process_reports():
    proc, port = _start("--pin", "battery_temp=46.5", "--invalid", "soc")
    try:
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert client.connect()
        assert client.read_holding_registers(37022, count=1, device_id=1).registers == [465]
        assert client.read_holding_registers(37760, count=1, device_id=1).registers == [0xFFFF]
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_pin_of_an_unknown_tag_exits_2_listing_the_known_ones():
    result = subprocess.run(
        [sys.executable, "-m", "bessai.sim", "--port", "0", "--pin", "sco=4"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "unknown tag(s) sco" in result.stderr
    assert "soc" in result.stderr
