"""``bessai probe``: the runbook's Modbus connectivity check — connect, read one tag, print it.

Prints ``SOC: 51.2 %`` and exits 0, or names what failed (connection, a Modbus exception code,
a timeout, an unknown tag) with a hint and exits 1. The address comes from the settings (the
first device, or ``--device ID``) unless ``--host/--port/--unit-id`` override it; with ``--host``
the settings may be incomplete (useful before ``config/.env`` is written).

Safe beside a running gateway: a Huawei inverter (or its SDongle) keeps only one Modbus client,
so a second connection would take the gateway's over (DEVICE_LINK_DOWN, stale data, a SAFETY_BLOCK
that pages someone). When the gateway's status endpoint (STATUS_BIND) answers, probe prints the
value from the gateway's latest snapshot instead and says so; ``--direct`` opens a connection of
its own anyway, after a warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from bessai.cli._common import load_settings
from bessai.cli._lazy import has_in_mro, load
from bessai.errors import BessaiError, ConfigError, OperationFailedError
from bessai.settings import DEFAULT_PROFILE, DeviceSpec, SettingsError

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands

_UNIT_HINT = "check MODBUS_UNIT_ID (Huawei: 0 direct, 1 via SDongle) and the profile's addresses"


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
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
    parser.add_argument(
        "--direct", action="store_true",
        help="connect to the inverter even when the gateway runs (takes the device's only "
        "Modbus connection from the gateway for a moment)",
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
    import attrs

    return attrs.evolve(
        base,
        host=args.host or base.host,
        port=args.port if args.port is not None else base.port,
        unit_id=args.unit_id if args.unit_id is not None else base.unit_id,
        profile=args.profile or base.profile,
        transport="tcp" if args.host else base.transport,
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
    from bessai.control.connections import connections_for
    from bessai.device import load_profile

    profile = load_profile(target.profile)
    connection = connections_for([target], lambda _: profile, site_id="probe")[target.id]
    driver = driver_cls(profile, unit_id=target.unit_id, connection=connection,
                        device_id=target.id)
    with trio.fail_after(timeout_s):
        try:
            await driver.connect()
            # read_reading keeps the reason when the value is invalid; read_tag is the
            # documented minimum.
            read = getattr(driver, "read_reading", None) or driver.read_tag
            result = await read(tag)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await connection.aclose()
    return _format(tag, result, _unit_of(driver, tag))


_STATUS_TIMEOUT_S = 2.0


def _gateway_status(args: argparse.Namespace) -> tuple[str, dict[str, Any]] | None:
    """The running gateway's status document and its URL, or None when nothing answers."""
    import httpx

    from bessai.cli.health_cmd import health_url

    try:
        url = health_url(getattr(args, "env_file", None)).removesuffix("/healthz") + "/status"
    except ConfigError:
        return None
    try:
        answer = httpx.get(url, timeout=_STATUS_TIMEOUT_S, trust_env=False)
        document = answer.json() if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("sites"), dict):
        return None
    return url, document


def _polled(status: dict[str, Any], target: DeviceSpec) -> tuple[str, dict[str, Any]] | None:
    """The gateway's site for ``target``: the same device id and endpoint, or (with
    ``--host``) any device on that endpoint. None: the gateway does not talk to it."""
    from bessai.control.connections import endpoint_key

    endpoint = endpoint_key(target)
    sites = status.get("sites") or {}
    same_id = sites.get(target.id)
    if isinstance(same_id, dict) and same_id.get("connection") in (None, endpoint):
        return target.id, same_id
    for device_id, site in sites.items():
        if isinstance(site, dict) and site.get("connection") == endpoint:
            return str(device_id), site
    return None


def _from_gateway(url: str, status: dict[str, Any], target: DeviceSpec, tag: str) -> str:
    """``SOC: 51.2 %`` from the gateway's latest snapshot of ``target``, with where from.
    The caller checked that the gateway polls it (`_polled`)."""
    from bessai.bounds import clip

    polled = _polled(status, target)
    assert polled is not None
    device_id, site = polled
    link = site.get("link") or {}
    values = site.get("values") or {}
    state = clip(str(link.get("state")), 40)
    if tag not in values:
        known = ", ".join(sorted(clip(str(k), 60) for k in values)) or "none yet"
        raise ConfigError(f"the gateway's snapshot of {device_id} has no tag {tag!r} "
                          f"(link {state}); it has: {known}",
                          hint="pick one of those, or --direct to read the device yourself")
    unit = None
    try:
        from bessai.device import load_profile

        unit = load_profile(target.profile).tags[tag].unit
    except Exception:  # the unit is a nicety; the value is what was asked for
        unit = None
    age = link.get("snapshot_age_s")
    where = (f"from the running gateway at {url}: device {clip(str(device_id), 60)}, link "
             f"{state}" + (f", snapshot {age:g} s old" if isinstance(age, int | float) else ""))
    value = values[tag]
    line = _format(tag, value, unit) if value is not None else f"{tag.upper()}: invalid"
    if state != "up":
        reason = clip(str(link.get("reason")), 300)
        raise OperationFailedError(f"{line} ({where}): the gateway's link to the device is "
                                   f"{state} ({reason})",
                                   hint="see ops/RUNBOOK.md §6.2; --direct opens a connection "
                                   "of its own (and takes the device's only slot)")
    return f"{line} ({where})"


def run(args: argparse.Namespace) -> int:
    target = _target(args)
    if not getattr(args, "direct", False):
        running = _gateway_status(args)
        if running is not None and _polled(running[1], target) is not None:
            print(_from_gateway(*running, target, args.tag))
            return 0
    else:
        import sys

        print("WARNING: --direct opens a Modbus connection of its own; a device that keeps one "
              "client (Huawei, its SDongle) drops the running gateway's connection for a "
              "moment (DEVICE_LINK_DOWN, stale data)", file=sys.stderr)
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
