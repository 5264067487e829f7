"""``bessai spool stats`` / ``export`` / ``backup`` / ``import``: the on-disk outbox (safe while
the gateway runs).

``stats`` prints the depth, size against the budget, the oldest pending age, drops by reason
and dead letters (``--json`` for machines). ``export`` writes rows as JSON lines (``--table
dead_letter`` for poison messages), e.g. to hand a backlog to engineering. ``backup DEST``
writes a consistent single-file copy with SQLite's online backup API (a plain ``cp`` of a live
WAL database can miss committed rows). ``import PATH`` re-queues the rows of a spool file that
was moved aside (``SPOOL_CORRUPT moved_to=PATH``) or of a backup, with their original ``seq``
and ``msg_id`` (rows already queued are skipped, so it can be repeated); the running gateway
sends them. It is never done automatically: the gateway does not read a file SQLite called
damaged, an operator decides.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

from bessai.bounds import clip
from bessai.cli._common import human_bytes, load_settings
from bessai.cli._lazy import has_in_mro, load
from bessai.errors import ConfigError, OperationFailedError
from bessai.settings import DEFAULT_ENV_FILE, SettingsError, load_env


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("spool", parents=[common], help="inspect the durable outbox")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    stats = actions.add_parser("stats", parents=[common], help="depth, size, drops, age")
    stats.add_argument("--path", type=Path, help="spool file (default SPOOL_PATH)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=run_stats)
    export = actions.add_parser("export", parents=[common], help="rows as JSON lines")
    export.add_argument("--path", type=Path, help="spool file (default SPOOL_PATH)")
    export.add_argument("--table", choices=("outbox", "dead_letter"), default="outbox")
    export.add_argument("--output", "-o", type=Path, help="file to write (default stdout)")
    export.set_defaults(func=run_export)
    backup = actions.add_parser("backup", parents=[common],
                                help="consistent copy to a new file (safe while running)")
    backup.add_argument("dest", type=Path, help="file to create (never overwritten)")
    backup.add_argument("--path", type=Path, help="spool file (default SPOOL_PATH)")
    backup.set_defaults(func=run_backup)
    imp = actions.add_parser("import", parents=[common],
                             help="re-queue the rows of a moved-aside or backed-up spool file")
    imp.add_argument("source", type=Path, help="the file to read (e.g. SPOOL_CORRUPT moved_to=)")
    imp.add_argument("--path", type=Path, help="spool file to add to (default SPOOL_PATH)")
    imp.set_defaults(func=run_import)


def _spool_path(args: argparse.Namespace) -> tuple[Path, int | None]:
    if args.path is not None:
        try:
            return args.path, load_settings(args).spool_max_bytes
        except SettingsError:
            return args.path, None
    try:
        settings = load_settings(args)
    except SettingsError:
        # Reading the spool needs SPOOL_PATH alone: it must work while another setting is wrong.
        raw, _ = load_env(env_file=args.env_file or DEFAULT_ENV_FILE)
        if "SPOOL_PATH" not in raw:
            raise
        return Path(raw["SPOOL_PATH"]), None
    return settings.spool_path, settings.spool_max_bytes


def _spool_failure(exc: Exception, path: Path | None = None) -> OperationFailedError:
    if isinstance(exc, sqlite3.DatabaseError):
        # SQLite says the file is not a database, is damaged, or is locked: a listed failure,
        # never "unexpected". The gateway moves a corrupt spool aside itself (SPOOL_CORRUPT).
        return OperationFailedError(
            f"{clip(str(path))} cannot be read as a spool database (SQLite: {clip(exc, 120)})",
            hint="check SPOOL_PATH (or --path) points at the gateway's spool file; if it is "
                 "damaged, see ops/RUNBOOK.md (SPOOL_CORRUPT) for the moved-aside copy")
    return OperationFailedError(clip(str(exc), 400), hint="check SPOOL_PATH (or --path) points "
                                "at the gateway's spool file, and that this user can read it")


def _is_spool_failure(exc: Exception) -> bool:
    return (has_in_mro(exc, "SpoolError") or isinstance(exc, OSError | sqlite3.DatabaseError))


def run_stats(args: argparse.Namespace) -> int:
    path, budget = _spool_path(args)
    read_stats = load("bessai.uplink.spool", "read_stats", command="spool stats")
    try:
        stats = read_stats(path)
    except Exception as exc:
        if _is_spool_failure(exc):
            raise _spool_failure(exc, path) from exc
        raise
    data = stats.to_json() if hasattr(stats, "to_json") else dict(stats)
    if data.get("max_bytes") is None:
        data["max_bytes"] = budget
    if args.json:
        print(json.dumps(data, sort_keys=True))
        return 0
    used = human_bytes(data.get("bytes", 0))
    of = f" of {human_bytes(data['max_bytes'])}" if data.get("max_bytes") else ""
    age = data.get("oldest_pending_age_s")
    drops = data.get("drops") or {}
    print(f"spool {data.get('path', path)}: {data.get('depth', 0)} pending, {used}{of}")
    print(f"  oldest pending: {'none' if age is None else f'{age:.0f} s ago'}")
    print(f"  dropped by budget/age: "
          f"{', '.join(f'{k}={v}' for k, v in sorted(drops.items())) or 'none'}")
    print(f"  dead letters: {data.get('dead_letters', 0)}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    path, _ = _spool_path(args)
    export_rows = load("bessai.uplink.spool", "export_rows", command="spool export")
    try:
        if args.output is None:
            count = export_rows(path, sys.stdout, table=args.table)
            sys.stdout.flush()
        else:
            with args.output.open("w", encoding="utf-8") as out:
                count = export_rows(path, out, table=args.table)
    except BrokenPipeError:
        # The reader went away (`... | head`): what it wanted was written; not a spool fault.
        _silence_stdout()
        return 0
    except Exception as exc:
        if _is_spool_failure(exc):
            raise _spool_failure(exc, path) from exc
        raise
    print(f"exported {count} rows from {args.table}", file=sys.stderr)
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's own flush at exit does not fail on the closed
    pipe a second time (and print a traceback)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run_backup(args: argparse.Namespace) -> int:
    path, _ = _spool_path(args)
    if args.dest.exists():
        raise ConfigError(f"{args.dest} already exists; a backup never overwrites a file",
                          hint="give a new file name, e.g. spool-$(date +%Y%m%d-%H%M).sqlite")
    folder = args.dest.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write the backup: the directory {folder} does not exist",
                          hint=f"create it first (mkdir -p {folder}) or give a path in an "
                               "existing directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the backup: the directory {folder} is not writable by "
                          "this user", hint="choose a directory this user can write, or run "
                          "the command as the gateway's user")
    backup_spool = load("bessai.uplink.spool", "backup_spool", command="spool backup")
    try:
        stats = backup_spool(path, args.dest)
    except Exception as exc:
        if _is_spool_failure(exc):
            raise _spool_failure(exc, path) from exc
        raise
    print(f"backup of {path} written to {args.dest}: {stats.depth} pending, "
          f"{stats.dead_letters} dead letters")
    return 0


def run_import(args: argparse.Namespace) -> int:
    path, _ = _spool_path(args)
    import_rows = load("bessai.uplink.spool", "import_rows", command="spool import")
    try:
        result = import_rows(args.source, path)
    except Exception as exc:
        if has_in_mro(exc, "SpoolError") or isinstance(exc, OSError | sqlite3.Error):
            raise OperationFailedError(
                f"cannot import {args.source} into {path}: {exc}",
                hint="check both paths; a file SQLite cannot open at all has no readable rows "
                     "(keep it for engineering: `bessai spool export --path FILE` may still "
                     "read part of it)") from exc
        raise
    print(f"imported {result.imported} rows from {args.source} into {path} "
          f"({result.already_there} already queued)")
    if result.unreadable:
        print(f"  stopped at a damaged part of {args.source}: {result.unreadable}; the rows "
              "before it were imported", file=sys.stderr)
    return 0
