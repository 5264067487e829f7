"""``bessai profile validate PATH`` / ``bessai profile plan PATH``.

``validate`` loads a device profile and reports every problem at once (exit 0 or 2). ``plan``
prints how the gateway will read the device: the coalesced Modbus requests per poll class.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bessai.cli._lazy import has_in_mro, load
from bessai.errors import ConfigError


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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


def run_plan(args: argparse.Namespace) -> int:
    profile = _load(args.path, "profile plan")
    plan = load("bessai.device.planner", "plan", command="profile plan")
    format_plan = load("bessai.device.planner", "format_plan", command="profile plan")
    print(format_plan(plan(profile)))
    return 0
