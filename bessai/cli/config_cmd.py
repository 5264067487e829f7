"""``bessai check-config``: the runbook's configuration check.

Loads the settings, then checks what the settings point at — each device profile (through the
profile loader when this build has it), the credentials key file (exists, readable, JSON; its
contents are never printed) and the spool's directory (exists or can be created, writable, names
within the file system's limits). Prints one summary line,
``Site: X, IP: Y, devices: ..., profile: ..., uplink: emulator|cloud|off``, then details, and
exits 0; or prints every problem at once and exits 2 — the files behind every key that did
parse are checked in the same run, so one run lists everything to fix.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bessai.bounds import clip
from bessai.cli._common import human_bytes
from bessai.cli._lazy import load
from bessai.config_files import find_env_file
from bessai.errors import FeatureUnavailableError
from bessai.settings import (
    SPOOL_SUFFIX_RESERVE_BYTES,
    SettingProblem,
    Settings,
    SettingsError,
    check_settings,
    redact_url,
)

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate config/.env, the device profile and the credentials file",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.set_defaults(func=run)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for this file system, a NUL
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _profile_summary(path: Path, problems: list[SettingProblem], notes: list[str]) -> str:
    key = "DEVICE_PROFILE"
    if not _is_file(path):
        what = "is not a regular file" if _exists(path) else "does not exist"
        problems.append(
            SettingProblem(key, str(path), f"{what} — set the path of the device "
                           "profile JSON, e.g. profiles/huawei_sun2000.json")
        )
        return str(path)
    try:
        load_profile = load("bessai.device.profile", "load_profile", command="check-config")
    except FeatureUnavailableError:
        notes.append(f"note: profile {path} exists but was not validated (no profile loader "
                     "in this build)")
        return str(path)
    try:
        profile = load_profile(path)
    except Exception as exc:  # ProfileError lists every problem; anything else is shown too
        problems.append(SettingProblem(key, str(path),
                                       f"is not a valid profile: {clip(exc, 2000)}"))
        return str(path)
    device = getattr(profile, "device", None)
    model = " ".join(
        str(part) for part in (getattr(device, "manufacturer", ""), getattr(device, "model", ""))
        if part
    )
    tags = getattr(profile, "tags", None)
    detail = ", ".join(
        part for part in (model, f"{len(tags)} tags" if tags is not None else "") if part
    )
    return f"{path} ({detail})" if detail else str(path)


MAX_CREDENTIALS_BYTES = 64 * 1024
"""A service-account key is about 2.3 KB; a bigger file is not one (and is not read whole)."""


def _check_credentials(path: Path | None, uplink_mode: str | None,
                       problems: list[SettingProblem]) -> None:
    """The key file must be readable JSON; its contents are never shown, even in errors."""
    if path is None or uplink_mode != "cloud":
        return
    key = "GOOGLE_APPLICATION_CREDENTIALS"
    if not _is_file(path):
        problems.append(SettingProblem(key, str(path), "does not exist — set the path of the "
                                       "service-account key file (see ops/RUNBOOK.md, rotation)"))
        return
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CREDENTIALS_BYTES + 1)
        if len(data) > MAX_CREDENTIALS_BYTES:
            raise ValueError("too big for a key file")
        doc = json.loads(data)
    except PermissionError:
        problems.append(SettingProblem(key, str(path), "is not readable by this user — give the "
                                       "gateway's user read access (chmod 0640, group bessai)"))
        return
    except (OSError, ValueError, RecursionError):
        problems.append(SettingProblem(key, str(path), "is not a JSON key file — download the "
                                       "key again (gcloud iam service-accounts keys create)"))
        return
    if not isinstance(doc, dict) or "type" not in doc:
        problems.append(SettingProblem(key, str(path), "is JSON but not a Google credentials "
                                       "file (no 'type' field)"))
    elif doc.get("type") == "service_account" and not str(doc.get("private_key") or "").strip():
        problems.append(SettingProblem(key, str(path), "is a service-account file without a "
                                       "private key — download a new JSON key (gcloud iam "
                                       "service-accounts keys create), not the account's "
                                       "description"))
    mode = path.stat().st_mode
    if mode & 0o007:  # readable (or worse) by every user on the host: the key is exposed
        problems.append(SettingProblem(key, str(path), f"is accessible to every user (mode "
                                       f"{oct(mode & 0o777)}) — chmod 0640 {path} (owner root, "
                                       "group of the gateway's user), or 0600"))


def _check_spool_dir(spool_path: Path, problems: list[SettingProblem]) -> None:
    """The spool's directory exists or can be created, is writable, and takes its names.

    The gateway creates missing directories at start; this checks the nearest existing one is a
    writable directory, that the spool file (if present) is a file, and that every name to be
    created fits the file system's NAME_MAX (the spool also needs room for ``-wal`` and
    ``.corrupt-*`` names): a name the file system refuses would crash-loop the spool actor.
    """
    key = "SPOOL_PATH"
    shown = str(spool_path)
    absolute = Path(os.path.abspath(spool_path))
    existing = absolute.parent
    to_create: list[str] = []
    try:
        while not existing.exists() and existing != existing.parent:
            to_create.insert(0, existing.name)
            existing = existing.parent
        if not existing.is_dir():
            problems.append(SettingProblem(key, shown, f"cannot be created: {existing} is a file, "
                                           "not a directory — point it at a directory on a "
                                           "persistent, writable disk"))
            return
        if not os.access(existing, os.W_OK | os.X_OK):
            problems.append(SettingProblem(key, shown, f"cannot be created: {existing} is not "
                                           "writable by this user — point it at a persistent, "
                                           "writable disk, or give the gateway's user access"))
            return
        if absolute.exists() and not absolute.is_file():
            problems.append(SettingProblem(key, shown, "exists and is not a file (a directory?) "
                                           "— give the spool's file, e.g. "
                                           "/var/lib/bessai/outbox.sqlite"))
            return
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except OSError as exc:
        problems.append(SettingProblem(key, shown, f"cannot be checked ({exc.strerror or exc})"))
        return
    for name in to_create:
        if len(os.fsencode(name)) > name_max:
            problems.append(SettingProblem(key, shown, f"needs a directory name of "
                                           f"{len(os.fsencode(name))} bytes — {existing} takes "
                                           f"at most {name_max}"))
            return
    room = name_max - SPOOL_SUFFIX_RESERVE_BYTES
    if len(os.fsencode(absolute.name)) > room:
        problems.append(SettingProblem(key, shown, f"has a file name of "
                                       f"{len(os.fsencode(absolute.name))} bytes — this file "
                                       f"system takes {name_max}, and the spool needs "
                                       f"{SPOOL_SUFFIX_RESERVE_BYTES} of them for its -wal and "
                                       f".corrupt-* files: use at most {room}"))


def _commands_trust(values: Mapping[str, Any], problems: list[SettingProblem],
                    notes: list[str]) -> str:
    """COMMAND_VERIFY_KEYS: every .pub file must load (key ids shown, never key material).

    Reads the values that parsed, so a key problem is listed with every other problem."""
    limit = f"clock skew limit {values.get('clock_skew_max_s', 30.0):g} s"
    source = values.get("command_verify_keys")
    if source is None:
        if values.get("pubsub_commands_subscription") is not None:
            notes.append("COMMANDS_UNAUTHENTICATED: COMMAND_VERIFY_KEYS is not set, so anyone "
                         "who can publish to the commands topic can drive the battery — see "
                         "ops/RUNBOOK.md, signed commands")
        return f"NOT AUTHENTICATED (COMMAND_VERIFY_KEYS not set); {limit}"
    try:
        read_verify_keys = load("bessai.trust.keys", "read_verify_keys", command="check-config")
    except FeatureUnavailableError as exc:
        problems.append(SettingProblem("COMMAND_VERIFY_KEYS", str(source), str(exc)))
        return str(source)
    try:
        keys = read_verify_keys(source)
    except Exception as exc:  # KeyFileError: the message names the file, never its contents
        problems.append(SettingProblem("COMMAND_VERIFY_KEYS", str(source),
                                       f"cannot be used: {exc}"))
        return str(source)
    ids = ", ".join(sorted(keys))
    return f"signed — {len(keys)} key{'s' if len(keys) != 1 else ''} ({ids}) from {source}; {limit}"


def _uplink_detail(settings: Settings) -> str:
    if settings.uplink_mode == "off":
        return "off (no PUBSUB_TOPIC: readings are spooled on disk only)"
    where = f"projects/{settings.gcp_project_id}/topics/{settings.pubsub_topic}"
    via = (f"emulator at {settings.pubsub_emulator_host}" if settings.uplink_mode == "emulator"
           else "Pub/Sub" + (f", key {settings.google_application_credentials}"
                             if settings.google_application_credentials else
                             ", application default credentials"))
    commands = settings.pubsub_commands_subscription or "off"
    return f"{settings.uplink_mode} → {where} ({via}); commands subscription: {commands}"


def run(args: argparse.Namespace) -> int:
    # The env file by the one search order (bessai.config_files): an explicit --env-file or
    # BESSAI_ENV_FILE that does not exist is a ConfigError (exit 2) raised here.
    choice = getattr(args, "env_choice", None) or find_env_file(getattr(args, "env_file", None))
    check = check_settings(env_file=choice.env_file)
    problems: list[SettingProblem] = list(check.problems)
    notes: list[str] = []
    # Check what every key that parsed points at, even when other keys are wrong: one run
    # lists every problem (a wrong profile path is not hidden behind a wrong INVERTER_IP).
    profile_paths = [d.profile for d in check.devices]
    if not profile_paths and "device_profile" in check.values:
        profile_paths = [check.values["device_profile"]]
    profiles = {
        path: _profile_summary(path, problems, notes) for path in dict.fromkeys(profile_paths)
    }
    _check_credentials(check.values.get("google_application_credentials"), check.uplink_mode,
                       problems)
    if "spool_path" in check.values:
        _check_spool_dir(check.values["spool_path"], problems)
    commands_trust = _commands_trust(check.values, problems, notes)
    if problems:
        raise SettingsError(problems, source=choice.source())
    settings: Settings = check.settings()

    devices = ", ".join(str(d) for d in settings.devices)
    print(
        f"Site: {settings.site_id}, IP: {settings.inverter_ip_str}, devices: {devices}, "
        f"profile: {', '.join(str(p) for p in profiles)}, uplink: {settings.uplink_mode}"
    )
    choice = getattr(args, "env_choice", None)
    if choice is not None:
        print(f"  config:    {choice.describe()} (environment wins over the file)")
    for summary in profiles.values():
        print(f"  profile:   {summary}")
    print(f"  safety:    SOC {settings.soc_min_pct:g}-{settings.soc_max_pct:g} % "
          f"(hysteresis {settings.soc_hysteresis_pct:g}), battery temperature max "
          f"{settings.temp_max_c:g} °C (hysteresis {settings.temp_hysteresis_c:g})")
    print(f"  polling:   fast tags every {settings.poll_interval_s:g} s, slow tags every "
          f"{settings.slow_poll_interval_s:g} s")
    print(f"  uplink:    {_uplink_detail(settings)}")
    print(f"  commands:  {commands_trust}")
    endpoint = redact_url(settings.otel_exporter_otlp_endpoint)
    print(f"  telemetry: {f'OTLP {endpoint}' if endpoint else 'off'}")
    print(f"  spool:     {settings.spool_path} (budget {human_bytes(settings.spool_max_bytes)})")
    print(f"  status:    {settings.status_url}/healthz, /status (bind {settings.status_bind})")
    print(f"  logs:      level {settings.log_level}; shutdown deadline "
          f"{settings.shutdown_deadline_s:g} s")
    for line in (*settings.warnings, *notes):
        print(line if line.startswith("note:") else f"warning: {line}")
    return 0

