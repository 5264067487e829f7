"""``bessai schedule push FILE`` / ``show``: send a device its local plan; see the plan it runs.

``push`` checks the file as the gateway will (slots in order, no overlap, within
``valid_until``, powers within the device profile's limits: every problem at once, exit 2) and
publishes it to PUBSUB_COMMANDS_TOPIC like a command; the gateway answers with
SCHEDULE_ACCEPTED or SCHEDULE_REJECTED (a ``schedule_result``). A file without ``site_id`` /
``device_id`` gets this site's (and its only device's).

``show`` reads the schedules the gateway stored (``schedules.sqlite`` beside SPOOL_PATH;
read-only, safe while the gateway runs) and prints each device's plan with the slot in force
now marked ``<- now``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from bessai.cli._common import load_settings
from bessai.cli._lazy import has_in_mro, load
from bessai.clock import system_wall_clock
from bessai.errors import ConfigError, OperationFailedError
from bessai.settings import Settings

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("schedule", parents=[common],
                                 help="send or show a device's local schedule")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    push = actions.add_parser("push", parents=[common],
                              help="check a schedule file and send it to the gateway")
    push.add_argument("file", type=Path, help="the schedule, as JSON")
    push.add_argument("--device", metavar="ID", help="device id, if the file has none")
    push.add_argument("--check", action="store_true", help="check the file only; send nothing")
    push.add_argument("--sign-key", metavar="PATH", type=Path,
                      help="operator private key (bessai keys generate): sign the schedule, as "
                      "a gateway with COMMAND_VERIFY_KEYS requires")
    push.set_defaults(func=run_push)
    show = actions.add_parser("show", parents=[common], help="the stored plans, current slot")
    show.add_argument("--path", type=Path, help="schedule file (default: beside SPOOL_PATH)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_schedule(settings: Settings, args: argparse.Namespace) -> Any:
    from bessai.control.command import MAX_COMMAND_BYTES
    from bessai.control.dispatch import DispatchTags
    from bessai.control.schedule import InvalidSchedule, ScheduleLimits, parse_schedule
    from bessai.device import load_profile

    try:
        size = args.file.stat().st_size
        if size > MAX_COMMAND_BYTES:
            raise ConfigError(f"{args.file} is {size} bytes; a schedule may be at most "
                              f"{MAX_COMMAND_BYTES}", hint="use fewer, longer slots")
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {args.file}: {exc}",
                          hint="give the path of a JSON schedule file") from exc
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{args.file} is not JSON: {exc}", hint="see ops/RUNBOOK.md, "
                          "local schedules, for an example") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"{args.file} must hold a JSON object", hint="see ops/RUNBOOK.md")
    body.setdefault("type", "schedule")
    body.setdefault("site_id", settings.site_id)
    if "device_id" not in body:
        if args.device:
            body["device_id"] = args.device
        elif len(settings.devices) == 1:
            body["device_id"] = settings.devices[0].id
        else:
            raise ConfigError("this site has several devices: say which one",
                              hint="--device " + " | --device ".join(
                                  d.id for d in settings.devices))
    try:
        device = settings.device(str(body["device_id"]))
        tags = DispatchTags.from_profile(load_profile(device.profile))
        limits = ScheduleLimits(tags.charge_power_max_w, tags.discharge_power_max_w,
                                settings.command_min_power_w)
    except Exception:  # an unknown device: the gateway will say wrong_device
        limits = ScheduleLimits(min_power_w=settings.command_min_power_w)
    try:
        return parse_schedule(body, now_wall=system_wall_clock(), limits=limits)
    except InvalidSchedule as exc:
        problems = "\n".join(f"  {k}: {v}" for k, v in sorted(exc.errors.items()))
        raise ConfigError(f"{args.file} is not a valid schedule ({exc.code}):\n{problems}",
                          hint="fix every problem listed, then push again") from exc


def run_push(args: argparse.Namespace) -> int:
    from bessai.cli.command_cmd import _publisher

    settings = load_settings(args)
    schedule = _read_schedule(settings, args)
    if args.check:
        print(f"ok: schedule {schedule.schedule_id} for device {schedule.device_id}: "
              f"{len(schedule.slots)} slots until {_iso(schedule.valid_until)}")
        return 0
    if settings.pubsub_commands_topic is None:
        raise ConfigError("PUBSUB_COMMANDS_TOPIC is not set, so there is nowhere to send it",
                          hint="set PUBSUB_COMMANDS_TOPIC (and GCP_PROJECT_ID) in config/.env")
    sign_key = None
    if args.sign_key is not None:  # a bad key file fails here, before anything is sent
        sign_key = load("bessai.trust", "load_private_key", command="schedule")(args.sign_key)
    publish_json, endpoint_cls, credentials_for, make_client = _publisher()
    data = json.dumps(schedule.to_json(), separators=(",", ":")).encode()
    message = {"data": base64.b64encode(data).decode("ascii"),
               "attributes": {"site_id": schedule.site_id, "device_id": schedule.device_id,
                              "schedule_id": schedule.schedule_id, "kind": "schedule"}}
    if sign_key is not None:  # the signature covers the exact data bytes published
        message = load("bessai.trust", "sign_message", command="schedule")(message, sign_key)

    async def publish() -> list[str]:
        endpoint = (endpoint_cls.for_emulator(settings.pubsub_emulator_host)
                    if settings.pubsub_emulator_host else endpoint_cls())
        credentials = credentials_for(endpoint, settings.google_application_credentials)
        topic = f"projects/{settings.gcp_project_id}/topics/{settings.pubsub_commands_topic}"
        async with make_client(endpoint, timeout_s=30.0) as client:
            return list(await publish_json(client, endpoint, topic, [message],
                                           credentials=credentials, timeout_s=30.0))

    try:
        ids = trio.run(publish)
    except Exception as exc:
        if isinstance(exc, OSError | RuntimeError) or has_in_mro(exc, "HTTPError") \
                or has_in_mro(exc, "CredentialsError"):
            raise OperationFailedError(
                f"could not publish the schedule to {settings.pubsub_commands_topic}: {exc}",
                hint="check the network, GCP_PROJECT_ID, PUBSUB_COMMANDS_TOPIC and the "
                     "credentials") from exc
        raise
    print(f"sent schedule id={schedule.schedule_id} device={schedule.device_id} "
          f"slots={len(schedule.slots)} valid_until={_iso(schedule.valid_until)} "
          f"message_id={ids[0] if ids else '?'}")
    print(f"watch for: event=SCHEDULE_ACCEPTED or event=SCHEDULE_REJECTED "
          f"schedule_id={schedule.schedule_id}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from bessai.control.schedule_store import ScheduleStore, schedule_path_for

    path = args.path
    if path is None:
        path = schedule_path_for(load_settings(args).spool_path)
    if not path.exists():
        raise OperationFailedError(f"no schedule file at {path}: no schedule was ever stored",
                                   hint="bessai schedule push FILE")
    try:
        schedules = ScheduleStore(path).load_all()
    except Exception as exc:  # sqlite3.Error: not a schedule file, damaged
        raise OperationFailedError(f"cannot read {path}: {exc}",
                                   hint="check the path (--path)") from exc
    now = system_wall_clock()
    if args.json:
        out = {}
        for device, s in sorted(schedules.items()):
            found = s.slot_at(now)
            out[device] = {**s.to_json(), "expired": now >= s.valid_until,
                           "current_slot": None if found is None else found[0]}
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    if not schedules:
        print("no schedules stored")
    for device, s in sorted(schedules.items()):
        state = "EXPIRED (device back to auto)" if now >= s.valid_until else "active"
        print(f"device {device}: schedule {s.schedule_id}, {len(s.slots)} slots, "
              f"valid until {_iso(s.valid_until)} — {state}")
        found = s.slot_at(now)
        current = None if found is None else found[0]
        for index, slot in enumerate(s.slots):
            extra = "".join(f" {k}={v:g}" for k, v in (("power_w", slot.power_w),
                                                       ("limit_w", slot.limit_w))
                            if v is not None)
            mark = "  <- now" if index == current else ""
            print(f"  [{index}] {_iso(slot.start)} .. {_iso(slot.end)}  {slot.action.value}"
                  f"{extra}{mark}")
        if current is None and now < s.valid_until:
            print(f"  now ({_iso(now)}): between slots — auto")
    return 0
