"""``bessai-sim``: run the simulated inverter as a Modbus TCP server until SIGINT/SIGTERM.

The job: parse flags into a :class:`~bessai.sim.Simulator` and its :class:`~bessai.sim.Faults`,
serve on ``--host:--port`` on the real clock, log one logfmt line per client event, and exit 0
on SIGINT or SIGTERM (2 on bad arguments, 1 when the port cannot be bound or the profile not
loaded, with a line saying what to do). At run time, SIGUSR1 drops every client connection and
SIGUSR2 toggles the "silent" fault, for chaos drills against a running gateway.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from bessai.device.errors import ProfileError
from bessai.device.profile import Profile
from bessai.sim.faults import Faults
from bessai.sim.logfmt import log
from bessai.sim.simulator import DEFAULT_PROFILE, Simulator


def _unit_list(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write unit ids like 1,2") from None
    if not units or any(not 0 <= u <= 255 for u in units) or len(set(units)) != len(units):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct unit ids 0..255, e.g. 1,2")
    return units


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bessai-sim",
        description="Simulated Huawei SUN2000 + LUNA2000 (or any profile's device) on Modbus TCP.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5020,
                   help="TCP port 0-65535, 0 = any free (default 5020)")
    p.add_argument("--profile", default=str(DEFAULT_PROFILE), help="device profile JSON")
    p.add_argument("--unit-id", type=int, default=None,
                   help="Modbus unit id 0-255 (default: profile's)")
    p.add_argument(
        "--sunspec",
        metavar="MODELS",
        help="serve a SunSpec map of these models instead of --profile (pysunspec2's "
        "definitions), e.g. 1,103,124,802; model 124 dispatches with its revert timer",
    )
    p.add_argument("--sunspec-base", type=int, default=40000, choices=[0, 40000, 50000],
                   help="SunSpec base address (40000)")
    p.add_argument(
        "--units",
        type=_unit_list,
        default=(),
        metavar="ID,ID",
        help="serve several unit ids on one port, each its own device (a SmartLogger or SDongle "
        "in front of several inverters), e.g. --units 1,2",
    )
    p.add_argument("--soc", type=float, default=50.0, help="initial state of charge, 0-100 %% (50)")
    p.add_argument("--temp", type=float, default=25.0,
                   help="initial battery temperature, -20 to 60 °C (25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the PV and load curves (0)")
    p.add_argument("--start-hour", type=float, default=12.0,
                   help="simulated time of day, 0-24 h (12.0)")
    p.add_argument(
        "--framer",
        choices=["socket", "rtu"],
        default="socket",
        help="frames on TCP: socket (Modbus TCP, default) or rtu (RTU over TCP, like an "
        "RS485-to-Ethernet converter)",
    )
    p.add_argument(
        "--serial",
        metavar="PORT",
        help="serve RTU on this serial port instead of TCP (e.g. /dev/ttyUSB1, or a pty "
        "/dev/pts/N from `socat -d -d pty,raw,echo=0 pty,raw,echo=0`)",
    )
    p.add_argument("--baudrate", type=int, default=9600, help="serial baud rate (9600)")
    p.add_argument("--parity", choices=["N", "E", "O"], default="N", help="serial parity (N)")
    p.add_argument("--stopbits", type=int, choices=[1, 2], default=1, help="stop bits (1)")
    clients = p.add_mutually_exclusive_group()
    clients.add_argument(
        "--multi-client",
        action="store_true",
        help="accept several clients at once (Huawei accepts one: a new one closes the old)",
    )
    clients.add_argument(
        "--single-client",
        action="store_true",
        help="behave like an SDongle: a new connection closes the older one (the default)",
    )
    faults = p.add_argument_group("faults")
    faults.add_argument("--busy", action="store_true", help="answer every request with 0x06")
    faults.add_argument("--delay", type=float, default=0.0, metavar="S", help="answer after S s")
    faults.add_argument("--silent", action="store_true", help="never answer (clients time out)")
    faults.add_argument(
        "--drop-every", type=float, default=0.0, metavar="S", help="close connections every S s"
    )
    faults.add_argument("--device-fault", action="store_true", help="report fault shutdown")
    faults.add_argument(
        "--busy-after-connect",
        type=float,
        default=0.0,
        metavar="S",
        help="answer 0x06 to requests sent within S s of connecting (Huawei: ~1 s)",
    )
    faults.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="TAG=VALUE",
        help="report VALUE for TAG whatever the model says (repeatable), e.g. battery_temp=46",
    )
    faults.add_argument(
        "--invalid",
        action="append",
        default=[],
        metavar="TAG",
        help="TAG reads as its invalid sentinel (repeatable), e.g. soc",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


async def _serve(
    sim: Simulator, host: str, port: int, drop_every_s: float,
    serial: tuple[str, int, str, int] | None = None,
) -> None:
    with trio.open_signal_receiver(
        signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2
    ) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            if serial is not None:
                await nursery.start(sim.serve_serial, *serial)
            else:
                await nursery.start(sim.serve_tcp, host, port)
            if drop_every_s > 0:
                nursery.start_soon(_drop_every, sim, drop_every_s)
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    sim.drop_connections()
                    continue
                if signum == signal.SIGUSR2:
                    sim.faults.silent = not sim.faults.silent
                    log(logging.INFO, "SIM_FAULT", silent=sim.faults.silent)
                    continue
                log(logging.INFO, "SIM_STOPPING", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


async def _drop_every(sim: Simulator, interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        sim.drop_connections()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    pinned: dict[str, float] = {}
    for item in args.pin:
        name, sep, value = item.partition("=")
        try:
            pinned[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            parser.error(f"--pin {item!r}: write TAG=VALUE, e.g. --pin battery_temp=46")
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    faults = Faults(
        busy=args.busy,
        delay_s=args.delay,
        silent=args.silent,
        device_fault=args.device_fault,
        busy_after_connect_s=args.busy_after_connect,
        pinned=pinned,
        invalid_tags=set(args.invalid),
    )
    profile: Profile | str = args.profile
    constants: dict[str, float | int | str] = {}
    if args.sunspec:
        from bessai.sim.sunspec import parse_models, serving_profile
        from bessai.sunspec.models import UnknownModel

        try:
            profile, constants = serving_profile(parse_models(args.sunspec),
                                                 base=args.sunspec_base,
                                                 unit_id=args.unit_id or 1)
        except (ValueError, UnknownModel) as exc:
            parser.error(str(exc))
    try:
        sim = Simulator(
            profile,
            soc_pct=args.soc,
            temp_c=args.temp,
            seed=args.seed,
            unit_id=args.unit_id,
            units=args.units,
            single_client=not args.multi_client,
            framer="rtu" if args.serial else args.framer,
            start_hour=args.start_hour,
            faults=faults,
        )
    except ProfileError as exc:
        log(
            logging.ERROR,
            "SIM_PROFILE_ERROR",
            profile=args.profile,
            error=str(exc),
            hint="check --profile points at a valid device profile JSON",
        )
        return 1
    if args.sunspec:
        from bessai.sim.sunspec import configure

        configure(sim, constants)
    unknown = sorted((set(pinned) | set(args.invalid)) - set(sim.profile.tags))
    if unknown:
        parser.error(
            f"--pin/--invalid name unknown tag(s) {', '.join(unknown)}; the profile has: "
            + ", ".join(sorted(sim.profile.tags))
        )
    rc = 0
    try:
        serial = (
            (args.serial, args.baudrate, args.parity, args.stopbits) if args.serial else None
        )
        trio.run(_serve, sim, args.host, args.port, args.drop_every, serial)
    except* OSError as group:
        log(
            logging.ERROR,
            "SIM_BIND_ERROR",
            host=args.host,
            port=args.port,
            error=str(group.exceptions[0]),
            hint="pick a free port with --port (0 = any) or stop what holds it",
        )
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
