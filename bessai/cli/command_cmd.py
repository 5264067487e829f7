"""``bessai command charge|discharge|stop|auto``: send a dispatch command to a site's gateway.

The command goes to PUBSUB_COMMANDS_TOPIC like any cloud dispatch, so it passes the same gate
(safety limits, expiry): the gateway logs COMMAND_ACCEPTED or COMMAND_REJECTED. It carries an
expiry (``--ttl-s``, default 300 s); a command that reaches the gateway late is rejected, never
applied late. ``charge`` and ``discharge`` need ``--power-w``. ``--sign-key PATH`` signs it with
an operator key (``bessai keys generate``): a gateway with COMMAND_VERIFY_KEYS takes only signed
commands.
"""

from __future__ import annotations

import argparse
import base64
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from bessai.cli._common import load_settings
from bessai.cli._lazy import has_in_mro, load
from bessai.clock import system_wall_clock
from bessai.errors import ConfigError, OperationFailedError
from bessai.model import Action, Command
from bessai.settings import Settings

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "command",
        parents=[common],
        help="send a dispatch command (charge, discharge, stop, auto)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("action", choices=[a.value for a in Action])
    parser.add_argument("--power-w", type=float, metavar="W",
                        help="power in W, > 0, for charge/discharge (clamped to the device's "
                        "maximum by the gateway)")
    parser.add_argument("--ttl-s", type=float, default=300.0, metavar="S",
                        help="seconds until the command expires, 5-86400 (default 300)")
    parser.add_argument("--device", metavar="ID", help="device id (needed with several)")
    parser.add_argument("--sign-key", metavar="PATH", type=Path,
                        help="sign with this operator private key (.key from `bessai keys "
                             "generate`); needed when the gateway sets COMMAND_VERIFY_KEYS")
    parser.set_defaults(func=run)


def build_command(settings: Settings, args: argparse.Namespace, now: float) -> Command:
    """The command to send; a `ConfigError` for a request that cannot be right."""
    action = Action(args.action)
    power_w: float | None = args.power_w
    if action in (Action.CHARGE, Action.DISCHARGE):
        if power_w is None or power_w <= 0:
            raise ConfigError(f"`{action}` needs a power: --power-w N (watts, > 0)",
                              hint=f"e.g. bessai command {action} --power-w 5000")
    elif power_w is not None:
        raise ConfigError(f"`{action}` takes no --power-w", hint=f"bessai command {action}")
    if not 5 <= args.ttl_s <= 86400:
        raise ConfigError(f"--ttl-s {args.ttl_s:g} is out of range",
                          hint="give 5 to 86400 seconds; the default is 300")
    # the gateway would reject these (ttl_too_long, below_min_power): say so before sending
    if power_w is not None:  # charge or discharge: the only actions with a power (above)
        if args.ttl_s > settings.command_max_ttl_s:
            raise ConfigError(
                f"--ttl-s {args.ttl_s:g} is longer than COMMAND_MAX_TTL_S="
                f"{settings.command_max_ttl_s:g}: the gateway would reject it",
                hint="send a shorter command and renew it")
        if power_w < settings.command_min_power_w:
            raise ConfigError(
                f"--power-w {power_w:g} is below COMMAND_MIN_POWER_W="
                f"{settings.command_min_power_w:g}: the gateway would reject it",
                hint=f"bessai command stop, to stop; or at least "
                     f"--power-w {settings.command_min_power_w:g}")
    if args.device:
        device = settings.device(args.device)
    elif len(settings.devices) == 1:
        device = settings.devices[0]
    else:
        raise ConfigError("this site has several devices: say which one",
                          hint="--device " + " | --device ".join(d.id for d in settings.devices))
    return Command(
        id=str(uuid.uuid4()),
        site_id=settings.site_id,
        device_id=device.id,
        action=action,
        power_w=power_w or 0.0,
        issued_at=now,
        expires_at=now + args.ttl_s,
    )


def refuse_read_only(settings: Settings, command: Command) -> None:
    """A `ConfigError` when the device's profile has no dispatch section (read-only, e.g. a
    SunSpec device without a writable storage model): the gateway would reject the command."""
    device = settings.device(command.device_id)
    try:
        load_profile = load("bessai.device.profile", "load_profile", command="command")
        profile = load_profile(device.profile)
    except Exception:  # an unreadable profile is the gateway's to report; it rejects then
        return
    if getattr(profile, "dispatch", True) is None:
        raise ConfigError(
            f"device {device.id} is read-only: its profile {device.profile} has no dispatch "
            "section, so the gateway never writes to it and rejects every command",
            hint="a SunSpec device needs a writable storage model (124); see docs/sunspec.md")


def command_message(command: Command) -> dict[str, Any]:
    """The Pub/Sub message for a command: JSON body (the fields of `Command`), routing attributes.

    The gateway's command parser (bessai.control.command.parse_command) reads this form; the
    attributes let a subscription filter by site and device.
    """
    body = {
        "id": command.id,
        "site_id": command.site_id,
        "device_id": command.device_id,
        "action": command.action.value,
        "power_w": command.power_w,
        "issued_at": command.issued_at,
        "expires_at": command.expires_at,
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    return {
        "data": base64.b64encode(data).decode("ascii"),
        "attributes": {
            "site_id": command.site_id,
            "device_id": command.device_id,
            "command_id": command.id,
        },
    }


def _publisher() -> tuple[Any, Any, Any, Any]:
    """The uplink's one-shot publish pieces, loaded before anything is attempted."""
    publish_json = load("bessai.uplink.publisher", "publish_json", command="command")
    endpoint_cls = load("bessai.uplink.credentials", "Endpoint", command="command")
    credentials_for = load("bessai.uplink.credentials", "credentials_for", command="command")
    make_client = load("bessai.uplink.credentials", "make_client", command="command")
    return publish_json, endpoint_cls, credentials_for, make_client


async def _publish(settings: Settings, command: Command, timeout_s: float,
                   sign_key: Any = None) -> str:
    publish_json, endpoint_cls, credentials_for, make_client = _publisher()
    message = command_message(command)
    if sign_key is not None:  # the signature covers the exact data bytes published
        message = load("bessai.trust", "sign_message", command="command")(message, sign_key)
    if settings.pubsub_emulator_host:
        endpoint = endpoint_cls.for_emulator(settings.pubsub_emulator_host)
    else:
        endpoint = endpoint_cls()
    credentials = credentials_for(endpoint, settings.google_application_credentials)
    topic_path = f"projects/{settings.gcp_project_id}/topics/{settings.pubsub_commands_topic}"
    async with make_client(endpoint, timeout_s=timeout_s) as client:
        if endpoint.emulator:  # never on real Pub/Sub: there a missing topic is an error
            await _ensure_on_emulator(client, endpoint, settings)
        ids = await publish_json(client, endpoint, topic_path, [message],
                                 credentials=credentials, timeout_s=timeout_s)
    return ids[0] if ids else "?"


async def _ensure_on_emulator(client: Any, endpoint: Any, settings: Settings) -> None:
    """The commands topic (and the gateway's subscription on it, so the command is not
    published into nothing), created on the emulator when missing."""
    ensure = load("bessai.uplink.emulator_setup", "ensure_resources", command="command")
    topic = settings.pubsub_commands_topic
    subscription = settings.pubsub_commands_subscription
    await ensure(client, endpoint, settings.gcp_project_id or "", [topic],
                 [(subscription, topic)] if subscription else [])


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    command = build_command(settings, args, system_wall_clock())
    refuse_read_only(settings, command)
    if settings.pubsub_commands_topic is None:
        raise ConfigError(
            "PUBSUB_COMMANDS_TOPIC is not set, so there is nowhere to send the command",
            hint="set PUBSUB_COMMANDS_TOPIC (and GCP_PROJECT_ID) in config/.env",
        )
    _publisher()  # a build without the uplink fails here, before anything is attempted
    sign_key = None
    if args.sign_key is not None:  # a bad key file fails here, before anything is sent
        sign_key = load("bessai.trust", "load_private_key", command="command")(args.sign_key)
    topic = settings.pubsub_commands_topic
    try:
        message_id = trio.run(_publish, settings, command, 30.0, sign_key)
    except (OSError, RuntimeError) as exc:
        raise OperationFailedError(
            f"could not publish the command to {topic}: {exc}",
            hint="check the network, GCP_PROJECT_ID, PUBSUB_COMMANDS_TOPIC and the credentials "
            "(ops/RUNBOOK.md §6.3)",
        ) from exc
    except Exception as exc:
        if has_in_mro(exc, "HTTPError") or has_in_mro(exc, "CredentialsError"):
            raise OperationFailedError(
                f"could not publish the command to {topic}: {exc}",
                hint="check the network and the credentials (ops/RUNBOOK.md §6.3, §7)",
            ) from exc
        raise
    power = f" power_w={command.power_w:g}" if command.power_w else ""
    print(
        f"sent command id={command.id} action={command.action}{power} site={command.site_id} "
        f"device={command.device_id} ttl_s={args.ttl_s:g} message_id={message_id}"
        + (f" signed_by={_key_id(sign_key)}" if sign_key is not None else " unsigned")
    )
    print(f"watch for: event=COMMAND_ACCEPTED or event=COMMAND_REJECTED command_id={command.id}")
    return 0


def _key_id(private_key: Any) -> str:
    return str(load("bessai.trust", "key_id", command="command")(private_key.public_key()))
