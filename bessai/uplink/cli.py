"""Command-line pieces for the lead's ``bessai`` CLI: ``spool stats|export`` and ``command``.

    bessai spool stats  [--spool PATH] [--json]
    bessai spool export [--spool PATH] [--dead-letter] [--out FILE]
    bessai command charge|discharge|stop|auto --site S --device D [--power-w W]
                   [--expires-in-s 300] --project P --topic T [--key-file F]

`add_spool_parser` / `add_command_parser` add the subcommands to an argparse subparsers
object; `run_spool` / `run_command` execute parsed arguments and return an exit code.
The spool commands read the file only (safe while the gateway runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

import trio

from bessai.clock import system_wall_clock
from bessai.model import Action, Command
from bessai.uplink.credentials import Endpoint, credentials_for, make_client
from bessai.uplink.pull import publish_command
from bessai.uplink.spool import SpoolError, export_rows, read_stats

DEFAULT_SPOOL = "var/spool.sqlite"


def add_spool_parser(subparsers: Any) -> argparse.ArgumentParser:
    spool = subparsers.add_parser("spool", help="inspect the durable outbox")
    verbs = spool.add_subparsers(dest="spool_verb", required=True)
    stats = verbs.add_parser("stats", help="depth, bytes, oldest pending age, drops")
    stats.add_argument("--spool", default=DEFAULT_SPOOL)
    stats.add_argument("--json", action="store_true", help="one JSON object")
    export = verbs.add_parser("export", help="rows as JSON lines, oldest first")
    export.add_argument("--spool", default=DEFAULT_SPOOL)
    export.add_argument("--dead-letter", action="store_true", help="the dead-letter table")
    export.add_argument("--out", default="-", help="file to write (default: stdout)")
    return spool


def run_spool(args: argparse.Namespace) -> int:
    try:
        if args.spool_verb == "stats":
            stats = read_stats(args.spool)
            if args.json:
                print(json.dumps(stats.to_json()))
            else:
                age = stats.oldest_pending_age_s
                print(f"spool={stats.path} depth={stats.depth} bytes={stats.bytes} "
                      f"oldest_pending_age_s={'-' if age is None else round(age, 1)} "
                      f"dead_letters={stats.dead_letters} "
                      + " ".join(f"drops_{k}={v}" for k, v in sorted(stats.drops.items())))
            return 0
        table = "dead_letter" if args.dead_letter else "outbox"
        if args.out == "-":
            export_rows(args.spool, sys.stdout, table=table)
        else:
            with open(args.out, "w") as out:
                n = export_rows(args.spool, out, table=table)
            print(f"exported {n} rows from {table} to {args.out}", file=sys.stderr)
        return 0
    except SpoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    cmd = subparsers.add_parser("command", help="publish a dispatch command to Pub/Sub")
    cmd.add_argument("action", choices=[a.value for a in Action])
    cmd.add_argument("--site", required=True)
    cmd.add_argument("--device", required=True)
    cmd.add_argument("--power-w", type=float, default=0.0)
    cmd.add_argument("--expires-in-s", type=float, default=300.0)
    cmd.add_argument("--id", default=None, help="command id (default: a new uuid)")
    cmd.add_argument("--project", required=True)
    cmd.add_argument("--topic", required=True, help="the commands topic")
    cmd.add_argument("--key-file", default=None,
                     help="service-account key (default: application default credentials; "
                          "none with PUBSUB_EMULATOR_HOST)")
    return cmd


def run_command(args: argparse.Namespace) -> int:
    now = system_wall_clock()
    command = Command(id=args.id or str(uuid.uuid4()), site_id=args.site,
                      device_id=args.device, action=args.action, power_w=args.power_w,
                      issued_at=now, expires_at=now + args.expires_in_s)
    endpoint = Endpoint.from_env()

    async def send() -> str:
        async with make_client(endpoint) as client:
            return await publish_command(client, args.project, args.topic, command,
                                         endpoint=endpoint,
                                         credentials=credentials_for(endpoint, args.key_file))

    try:
        message_id = trio.run(send)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"published command {command.id} ({command.action}) as message {message_id}")
    return 0
