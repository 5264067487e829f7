"""On Google's Pub/Sub emulator only: create the topics and subscriptions the gateway needs.

The emulator keeps nothing across its restarts, and a missing topic there is a chore, not a
fault. With ``PUBSUB_EMULATOR_HOST`` set, the gateway (the ``emulator_setup`` child, started
before the uplink and the commands source) and ``bessai command`` create what is missing:
the telemetry topic, the commands topic, and the commands subscription on it. The child looks
again every `CHECK_EVERY_S`, so an emulator restarted under a running gateway gets them back.

Invariant: **never against real Pub/Sub.** `EmulatorSetup` refuses an endpoint that is not the
emulator; on real Pub/Sub a missing topic is a configuration fault (``PUBSUB_CONFIG_FAULT``,
with the exact ``gcloud`` command), retried with the normal backoff.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import httpx
import structlog
import trio

from bessai.uplink.credentials import Endpoint

__all__ = ["CHECK_EVERY_S", "EmulatorSetup", "ensure_resources"]

log = structlog.get_logger("bessai.uplink.emulator_setup")

CHECK_EVERY_S = 30.0
FIRST_TRY_S = 5.0
"""How long the first creation may hold the start-up (then it goes on in the background)."""


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _pairs(values: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(values)


def _not_real_pubsub(_inst: Any, _attr: Any, endpoint: Endpoint) -> None:
    if not endpoint.emulator:
        raise ValueError("topics and subscriptions are created on the Pub/Sub emulator only, "
                         "never on real Pub/Sub (create them with gcloud, see ops/RUNBOOK.md)")


async def ensure_resources(client: httpx.AsyncClient, endpoint: Endpoint, project: str,
                           topics: Sequence[str],
                           subscriptions: Sequence[tuple[str, str]]) -> list[str]:
    """Create each missing topic, then each missing ``(subscription, topic)``; return what was
    created (``topic:NAME`` / ``subscription:NAME``). Raises `httpx.HTTPError` when the emulator
    does not answer or refuses."""
    _not_real_pubsub(None, None, endpoint)
    base = f"{endpoint.base_url}/v1/projects/{project}"
    created = []
    for topic in dict.fromkeys(topics):
        answer = await client.put(f"{base}/topics/{topic}")
        if answer.status_code != 409:  # 409: it already exists
            answer.raise_for_status()
            created.append(f"topic:{topic}")
    for subscription, topic in dict.fromkeys(subscriptions):
        answer = await client.put(f"{base}/subscriptions/{subscription}", json={
            "topic": f"projects/{project}/topics/{topic}", "ackDeadlineSeconds": 60})
        if answer.status_code != 409:
            answer.raise_for_status()
            created.append(f"subscription:{subscription}")
    return created


@attrs.define(eq=False)
class EmulatorSetup:
    """The ``emulator_setup`` actor: creates what is missing at start (for at most
    `FIRST_TRY_S`, so an emulator that is not up yet does not hold the start), then checks
    again every ``check_every_s``. An unreachable emulator is the uplink's state to report
    (``LINK_DOWN``), not this actor's: it only retries quietly."""

    client: httpx.AsyncClient
    endpoint: Endpoint = attrs.field(validator=_not_real_pubsub)
    project: str
    topics: tuple[str, ...] = attrs.field(converter=_names)
    subscriptions: tuple[tuple[str, str], ...] = attrs.field(converter=_pairs)
    check_every_s: float = CHECK_EVERY_S
    created: list[str] = attrs.field(factory=list, init=False)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.move_on_after(FIRST_TRY_S):
            await self._ensure()
        task_status.started()
        while True:
            await trio.sleep(self.check_every_s)
            await self._ensure()

    async def _ensure(self) -> None:
        try:
            made = await ensure_resources(self.client, self.endpoint, self.project,
                                          self.topics, self.subscriptions)
        except (httpx.HTTPError, OSError) as error:
            log.debug("emulator_setup_failed", error=f"{type(error).__name__}: {error}"[:200])
            return
        for name in made:
            kind, _, resource = name.partition(":")
            log.info("EMULATOR_RESOURCE_CREATED", kind=kind, name=resource,
                     project=self.project, emulator=self.endpoint.base_url)
        self.created += made
