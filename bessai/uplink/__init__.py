"""The durable uplink: spool (SQLite outbox) → Pub/Sub REST, and dispatch commands back.

Wiring (done once, in the gateway tree)::

    spool    = Spool(settings.spool_path, max_bytes=..., wall_clock=..., sink=sink)
    endpoint = Endpoint.from_env()                       # emulator if PUBSUB_EMULATOR_HOST
    creds    = credentials_for(endpoint, key_file)       # NoAuth / ServiceAccountKey / ADC
    client   = make_client(endpoint)                     # httpx.AsyncClient, TLS verified
    recorder = Recorder(spool, snapshots_rx, sink=sink)      # events: record_event(spool, e)
    uplink   = Uplink(spool, Publisher(client, project, topic, endpoint=endpoint,
                                       credentials=creds), sink=sink)
    commands = CommandSource(client, project, subscription, safety_gate.handle,
                             credentials=creds, endpoint=endpoint, sink=sink)

Each of ``spool.run``, ``recorder.run``, ``uplink.run``, ``commands.run`` is an actor:
``async def run(task_status=trio.TASK_STATUS_IGNORED)``, ready after ``task_status.started()``.
Start the spool first; stop it last.

Operator events (UPPER_SNAKE, for ops/RUNBOOK.md): LINK_DOWN / LINK_UP /
LINK_DOWN_REASON_CHANGED (link=pubsub|commands), SPOOL_BUDGET_WARN (80 %), SPOOL_BUDGET_FULL
(dropping oldest telemetry, gap records sent), SPOOL_BUDGET_EXCEEDED (only critical rows left),
SPOOL_BUDGET_OK, SPOOL_RECOVERED, SPOOL_CORRUPT (SQLite says the file is damaged: moved aside,
fresh spool; `bessai spool import` re-queues its rows), SPOOL_DISK_FAULT / SPOOL_DISK_RECOVERED
(condition=disk_full|read_only|permission_denied|locked|deleted|corrupt|io_error, once each
way), SPOOL_RECREATED, SPOOL_REJECTED, PUBSUB_POISON_MESSAGE, PUBSUB_CONFIG_FAULT /
PUBSUB_CONFIG_OK, CREDENTIALS_KEY_READABLE, CREDENTIALS_KEY_RELOADED, COMMAND_HANDLER_FAILED,
COMMAND_UNDECODABLE, COMMAND_ACK_FAILED, UPLINK_ALERT_NOT_SPOOLED.
"""

from bessai.errors import ConfigError
from bessai.uplink.credentials import (
    Credentials,
    CredentialsError,
    DefaultCredentials,
    Endpoint,
    NoAuth,
    ServiceAccountKey,
    credentials_for,
    make_client,
)
from bessai.uplink.link import Link, LinkState
from bessai.uplink.message import MessageInvalid, Record, RowPriority, SpoolRow
from bessai.uplink.publisher import Publisher, PublishOutcome, PublishResult
from bessai.uplink.pull import CommandSource, command_message, publish_command
from bessai.uplink.recorder import Recorder
from bessai.uplink.spool import (
    Accepted,
    Spool,
    SpoolError,
    SpoolStats,
    SpoolWriteError,
    backup_spool,
    export_rows,
    read_stats,
)
from bessai.uplink.uplink import Uplink

__all__ = [
    "Accepted",
    "CommandSource",
    "ConfigError",
    "Credentials",
    "CredentialsError",
    "DefaultCredentials",
    "Endpoint",
    "Link",
    "LinkState",
    "MessageInvalid",
    "NoAuth",
    "PublishOutcome",
    "PublishResult",
    "Publisher",
    "Record",
    "Recorder",
    "RowPriority",
    "ServiceAccountKey",
    "Spool",
    "SpoolError",
    "SpoolRow",
    "SpoolStats",
    "SpoolWriteError",
    "Uplink",
    "backup_spool",
    "command_message",
    "credentials_for",
    "export_rows",
    "make_client",
    "publish_command",
    "read_stats",
]
