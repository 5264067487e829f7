"""MODBUS_TRANSPORT, SERIAL_* and the DEVICES syntax of each transport (check-config's rules)."""

from __future__ import annotations

import pytest

from bessai.control.connections import connections_for, distinct
from bessai.device import load_profile
from bessai.device.framing import MbapFraming, RtuFraming
from bessai.settings import SettingsError, get_settings

BASE = {"SITE_ID": "site1"}


def load(**env: str):
    return get_settings({**BASE, **env}, env_file=None)


def test_devices_lists_each_transport_and_check_config_prints_them_back():
    s = load(DEVICES="inv1@192.168.1.50:502/1,inv2@192.168.1.50:502/2,"
                     "inv3@rtu-over-tcp:192.168.1.60:4001/3,inv4@serial:/dev/ttyUSB0/1,"
                     "inv5@serial:/dev/ttyUSB0/2",
             SERIAL_BAUDRATE="19200", SERIAL_PARITY="E")
    assert [str(d) for d in s.devices] == [
        "inv1@192.168.1.50:502/1", "inv2@192.168.1.50:502/2",
        "inv3@rtu-over-tcp:192.168.1.60:4001/3", "inv4@serial:/dev/ttyUSB0/1",
        "inv5@serial:/dev/ttyUSB0/2"]
    serial = s.device("inv5")
    assert (serial.transport, serial.host, serial.baudrate, serial.parity, serial.stopbits) == (
        "serial", "/dev/ttyUSB0", 19200, "E", 1)


def test_one_connection_per_endpoint_with_its_transports_framing():
    s = load(DEVICES="inv1@192.168.1.50:502/1,inv2@192.168.1.50:502/2,"
                     "inv3@rtu-over-tcp:192.168.1.60:4001/3,inv4@serial:/dev/ttyUSB0/1,"
                     "inv5@serial:/dev/ttyUSB0/2")
    profile = load_profile("profiles/huawei_sun2000.json")
    by_device = connections_for(s.devices, lambda d: profile, site_id="site1")
    connections = distinct(by_device)
    assert [c.peer for c in connections] == ["192.168.1.50:502", "rtu-over-tcp:192.168.1.60:4001",
                                             "serial:/dev/ttyUSB0"]
    assert [type(c.framing) for c in connections] == [MbapFraming, RtuFraming, RtuFraming]
    assert connections[1].framing.baudrate is None  # no line timing through a converter
    assert connections[2].framing.baudrate == 9600
    assert connections[2].units == {1: "inv4", 2: "inv5"}


def test_a_single_serial_device_from_modbus_transport_and_serial_port():
    s = load(MODBUS_TRANSPORT="serial", SERIAL_PORT="/dev/ttyUSB0", MODBUS_UNIT_ID="1")
    assert [str(d) for d in s.devices] == ["inv1@serial:/dev/ttyUSB0/1"]
    assert s.devices[0].baudrate == 9600  # Huawei's COM port: 9600 8N1


def test_transport_mistakes_are_all_reported_at_once_naming_the_variable():
    with pytest.raises(SettingsError) as info:
        load(MODBUS_TRANSPORT="serial", SERIAL_BAUDRATE="fast", SERIAL_PARITY="X",
             SERIAL_STOPBITS="3", INVERTER_IP="192.168.1.50")
    keys = [p.key for p in info.value.problems]
    assert keys == ["SERIAL_BAUDRATE", "SERIAL_PARITY", "SERIAL_STOPBITS", "SERIAL_PORT",
                    "INVERTER_IP"]
    text = str(info.value)
    assert "SERIAL_PORT is not set — MODBUS_TRANSPORT=serial needs the port" in text
    assert "SERIAL_PARITY='X' is not one of N, E, O" in text


def test_serial_port_without_the_serial_transport_is_a_mistake():
    with pytest.raises(SettingsError, match="SERIAL_PORT='/dev/ttyUSB0' is set but "
                                            "MODBUS_TRANSPORT=tcp"):
        load(INVERTER_IP="192.168.1.50", SERIAL_PORT="/dev/ttyUSB0")


@pytest.mark.parametrize(("devices", "message"), [
    ("inv1@serial:ttyUSB0/1", "is not ID@[TRANSPORT:]HOST"),
    ("inv1@modbus:192.168.1.50/1", "is not ID@[TRANSPORT:]HOST"),
    ("inv1@serial:/dev/ttyUSB0/1,inv2@serial:/dev/ttyUSB0/1", "lists /dev/ttyUSB0/1 twice"),
    ("inv1@192.168.1.50:4001/1,inv2@rtu-over-tcp:192.168.1.50:4001/2",
     "speaks rtu-over-tcp and tcp to 192.168.1.50:4001"),
])
def test_bad_transport_entries_say_what_is_wrong(devices, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(DEVICES=devices)


def test_modbus_transport_serial_needs_serial_entries_in_devices():
    with pytest.raises(SettingsError, match="MODBUS_TRANSPORT=serial needs serial entries"):
        load(MODBUS_TRANSPORT="serial", DEVICES="inv1@192.168.1.50/1")
