"""Device I/O: profiles, the register codec, the read planner, the Trio Modbus client and driver.

Public names are re-exported here; the submodules are one job each (``profile``, ``codec``,
``planner``, ``modbus``, ``driver``, ``errors``).
"""

from bessai.device.codec import decode, encode
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
from bessai.device.modbus import Backoff, ModbusClient, StreamFactory, tcp_stream_factory
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
    "Access",
    "Backoff",
    "Block",
    "CodecError",
    "ConnectionDefaults",
    "DeviceConnectionError",
    "DeviceError",
    "DispatchSpec",
    "ModbusClient",
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
    "tcp_stream_factory",
]
