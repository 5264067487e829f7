"""``bessai check-config``: the runbook's configuration check.

Loads the settings, then checks what the settings point at — each device profile (through the
profile loader when this build has it), the credentials key file (exists, readable, JSON; its
contents are never printed) and the spool's directory (writable). Prints one summary line,
``Site: X, IP: Y, devices: ..., profile: ..., uplink: emulator|cloud|off``, then details, and
exits 0; or prints every problem at once and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bessai.cli._common import human_bytes, load_settings
from bessai.cli._lazy import load
from bessai.errors import FeatureUnavailableError
from bessai.settings import SettingProblem, Settings, SettingsError, redact_url


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate config/.env, the device profile and the credentials file",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.set_defaults(func=run)


def _profile_summary(path: Path, problems: list[SettingProblem], notes: list[str]) -> str:
    key = "DEVICE_PROFILE"
    if not path.is_file():
        problems.append(
            SettingProblem(key, str(path), "does not exist — set the path of the device "
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
    except Exception as exc:
        problems.append(SettingProblem(key, str(path), f"is not a valid profile: {exc}"))
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


def _check_credentials(settings: Settings, problems: list[SettingProblem]) -> None:
    """The key file must be readable JSON; its contents are never shown, even in errors."""
    path = settings.google_application_credentials
    if path is None or settings.uplink_mode != "cloud":
        return
    key = "GOOGLE_APPLICATION_CREDENTIALS"
    if not path.is_file():
        problems.append(SettingProblem(key, str(path), "does not exist — set the path of the "
                                       "service-account key file (see ops/RUNBOOK.md, rotation)"))
        return
    try:
        with path.open("rb") as fh:
            doc = json.load(fh)
    except PermissionError:
        problems.append(SettingProblem(key, str(path), "is not readable by this user — give the "
                                       "gateway's user read access (chmod 0640, group bessai)"))
        return
    except (OSError, ValueError):
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


def _check_spool_dir(settings: Settings, problems: list[SettingProblem]) -> None:
    directory = settings.spool_path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problems.append(SettingProblem("SPOOL_PATH", str(settings.spool_path),
                                       f"cannot be created: {existing} is not a writable "
                                       "directory — point it at a persistent, writable disk"))


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
    settings = load_settings(args)
    problems: list[SettingProblem] = []
    notes: list[str] = []
    profiles = {
        path: _profile_summary(path, problems, notes)
        for path in dict.fromkeys(d.profile for d in settings.devices)
    }
    _check_credentials(settings, problems)
    _check_spool_dir(settings, problems)
    if problems:
        raise SettingsError(problems, source=args.env_file or "config/.env")

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
    endpoint = redact_url(settings.otel_exporter_otlp_endpoint)
    print(f"  telemetry: {f'OTLP {endpoint}' if endpoint else 'off'}")
    print(f"  spool:     {settings.spool_path} (budget {human_bytes(settings.spool_max_bytes)})")
    print(f"  status:    {settings.status_url}/healthz, /status (bind {settings.status_bind})")
    print(f"  logs:      level {settings.log_level}; shutdown deadline "
          f"{settings.shutdown_deadline_s:g} s")
    for line in (*settings.warnings, *notes):
        print(line if line.startswith("note:") else f"warning: {line}")
    return 0

