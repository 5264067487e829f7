"""One Pub/Sub REST publish request, classified: the uplink decides what to do with the result.

``POST {base}/v1/projects/P/topics/T:publish`` with ``{"messages": [...]}``. The publisher never
raises for an HTTP or transport failure; it returns a `PublishResult` whose `PublishOutcome` says
what the response means:

| response | outcome |
|---|---|
| 200 with one ``messageId`` per message | OK — only then may rows be deleted |
| 200 with a different count | RETRY (nothing is assumed published) |
| transport error, 408, 429, 500, 502, 503, 504 | RETRY (with ``Retry-After`` if sent) |
| 401 | UNAUTHORIZED — refresh credentials once |
| 400, 413 | BAD_REQUEST — bisect to find the poison message |
| 403, 404 | CONFIG_FAULT — wrong project/topic/permissions; keep the data |
| anything else | RETRY |
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx
import trio

from bessai.clock import WallClock, system_wall_clock
from bessai.uplink.credentials import Credentials, CredentialsError, Endpoint, NoAuth
from bessai.uplink.message import (
    MAX_BATCH_MESSAGES,
    SpoolRow,
    encode_publish_body,
    validate_attributes,
)
from bessai.uplink.retry import retry_after_from_headers

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class PublishOutcome(enum.StrEnum):
    OK = "ok"
    RETRY = "retry"
    UNAUTHORIZED = "unauthorized"
    BAD_REQUEST = "bad_request"
    CONFIG_FAULT = "config_fault"


@attrs.frozen
class PublishResult:
    outcome: PublishOutcome
    status: int | None
    message_ids: tuple[str, ...] = ()
    retry_after_s: float | None = None
    reason: str = ""

    @property
    def status_label(self) -> str:
        """For the ``bessai.publish.results{status}`` counter: the HTTP code or the error."""
        return str(self.status) if self.status is not None else self.reason.split(":")[0]


def classify(status: int) -> PublishOutcome:
    if status == 200:
        return PublishOutcome.OK
    if status in RETRYABLE_STATUS:
        return PublishOutcome.RETRY
    if status == 401:
        return PublishOutcome.UNAUTHORIZED
    if status in (400, 413):
        return PublishOutcome.BAD_REQUEST
    if status in (403, 404):
        return PublishOutcome.CONFIG_FAULT
    return PublishOutcome.RETRY


def _error_detail(response: httpx.Response) -> str:
    try:
        err = response.json().get("error", {})
        return f"{err.get('status', '')} {err.get('message', '')}".strip()[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


@attrs.define(eq=False)
class Publisher:
    """Publishes rows to one topic; ``client`` (or its transport) is the fault-injection seam."""

    client: httpx.AsyncClient
    project: str
    topic: str
    endpoint: Endpoint = attrs.field(factory=Endpoint)
    credentials: Credentials = attrs.field(factory=NoAuth)
    timeout_s: float = 30.0
    wall_clock: WallClock = system_wall_clock
    extra_attributes: Mapping[str, str] = attrs.field(factory=dict)
    """Attributes added to every message (``bessai-run --simulator``: ``simulated=true``)."""

    def __attrs_post_init__(self) -> None:
        validate_attributes(self.extra_attributes)

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    @property
    def url(self) -> str:
        return f"{self.endpoint.base_url}/v1/{self.topic_path}:publish"

    async def publish(self, rows: Sequence[SpoolRow]) -> PublishResult:
        if not rows or len(rows) > MAX_BATCH_MESSAGES:
            raise ValueError(f"a publish request holds 1..{MAX_BATCH_MESSAGES} messages, "
                             f"not {len(rows)}")
        body = encode_publish_body(list(rows), self.extra_attributes)
        try:
            headers = await self.credentials.headers()
        except CredentialsError as exc:
            return PublishResult(PublishOutcome.RETRY, None,
                                 reason=f"credentials unavailable ({exc})")
        headers["content-type"] = "application/json"
        response = None
        # httpx's timeouts cover each read and write; this deadline also covers a peer (or an
        # injected transport) that trickles or black-holes the whole exchange
        with trio.move_on_after(self.timeout_s * 2):
            try:
                response = await self.client.post(self.url, content=body, headers=headers,
                                                  timeout=self.timeout_s)
            except (httpx.TransportError, trio.BrokenResourceError, OSError) as exc:
                return PublishResult(PublishOutcome.RETRY, None,
                                     reason=f"{type(exc).__name__}: {str(exc)[:120]}")
        if response is None:
            return PublishResult(PublishOutcome.RETRY, None,
                                 reason=f"Timeout: no answer within {self.timeout_s * 2:.0f} s")
        outcome = classify(response.status_code)
        retry_after = retry_after_from_headers(response.headers, self.wall_clock)
        if outcome is PublishOutcome.OK:
            try:
                ids = tuple(response.json().get("messageIds", ()))
            except ValueError:
                ids = ()
            if len(ids) != len(rows):
                return PublishResult(PublishOutcome.RETRY, 200, ids,
                                     reason=f"200 with {len(ids)} messageIds for {len(rows)} "
                                            "messages")
            return PublishResult(PublishOutcome.OK, 200, ids)
        return PublishResult(outcome, response.status_code, retry_after_s=retry_after,
                             reason=f"{response.status_code} {_error_detail(response)}")


async def publish_json(client: httpx.AsyncClient, endpoint: Endpoint, topic_path: str,
                       messages: list[dict[str, Any]], *, credentials: Credentials | None = None,
                       timeout_s: float = 30.0) -> list[str]:
    """Publish already-built PubsubMessage dicts once (no retry); raise on any failure.

    For one-shot tools (``bessai command``), not for the durable path.
    """
    headers = await (credentials or NoAuth()).headers()
    headers["content-type"] = "application/json"
    response = await client.post(f"{endpoint.base_url}/v1/{topic_path}:publish",
                                 json={"messages": messages}, headers=headers, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeError(f"publish to {topic_path} failed: {response.status_code} "
                           f"{_error_detail(response)} — check the project, topic and "
                           "credentials")
    return list(response.json().get("messageIds", []))
