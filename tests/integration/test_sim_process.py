"""``bessai-sim`` as a process: starts, answers pymodbus's client, exits 0 on SIGTERM/SIGINT.

Real clock and real processes, kept short (a few seconds); a signal's effect is awaited by the
line the simulator logs for it, not by a sleep.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from tests.e2e.procs import PYTHON, ROOT, Proc, base_env, sim_port, start_sim

pytestmark = pytest.mark.e2e


@contextmanager
def running_sim(*args: str) -> Iterator[tuple[Proc, int]]:
    """``python -m bessai.sim --port 0 ARGS`` and its port; at the end it must exit 0 on
    SIGTERM (unless the test ended it), and it is killed whatever happened."""
    proc = start_sim(0, *args)
    port = sim_port(proc)
    try:
        yield proc, port
        if proc.popen.poll() is None:
            proc.send(signal.SIGTERM)
            assert proc.wait(10) == 0, proc.output()[-2000:]
    finally:
        proc.kill()


def run_sim_to_exit(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bessai.sim ARGS`` that must exit by itself (a refused start)."""
    return subprocess.run([PYTHON, "-m", "bessai.sim", *args], cwd=ROOT, env=base_env({}),
                          capture_output=True, text=True, timeout=20, check=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_bessai_sim_process_answers_pymodbus_and_exits_0_on_signal(sig):
    with running_sim("--soc", "42.5", "--unit-id", "1") as (proc, port):
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        assert client.connect()
        rr = client.read_holding_registers(37760, count=1, device_id=1)
        assert not rr.isError()
        assert 41.0 <= rr.registers[0] / 10 <= 44.0  # noon sun may have moved it a little
        assert not client.write_register(49999, 1, device_id=1).isError()
        client.close()
        proc.send(sig)
        assert proc.wait(10) == 0
        assert proc.matching(r"event=client_connected")
        assert proc.matching(r"event=SIM_STOPPING")


def test_bessai_sim_busy_flag_answers_exception_0x06():
    with running_sim("--busy") as (_, port):
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert client.connect()
        rr = client.read_holding_registers(37760, count=1, device_id=1)
        assert rr.isError()
        assert rr.exception_code == 0x06
        client.close()


def test_bessai_sim_exits_1_with_a_hint_when_the_port_is_taken():
    with running_sim() as (_, port):
        second = run_sim_to_exit("--port", str(port))
        assert second.returncode == 1
        assert "event=SIM_BIND_ERROR" in second.stderr
        assert "--port" in second.stderr


def test_bessai_sim_exits_1_naming_a_broken_profile(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1}')
    result = run_sim_to_exit("--port", "0", "--profile", str(broken))
    assert result.returncode == 1
    assert "event=SIM_PROFILE_ERROR" in result.stderr
    assert "broken.json" in result.stderr


def test_sigusr1_drops_clients_and_sigusr2_toggles_silent():
    with running_sim() as (proc, port):
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        assert client.connect()
        assert not client.read_holding_registers(37760, count=1, device_id=1).isError()
        mark = proc.mark()
        proc.send(signal.SIGUSR2)  # silent on
        proc.wait_for(r"event=SIM_FAULT silent=True", 10, after=mark)
        with pytest.raises(ModbusIOException):  # no answer within the timeout
            client.read_holding_registers(37760, count=1, device_id=1)
        client.close()
        mark = proc.mark()
        proc.send(signal.SIGUSR1)  # drop (nobody connected: a no-op, must not crash)
        proc.send(signal.SIGUSR2)  # silent off: handled after the drop (signals keep order)
        proc.wait_for(r"event=SIM_FAULT silent=False", 10, after=mark)
        again = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert again.connect()
        assert not again.read_holding_registers(37760, count=1, device_id=1).isError()
        mark = proc.mark()
        proc.send(signal.SIGUSR1)
        proc.wait_for(r"event=client_dropped .*reason=fault_drop", 10, after=mark)
        again.close()


def test_pin_and_invalid_flags_shape_what_the_process_reports():
    with running_sim("--pin", "battery_temp=46.5", "--invalid", "soc") as (_, port):
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert client.connect()
        assert client.read_holding_registers(37022, count=1, device_id=1).registers == [465]
        assert client.read_holding_registers(37760, count=1, device_id=1).registers == [0xFFFF]
        client.close()


def test_pin_of_an_unknown_tag_exits_2_listing_the_known_ones():
    result = run_sim_to_exit("--port", "0", "--pin", "sco=4")
    assert result.returncode == 2
    assert "unknown tag(s) sco" in result.stderr
    assert "soc" in result.stderr
