"""Modbus RTU: over TCP and over a serial line (a pseudo-terminal pair), against independent
peers — pymodbus's own servers in a subprocess, and ``bessai-sim --serial`` — plus raw bytes on
a pty for the faults a real RS485 line produces (a bad CRC, a frame that stops half-way).

Real clock (ptys and sockets); every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from bessai.clock import trio_wall_clock
from bessai.device import (
    ModbusClient,
    ModbusConnection,
    ModbusReadError,
    UniversalDriver,
    load_profile,
    tcp_stream_factory,
)
from bessai.device.errors import ModbusCrcError, ModbusFrameTruncated
from bessai.device.framing import RtuFraming, frame_gap_s
from bessai.device.serial_port import SerialSettings, serial_stream_factory
from tests.peers.pymodbus_server import PymodbusPeer, config_from_profile

ROOT = Path(__file__).resolve().parents[2]
HUAWEI = load_profile(ROOT / "profiles" / "huawei_sun2000.json")
VALUES = {"soc": 65.3, "battery_temp": 24.7, "battery_power": -1500, "device_status": 0x0200}


@pytest.fixture
def pty_pair(tmp_path):
    """Two linked pseudo-terminals from socat (what a null-modem RS485 pair looks like)."""
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed (apt-get install socat)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("socat did not create the pty pair")
        time.sleep(0.05)
    yield str(a), str(b)
    proc.kill()
    proc.wait(timeout=10)


def rtu_connection(factory, baudrate: int | None = None) -> ModbusConnection:
    return ModbusConnection(factory, peer="rtu", framing=RtuFraming(baudrate), timeout_s=5.0,
                            post_connect_delay_s=0.0, cooldown_s=0.0)


async def test_rtu_over_tcp_reads_and_writes_against_pymodbus_rtu_framer():
    config = config_from_profile(HUAWEI, VALUES, framer="rtu", busy=[37022])
    with PymodbusPeer(config) as peer:
        connection = rtu_connection(tcp_stream_factory("127.0.0.1", peer.port))
        driver = UniversalDriver(HUAWEI, connection=connection, site_id="s1",
                                 wall_clock=trio_wall_clock())
        with trio.fail_after(30):
            assert await driver.read_tag("soc") == pytest.approx(65.3)
            assert await driver.read_tag("battery_power") == -1500
            await driver.write_tag("forcible_charge_power", 1200)
            assert await driver.read_tag("forcible_charge_power") == 1200
            with pytest.raises(ModbusReadError) as info:  # an exception reply, RTU-framed
                await driver.read_tag("battery_temp")
            assert info.value.code == 0x06
            assert await driver.read_tag("soc") == pytest.approx(65.3)  # the line is still fine
        await connection.aclose()


async def test_rtu_on_a_serial_line_against_pymodbus_serial_server(pty_pair):
    ours, theirs = pty_pair
    config = config_from_profile(HUAWEI, VALUES, serial=theirs, baudrate=9600)
    with PymodbusPeer(config):
        settings = SerialSettings(ours, baudrate=9600)
        connection = rtu_connection(serial_stream_factory(settings), baudrate=9600)
        driver = UniversalDriver(HUAWEI, connection=connection, site_id="s1",
                                 wall_clock=trio_wall_clock())
        with trio.fail_after(30):
            snapshot = await driver.read_all("fast")
            assert snapshot.value("soc") == pytest.approx(65.3)
            assert snapshot.value("device_status") == 0x0200
            await driver.write_tag("forcible_period", 1)
            assert await driver.read_tag("forcible_period") == 1
        await connection.aclose()


async def test_rtu_on_a_serial_line_against_bessai_sim_serial(pty_pair):
    ours, theirs = pty_pair
    sim = subprocess.Popen([sys.executable, "-m", "bessai.sim", "--serial", theirs,
                            "--units", "1,2", "--soc", "42"],
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = sim.stderr.readline()
        assert "SIM_LISTENING" in line, line
        connection = rtu_connection(serial_stream_factory(SerialSettings(ours)), baudrate=9600)
        drivers = [UniversalDriver(HUAWEI, unit_id=unit, connection=connection, site_id="s1",
                                   device_id=f"inv{unit}", wall_clock=trio_wall_clock())
                   for unit in (1, 2)]
        with trio.fail_after(30):
            for driver in drivers:  # two units on one RS485 line
                assert await driver.read_tag("soc") == pytest.approx(42, abs=0.5)
            await drivers[1].write_tag("forcible_period", 2)
            assert await drivers[1].read_tag("forcible_period") == 2
            assert await drivers[0].read_tag("forcible_period") != 2  # its own registers
        await connection.aclose()
    finally:
        sim.kill()
        sim.wait(timeout=10)


async def _raw_device(master_fd: int, reply: bytes, *, then_silent: bool = True) -> None:
    """The device side of an os.openpty pair: read one request, send ``reply`` verbatim."""
    stream = trio.lowlevel.FdStream(master_fd)
    await stream.receive_some(256)
    await stream.send_all(reply)
    if then_silent:
        await trio.sleep_forever()


@pytest.mark.parametrize(("reply", "error", "match"), [
    # unit 1, fc 3, 2 bytes, 0x0291, CRC flipped
    (bytes.fromhex("0103020291") + b"\x00\x00", ModbusCrcError, "fails its CRC"),
    # the same reply cut after 4 of its 7 bytes, then silence
    (bytes.fromhex("01030202"), ModbusFrameTruncated, "stopped after 4 of 7 bytes"),
])
async def test_crc_errors_and_truncated_frames_are_typed_errors(reply, error, match):
    master, slave = os.openpty()
    path = os.ttyname(slave)
    connection = rtu_connection(serial_stream_factory(SerialSettings(path)), baudrate=9600)
    client = ModbusClient(connection)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raw_device, master, reply)
            with trio.fail_after(5):
                started = trio.current_time()
                with pytest.raises(error, match=match):
                    await client.read_holding_registers(37760, 1)
                assert trio.current_time() - started < connection.timeout_s  # not a timeout
            nursery.cancel_scope.cancel()
    finally:
        await connection.aclose()
        os.close(slave)


def test_rtu_inter_frame_silence_follows_the_spec():
    assert frame_gap_s(9600) == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms
    assert frame_gap_s(19200) == pytest.approx(3.5 * 11 / 19200)
    assert frame_gap_s(115200) == 0.00175  # fixed above 19200 baud
    assert frame_gap_s(None) == 0.0  # RTU over TCP: no line timing


async def test_requests_on_a_serial_line_are_separated_by_the_inter_frame_silence(pty_pair):
    ours, theirs = pty_pair
    config = config_from_profile(HUAWEI, VALUES, serial=theirs, baudrate=9600)
    with PymodbusPeer(config):
        framing = RtuFraming(9600)
        sent: list[float] = []
        received: list[float] = []
        original_sent, original_receive = framing.sent, framing.receive

        def note_sent(frame: bytes) -> None:
            sent.append(trio.current_time())
            original_sent(frame)

        async def note_receive(stream, buf=None):
            data = await original_receive(stream, buf)
            received.append(trio.current_time())
            return data

        framing.sent = note_sent  # type: ignore[method-assign]
        framing.receive = note_receive  # type: ignore[method-assign]
        connection = ModbusConnection(serial_stream_factory(SerialSettings(ours)), peer="rtu",
                                      framing=framing, timeout_s=5.0, post_connect_delay_s=0.0,
                                      cooldown_s=0.0)
        client = ModbusClient(connection)
        with trio.fail_after(30):
            for _ in range(5):
                await client.read_holding_registers(37760, 1)
        await connection.aclose()
    # every request after the first starts 3.5 characters (4 ms at 9600) after the last byte
    # of the reply before it at the earliest (a pty delivers bytes without line timing)
    for send_at in sent[1:]:
        last_byte = max(t for t in received if t < send_at)
        assert send_at - last_byte >= frame_gap_s(9600) - 1e-4
