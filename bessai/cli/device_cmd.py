"""``bessai probe``: the runbook's Modbus connectivity check — connect, read one tag, print it.

Prints ``SOC: 51.2 %`` and exits 0, or names what failed (connection, a Modbus exception code,
a timeout, an unknown tag) with a hint and exits 1. The address comes from the settings (the
first device, or ``--device ID``) unless ``--host/--port/--unit-id`` override it; with ``--host``
the settings may be incomplete (useful before ``config/.env`` is written).

Note: a Huawei inverter accepts one Modbus client; a probe while the gateway runs takes the
connection over for a moment and the gateway logs DEVICE_LINK_DOWN / DEVICE_LINK_UP.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import trio

from bessai.cli._common import load_settings
from bessai.cli._lazy import has_in_mro, load
from bessai.errors import BessaiError, ConfigError, OperationFailedError
from bessai.settings import DEFAULT_PROFILE, DeviceSpec, SettingsError

_UNIT_HINT = "check MODBUS_UNIT_ID (Huawei: 0 direct, 1 via SDongle) and the profile's addresses"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "probe",
        parents=[common],
        help="connect to the inverter over Modbus TCP and read one tag",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tag", default="soc", help="tag to read (default soc)")
    parser.add_argument("--device", metavar="ID", help="device id from DEVICES (default: first)")
    parser.add_argument("--host", help="inverter address (overrides the settings)")
    parser.add_argument("--port", type=int,
                        help="Modbus TCP port 1-65535 (Huawei: 502 or 6607; overrides the "
                        "settings)")
    parser.add_argument("--unit-id", type=int,
                        help="Modbus unit id 0-255 (Huawei: 0 direct, 1 via SDongle; overrides the "
                        "settings)")
    parser.add_argument("--profile", type=Path, help="device profile JSON (overrides settings)")
    parser.add_argument(
        "--timeout-s", type=float, default=20.0,
        help="give up after this many seconds, > 0 (default 20: Huawei replies slowly)",
    )
    parser.set_defaults(func=run)


def _target(args: argparse.Namespace) -> DeviceSpec:
    try:
        settings = load_settings(args)
    except SettingsError:
        if args.host is None:
            raise
        base = DeviceSpec("probe", args.host, 502, 1, Path(DEFAULT_PROFILE))
    else:
        base = settings.device(args.device) if args.device else settings.devices[0]
    return DeviceSpec(
        base.id,
        args.host or base.host,
        args.port if args.port is not None else base.port,
        args.unit_id if args.unit_id is not None else base.unit_id,
        args.profile or base.profile,
    )


def _format(tag: str, result: Any, unit: str | None) -> str:
    """``SOC: 51.2 %``; a reading the device marks invalid says so, with the reason if known."""
    value = getattr(result, "value", result)
    if getattr(result, "valid", True) is False or value is None:
        reason = getattr(result, "reason", None) or "the device returned its 'invalid' marker"
        return f"{tag.upper()}: invalid ({reason})"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{tag.upper()}: {text}" + (f" {unit}" if unit else "")


def _unit_of(driver: Any, tag: str) -> str | None:
    profile = getattr(driver, "profile", None)
    tags = getattr(profile, "tags", None) or {}
    return getattr(tags.get(tag), "unit", None)


def _explain(exc: BaseException, target: DeviceSpec, tag: str) -> BessaiError:
    where = f"{target.host}:{target.port} (unit {target.unit_id})"
    if has_in_mro(exc, "ModbusReadError"):
        return OperationFailedError(f"the inverter at {where} refused to read {tag!r}: {exc}",
                                    hint=_UNIT_HINT)
    if has_in_mro(exc, "ProfileError"):
        return ConfigError(f"{exc}", hint="fix the profile; `bessai profile validate PATH` "
                           "lists every problem")
    if isinstance(exc, KeyError):
        return ConfigError(f"{exc.args[0] if exc.args else exc}",
                           hint="pick a tag from the profile (`bessai profile plan PATH`)")
    if isinstance(exc, TimeoutError) or has_in_mro(exc, "ModbusTimeout"):
        return OperationFailedError(f"no answer from the inverter at {where}: {exc}",
                                    hint="Huawei replies slowly (up to 10 s); check the network "
                                    "path and " + _UNIT_HINT)
    if isinstance(exc, OSError):  # ConnectionError and the device's DeviceConnectionError
        return OperationFailedError(
            f"cannot connect to the inverter at {target.host}:{target.port}: {exc}",
            hint="check INVERTER_IP / INVERTER_PORT (Huawei: 502 or 6607), that Modbus TCP is "
            "enabled on the inverter, and `ping` it from this host",
        )
    return OperationFailedError(f"probe failed: {type(exc).__name__}: {exc}",
                                hint="run again with --debug and see ops/RUNBOOK.md")


async def _probe(driver_cls: Any, target: DeviceSpec, tag: str, timeout_s: float) -> str:
    driver = driver_cls(str(target.profile), host=target.host, port=target.port,
                        unit_id=target.unit_id)
    with trio.fail_after(timeout_s):
        try:
            await driver.connect()
            # read_reading keeps the reason when the value is invalid; read_tag is the
            # documented minimum.
            read = getattr(driver, "read_reading", None) or driver.read_tag
            result = await read(tag)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await driver.aclose()
    return _format(tag, result, _unit_of(driver, tag))


def run(args: argparse.Namespace) -> int:
    target = _target(args)
    driver_cls = load("bessai.device.driver", "UniversalDriver", command="probe")
    try:
        line = trio.run(_probe, driver_cls, target, args.tag, args.timeout_s)
    except trio.TooSlowError:
        raise OperationFailedError(
            f"no answer from {target.host}:{target.port} within {args.timeout_s:g} s",
            hint="check the network path and " + _UNIT_HINT,
        ) from None
    except BessaiError:
        raise
    except Exception as exc:
        raise _explain(exc, target, args.tag) from exc
    print(line)
    return 0
