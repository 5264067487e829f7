"""The command source: dispatch commands pulled from a Pub/Sub subscription over REST.

``POST {base}/v1/projects/P/subscriptions/S:pull`` → for each message, in order,
``await handler(data, attributes)`` → ``:acknowledge`` the ones whose handler returned.

Invariants:
- A message is acknowledged only AFTER its handler returned: the handler (the safety gate)
  decides and records the outcome first. A crash in between means redelivery, so the handler
  must be idempotent by command id.
- A handler exception for one message never blocks the others: that message is nacked with a
  delay (``modifyAckDeadline`` to ``retry_delay_s``), logged as ``COMMAND_HANDLER_FAILED``, and
  the loop continues.
- While the subscription cannot be reached the source backs off (full jitter, Trio's clock)
  and logs ``LINK_DOWN`` / ``LINK_UP`` once per transition (link ``commands``).
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import httpx
import structlog
import trio

from bessai.bounds import clip
from bessai.clock import WallClock, system_wall_clock
from bessai.model import Command
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.status_cell import LinkReport, StatusCell
from bessai.uplink.credentials import Credentials, CredentialsError, Endpoint, NoAuth
from bessai.uplink.link import Link
from bessai.uplink.message import rfc3339, validate_attributes
from bessai.uplink.publisher import publish_json
from bessai.uplink.retry import RetrySchedule, retry_after_from_headers

CommandHandler = Callable[[bytes, dict[str, str]], Awaitable[None]]


class _PullFailed(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None, config: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.config = config


@attrs.define(eq=False)
class CommandSource:
    """Pulls ``subscription`` and hands every message to ``handler``. Run `run` as an actor."""

    client: httpx.AsyncClient
    project: str
    subscription: str
    handler: CommandHandler
    credentials: Credentials = attrs.field(factory=NoAuth)
    endpoint: Endpoint = attrs.field(factory=Endpoint)
    max_messages: int = 10
    return_immediately: bool = False
    """False: long-poll (the server holds the request until messages arrive). True: answer at
    once and sleep ``idle_poll_s`` when empty (for virtual-time tests)."""
    idle_poll_s: float = 1.0
    retry_delay_s: int = 10
    timeout_s: float = 90.0
    config_fault_retry_s: float = 60.0
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    wall_clock: WallClock = system_wall_clock
    sink: MetricSink = NULL_SINK
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    observe: Callable[[Mapping[str, str], list[dict[str, Any]]], None] | None = None
    """Sees each pull answer's headers and messages before any handler runs (the clock skew
    tracker reads ``Date`` and ``publishTime``: bessai.trust.SkewTracker.observe_response)."""
    status_cell: StatusCell[LinkReport] | None = attrs.field(default=None, repr=False)
    """The tree's cell this instance publishes its link state and ``handled`` into."""
    link: Link = attrs.field(init=False)
    backoff: RetrySchedule = attrs.field(init=False)
    handled: int = attrs.field(default=0, init=False)
    failed: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.link = Link(name="commands", down_after=1, sink=self.sink, log=self.log,
                         on_change=self._publish_status)
        self.backoff = RetrySchedule(rng=self.rng)

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"

    def status(self) -> dict[str, Any]:
        """For the status endpoint (call from inside the Trio run)."""
        return {**self.link.status(), "subscription": self.subscription_path,
                "handled": self.handled, "handler_failures": self.failed}

    def _publish_status(self) -> None:
        if self.status_cell is not None:
            self.status_cell.publish(LinkReport.of(self.link, self.handled, self.failed))

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._publish_status()
        task_status.started()
        while True:
            try:
                received = await self._pull()
            except _PullFailed as failure:
                delay = self.backoff.next_delay(
                    failure.retry_after_s,
                    floor_s=self.config_fault_retry_s if failure.config else 0.0)
                if failure.config and not self.link.is_down:
                    self.log.error("PUBSUB_CONFIG_FAULT", subscription=self.subscription_path,
                                   reason=failure.reason,
                                   check="the subscription must exist and the service account "
                                         "needs roles/pubsub.subscriber on it")
                self.link.failed(failure.reason, delay, fatal=failure.config)
                await trio.sleep(delay)
                continue
            self.link.succeeded()
            self.backoff.reset()
            if not received:
                if self.return_immediately:
                    await trio.sleep(self.idle_poll_s)
                continue
            await self._dispatch(received)

    async def _post(self, verb: str, body: Mapping[str, Any]) -> httpx.Response:
        try:
            headers = await self.credentials.headers()
        except CredentialsError as exc:
            raise _PullFailed(f"credentials unavailable ({exc})") from None
        url = f"{self.endpoint.base_url}/v1/{self.subscription_path}:{verb}"
        response = None
        with trio.move_on_after(self.timeout_s * 2):  # a black-holed link ends as a timeout
            try:
                response = await self.client.post(url, json=dict(body), headers=headers,
                                                  timeout=self.timeout_s)
            except (httpx.TransportError, OSError) as exc:
                raise _PullFailed(f"{type(exc).__name__}: {str(exc)[:120]}") from None
        if response is None:
            raise _PullFailed(f"Timeout: no answer within {self.timeout_s * 2:.0f} s")
        if response.status_code == 200:
            return response
        if response.status_code == 401:
            self.credentials.invalidate()
        raise _PullFailed(
            f"{response.status_code} {response.text[:200]}",
            retry_after_from_headers(response.headers, self.wall_clock),
            config=response.status_code in (403, 404))

    async def _pull(self) -> list[dict[str, Any]]:
        response = await self._post("pull", {"maxMessages": self.max_messages,
                                             "returnImmediately": self.return_immediately})
        try:
            received = list(response.json().get("receivedMessages", []))
        except ValueError:
            raise _PullFailed("pull answered 200 with a body that is not JSON") from None
        if self.observe is not None:  # issue 14: clock skew from Date and publishTime
            self.observe(response.headers, received)
        return received

    async def _dispatch(self, received: list[dict[str, Any]]) -> None:
        acks: list[str] = []
        nacks: list[str] = []
        for item in received:
            ack_id, message_id, data, attributes, problem = _unpack(item)
            if problem is not None:
                self.log.error("COMMAND_UNDECODABLE", message_id=clip(message_id, 64),
                               detail=problem,
                               action="acknowledged and dropped: it is not a Pub/Sub message "
                                      "with base64 data")
                if ack_id:
                    acks.append(ack_id)
                continue
            try:
                await self.handler(data, attributes)
            except Exception as exc:
                self.failed += 1
                self._publish_status()
                self.sink.count("bessai.commands.handler_failures")
                self.log.error("COMMAND_HANDLER_FAILED", message_id=clip(message_id, 64),
                               command_id=clip(attributes.get("msg_id"), 64),
                               error=type(exc).__name__, detail=clip(exc),
                               redelivery_in_s=self.retry_delay_s)
                nacks.append(ack_id)
                continue
            self.handled += 1
            self._publish_status()
            self.sink.count("bessai.commands.received")
            acks.append(ack_id)
        await self._settle("acknowledge", {"ackIds": acks}, acks)
        await self._settle("modifyAckDeadline",
                           {"ackIds": nacks, "ackDeadlineSeconds": self.retry_delay_s}, nacks)

    async def _settle(self, verb: str, body: Mapping[str, Any], ids: list[str]) -> None:
        if not ids:
            return
        try:
            await self._post(verb, body)
        except _PullFailed as failure:
            # not fatal: unacked messages come back after their deadline (handlers are
            # idempotent by command id)
            self.log.warning("COMMAND_ACK_FAILED", verb=verb, count=len(ids),
                             reason=failure.reason)


def _unpack(item: Any) -> tuple[str, Any, bytes, dict[str, str], str | None]:
    """(ack id, message id, data, attributes, problem) of one received message; never raises.

    ``problem`` is None for a well-formed message. Only the envelope is checked here (Pub/Sub's
    own JSON); what the data says is the handler's business (the gate checks its size first).
    """
    if not isinstance(item, Mapping):
        return "", None, b"", {}, f"a received message is a {type(item).__name__}"
    ack_id = item.get("ackId")
    ack_id = ack_id if isinstance(ack_id, str) else ""
    message = item.get("message")
    if not isinstance(message, Mapping):
        return ack_id, None, b"", {}, "no message object"
    message_id = message.get("messageId")
    raw_attributes = message.get("attributes") or {}
    if not isinstance(raw_attributes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_attributes.items()):
        return ack_id, message_id, b"", {}, "attributes are not a map of strings"
    encoded = message.get("data", "")
    if not isinstance(encoded, str):
        return ack_id, message_id, b"", {}, "data is not a base64 string"
    try:
        data = base64.b64decode(encoded, validate=True)
    except ValueError:
        return ack_id, message_id, b"", {}, "data is not base64"
    return ack_id, message_id, data, dict(raw_attributes), None


def command_message(command: Command | Mapping[str, Any], *,
                    wall_clock: WallClock = system_wall_clock) -> dict[str, Any]:
    """A dispatch command as a PubsubMessage: JSON data plus the usual attributes."""
    body = attrs.asdict(command) if isinstance(command, Command) else dict(command)
    body["action"] = str(body.get("action", ""))
    for key in ("id", "site_id", "device_id", "action"):
        if not body.get(key):
            raise ValueError(f"a command needs {key!r}; got {sorted(body)}")
    issued = float(body.get("issued_at") or wall_clock())
    attributes = {"msg_id": str(uuid.uuid4()), "command_id": str(body["id"]),
                  "site_id": str(body["site_id"]), "device_id": str(body["device_id"]),
                  "kind": "command", "schema": "bessai.command.v1",
                  "event_time": rfc3339(issued)}
    validate_attributes(attributes)
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return {"data": base64.b64encode(data).decode(), "attributes": attributes}


async def publish_command(client: httpx.AsyncClient, project: str, topic: str,
                          command: Command | Mapping[str, Any], *,
                          endpoint: Endpoint | None = None,
                          credentials: Credentials | None = None,
                          wall_clock: WallClock = system_wall_clock) -> str:
    """Publish one dispatch command (for ``bessai command ...``); returns Pub/Sub's message id.

    One attempt, no spool: the operator sees the error at once and can retry.
    """
    message = command_message(command, wall_clock=wall_clock)
    ids = await publish_json(client, endpoint or Endpoint(), f"projects/{project}/topics/{topic}",
                             [message], credentials=credentials)
    return ids[0]

