"""Device I/O: profiles, the register codec, the read planner, the Trio Modbus client and driver.

Public names are re-exported here; the submodules are one job each (``profile``, ``codec``,
``planner``, ``framing``, ``connection``, ``modbus``, ``driver``, ``errors``).
"""

from bessai.device.codec import decode, encode
from bessai.device.connection import (
    RECONNECT_BACKOFF,
    ModbusConnection,
    reconnect_cap_s,
)
from bessai.device.driver import UniversalDriver
from bessai.device.errors import (
    CodecError,
    DeviceConnectionError,
    DeviceError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusProtocolError,
    ModbusReadError,
    ModbusTimeout,
    ModbusWriteError,
    ProfileError,
    ProfileProblem,
    TagWriteRefused,
)
from bessai.device.modbus import ModbusClient, StreamFactory, tcp_stream_factory
from bessai.device.planner import ReadRequest, format_plan, plan
from bessai.device.profile import (
    Access,
    Block,
    ConnectionDefaults,
    DispatchSpec,
    Poll,
    Profile,
    RegisterType,
    SafetyFeeds,
    Table,
    Tag,
    WatchdogSpec,
    load_profile,
)

__all__ = [
    "RECONNECT_BACKOFF",
    "Access",
    "Block",
    "CodecError",
    "ConnectionDefaults",
    "DeviceConnectionError",
    "DeviceError",
    "DispatchSpec",
    "ModbusClient",
    "ModbusConnection",
    "ModbusError",
    "ModbusExceptionResponse",
    "ModbusProtocolError",
    "ModbusReadError",
    "ModbusTimeout",
    "ModbusWriteError",
    "Poll",
    "Profile",
    "ProfileError",
    "ProfileProblem",
    "ReadRequest",
    "RegisterType",
    "SafetyFeeds",
    "StreamFactory",
    "Table",
    "Tag",
    "TagWriteRefused",
    "UniversalDriver",
    "WatchdogSpec",
    "decode",
    "encode",
    "format_plan",
    "load_profile",
    "plan",
    "reconnect_cap_s",
    "tcp_stream_factory",
]
