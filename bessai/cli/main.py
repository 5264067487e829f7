"""``bessai``: the operator's tool — check the configuration, probe the inverter, check health,
inspect profiles and the spool, send a dispatch command, run the simulator.

Invariants:
- A failure prints ``error: <cause>`` and ``hint: <what to do next>`` on stderr and exits
  non-zero (1 = the check or operation failed, 2 = configuration or usage error, 3 = not in
  this build, 4 = no answer from the peer that would tell, e.g. `bessai health` with no
  gateway listening, 130 = interrupted). A traceback appears only with ``--debug``.
- Command implementations are imported lazily: ``bessai --help`` and ``check-config`` work even
  when a part of the gateway is missing from the build.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Sequence

import structlog

from bessai.cli import (
    command_cmd,
    config_cmd,
    device_cmd,
    health_cmd,
    keys_cmd,
    profile_cmd,
    schedule_cmd,
    sim_cmd,
    spool_cmd,
)
from bessai.config_files import find_env_file
from bessai.errors import EXIT_FAILED, BessaiError
from bessai.settings import DEFAULT_ENV_FILE
from bessai.version import gateway_version

__all__ = ["build_parser", "main"]

_GROUPS = (config_cmd, device_cmd, health_cmd, profile_cmd, spool_cmd, command_cmd, keys_cmd,
           schedule_cmd, sim_cmd)


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    """``--debug`` and ``--env-file``, accepted before or after the command name.

    After the command name their defaults are SUPPRESS, so that an option given before the
    command is not reset by the subcommand's parser.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show the full traceback when a command fails",
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help="settings file read under the environment (must exist; default: $BESSAI_ENV_FILE, "
        f"else ./{DEFAULT_ENV_FILE}, else /etc/bessai/bessai.env, the first found)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bessai",
        description="BESSAI Edge Gateway operator tool. See ops/RUNBOOK.md.",
        parents=[_common_options(top=True)],
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {gateway_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    common = _common_options(top=False)
    for group in _GROUPS:
        group.register(commands, common)
    _plain_help(parser)
    return parser


_RST_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_RST_ROLE = re.compile(r"`([^`\n]+)`")


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Help is read in a terminal, not rendered: the docstrings' RST markup (``x``, `x`) is
    shown as plain text, in every subcommand's description, recursively."""
    parser.description = _plain(parser.description)
    for action in parser._actions:
        action.help = _plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = _plain(choice.help)
            for sub in dict.fromkeys(action.choices.values()):
                _plain_help(sub)


def _plain(text: str | None) -> str | None:
    if not text or text is argparse.SUPPRESS:
        return text
    return _RST_ROLE.sub(r"\1", _RST_LITERAL.sub(r"\1", text))


def _quiet_library_logs(*, debug: bool) -> None:
    """Keep the gateway's own log lines (structlog) out of a command's output.

    A failing command already explains itself with ``error:``/``hint:``; its library lines are
    shown on stderr with ``--debug`` only.
    """
    level = logging.DEBUG if debug else logging.CRITICAL
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    logging.basicConfig(level=logging.DEBUG if debug else logging.CRITICAL, stream=sys.stderr)


def _passthrough_split(argv: list[str]) -> int | None:
    """Index after ``sim`` when it is the command: its arguments go to bessai-sim untouched."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--env-file":
            i += 2
        elif token == "--debug" or token.startswith("--env-file="):
            i += 1
        else:
            return i + 1 if token == "sim" else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = _passthrough_split(argv)
    if passthrough is None:
        args = parser.parse_args(argv)
    else:
        args = parser.parse_args(argv[:passthrough])
        args.sim_args = argv[passthrough:]
    if args.command != "sim":  # bessai-sim sets up its own logging
        _quiet_library_logs(debug=args.debug)
    try:
        choice = find_env_file(args.env_file)  # the one search order (bessai.config_files)
        args.env_file, args.env_choice = choice.env_file, choice
        code = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BessaiError as exc:
        if args.debug:
            traceback.print_exc()
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "hint: run it again with --debug for the traceback, and report it with the output",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
