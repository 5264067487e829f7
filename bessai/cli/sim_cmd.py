"""``bessai sim [ARGS...]``: run the Modbus simulator, exactly like ``bessai-sim ARGS...``.

Everything after ``sim`` goes to bessai-sim untouched (``bessai sim --help`` shows its options).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bessai.cli._lazy import load

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "sim",
        help="run the Modbus simulator (same options as bessai-sim; see `bessai sim --help`)",
        add_help=False,
    )
    # main() hands everything after `sim` to bessai-sim untouched (argparse would reorder it).
    parser.set_defaults(func=run, sim_args=[])
    _ = common


def run(args: argparse.Namespace) -> int:
    sim_main = load("bessai.sim.cli", "main", command="sim")
    return int(sim_main(list(args.sim_args)) or 0)
