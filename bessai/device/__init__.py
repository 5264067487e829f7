"""Device I/O: profiles, the register codec, the read planner, the Trio Modbus client and driver.

Public names are re-exported here; the submodules are one job each (``profile``, ``codec``,
``planner``, ``modbus``, ``driver``, ``errors``).
"""

from bessai.device.codec import decode, encode
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
    "Block",
    "CodecError",
    "ConnectionDefaults",
    "DeviceConnectionError",
    "DeviceError",
    "DispatchSpec",
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
    "RegisterType",
    "SafetyFeeds",
    "Table",
    "Tag",
    "TagWriteRefused",
    "WatchdogSpec",
    "decode",
    "encode",
    "load_profile",
]
