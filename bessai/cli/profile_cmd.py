"""``bessai profile validate PATH`` / ``plan PATH`` / ``discover --host H --out PATH``.

``validate`` loads a device profile and reports every problem at once (exit 0 or 2). ``plan``
prints how the gateway will read the device: the coalesced Modbus requests per poll class.
``discover`` finds a SunSpec device's model chain and writes its profile
(:mod:`bessai.sunspec.cli`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bessai.cli._lazy import has_in_mro, load
from bessai.errors import ConfigError

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("profile", parents=[common], help="check or explain a profile")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    validate = actions.add_parser("validate", parents=[common],
                                  help="check a profile, listing every problem")
    validate.add_argument("path", type=Path)
    validate.set_defaults(func=run_validate)
    plan = actions.add_parser("plan", parents=[common],
                              help="show the Modbus reads the gateway will make")
    plan.add_argument("path", type=Path)
    plan.set_defaults(func=run_plan)
    discover = actions.add_parser("discover", parents=[common],
                                  help="find a SunSpec device's models and write its profile")
    discover.add_argument("--host", required=True, help="the device's address")
    discover.add_argument("--port", type=int, default=502, help="Modbus TCP port (default 502)")
    discover.add_argument("--unit-id", type=int, default=1, help="Modbus unit id (default 1)")
    discover.add_argument("--transport", choices=("tcp", "rtu-over-tcp"), default="tcp",
                          help="Modbus TCP, or RTU frames through an RS485-to-Ethernet converter")
    discover.add_argument("--timeout-s", type=float, default=5.0,
                          help="per-request timeout (default 5)")
    discover.add_argument("--out", type=Path, required=True, help="profile file to write")
    discover.set_defaults(func=run_discover)


def _load(path: Path, command: str) -> Any:
    load_profile = load("bessai.device.profile", "load_profile", command=command)
    try:
        return load_profile(path)
    except Exception as exc:
        if has_in_mro(exc, "ProfileError"):
            raise ConfigError(str(exc), hint="fix the profile; the schema is "
                              "profiles/profile.schema.json") from exc
        raise


def run_validate(args: argparse.Namespace) -> int:
    profile = _load(args.path, "profile validate")
    tags = getattr(profile, "tags", {})
    print(f"profile OK: {args.path} ({len(tags)} tags)")
    return 0


def run_discover(args: argparse.Namespace) -> int:
    if not 0 <= args.unit_id <= 255 or not 1 <= args.port <= 65535:
        raise ConfigError(f"--unit-id {args.unit_id} / --port {args.port} out of range",
                          hint="unit id 0..255, port 1..65535")
    run = load("bessai.sunspec.cli", "run_discover", command="profile discover")
    return int(run(args.host, args.port, args.unit_id, args.out, transport=args.transport,
                   timeout_s=args.timeout_s))


def run_plan(args: argparse.Namespace) -> int:
    profile = _load(args.path, "profile plan")
    plan = load("bessai.device.planner", "plan", command="profile plan")
    format_plan = load("bessai.device.planner", "format_plan", command="profile plan")
    print(format_plan(plan(profile)))
    return 0
