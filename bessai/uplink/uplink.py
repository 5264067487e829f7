"""The uplink actor: spool → Pub/Sub, oldest first, with a link state machine.

Invariants:
- A row leaves the spool only after Pub/Sub returned a message id for it (`Spool.ack`), or
  when it is isolated as a poison message (moved to the dead-letter table, with a
  ``PUBSUB_POISON_MESSAGE`` alert event published in its place).
- Retryable failures (transport errors, 408, 429, 5xx) are retried with full-jitter exponential
  backoff honouring ``Retry-After``, with no total deadline: the disk is the buffer, and an
  outage of any length never consumes supervisor restart intensity.
- 401 refreshes credentials once, then backs off. 400 bisects the batch down to the poison
  message; the rest are published. 403/404 are configuration faults: ``PUBSUB_CONFIG_FAULT``
  is logged once (naming project/topic and what to check), the data is kept, retries are slow.
- While the link is down one message probes it; after ``LINK_UP`` the backlog drains oldest
  first with ``concurrency`` batches in flight while live rows keep being appended behind it.
- All waits are on Trio's clock; jitter comes from the injected ``rng``.
"""

from __future__ import annotations

import json
import random
from typing import Any

import attrs
import structlog
import trio

from bessai.model import Event, EventKind
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.observe.tracing import NULL_TRACER, Tracer
from bessai.uplink.link import Link
from bessai.uplink.message import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    SpoolRow,
    record_from_event,
    split_batches,
)
from bessai.uplink.publisher import Outcome, Publisher, PublishResult
from bessai.uplink.retry import Backoff
from bessai.uplink.spool import Spool


def _is_poison_alert(row: SpoolRow) -> bool:
    if row.kind != EventKind.EVENT:
        return False
    try:
        return json.loads(row.data).get("name") == "PUBSUB_POISON_MESSAGE"
    except (ValueError, AttributeError):
        return False


@attrs.frozen
class _Failure:
    rows: list[SpoolRow]
    result: PublishResult


@attrs.define(eq=False)
class Uplink:
    """Drains ``spool`` into ``publisher``'s topic. Run `run` as the ``uplink`` actor."""

    spool: Spool
    publisher: Publisher
    sink: MetricSink = NULL_SINK
    tracer: Tracer = attrs.field(default=NULL_TRACER, repr=False)
    """One ``publish_batch`` span per publish request: messages, status, outcome."""
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    batch_max: int = attrs.field(default=MAX_BATCH_MESSAGES, validator=[
        attrs.validators.ge(1), attrs.validators.le(MAX_BATCH_MESSAGES)])
    concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    idle_poll_s: float = 1.0
    config_fault_retry_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    down_after: int = 3
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    link: Link = attrs.field(init=False)
    backoff: Backoff = attrs.field(init=False)
    published: int = attrs.field(default=0, init=False)
    poisoned: int = attrs.field(default=0, init=False)
    _config_fault: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.link = Link(name="pubsub", down_after=self.down_after, sink=self.sink, log=self.log)
        self.backoff = Backoff(rng=self.rng, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s)

    def status(self) -> dict[str, Any]:
        """For the status endpoint (call from inside the Trio run)."""
        return {**self.link.status(), "topic": self.publisher.topic_path,
                "published": self.published, "poisoned": self.poisoned,
                "config_fault": self._config_fault, "spool": self.spool.stats().to_json()}

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.spool.reset_leases()
        task_status.started()
        while True:
            if self.link.is_down:
                await self._probe()
            else:
                await self._round()

    # ---- one round: up to `concurrency` batches in flight ------------------------------------

    async def _round(self) -> None:
        # one lease (one trip to the SQLite thread) for the whole round, split into requests
        rows = await self.spool.lease(self.batch_max * self.concurrency,
                                      max_bytes=MAX_BATCH_BYTES * self.concurrency)
        batches = split_batches(rows, max_messages=self.batch_max)
        if not batches:
            with trio.move_on_after(self.idle_poll_s):
                await self.spool.wait_changed()
            return
        failures: list[_Failure] = []

        async def one(rows: list[SpoolRow]) -> None:
            failures.extend(await self._send(rows))

        try:
            async with trio.open_nursery() as nursery:
                for rows in batches:
                    nursery.start_soon(one, rows)
        finally:
            if failures:
                for failure in failures:
                    self.spool.release(failure.rows)
        if failures:
            await self._back_off(failures)
        else:
            self._succeeded()

    async def _probe(self) -> None:
        rows = await self.spool.lease(1)
        if not rows:
            with trio.move_on_after(self.idle_poll_s):
                await self.spool.wait_changed()
            return
        self.link.probing()
        failures = await self._send(rows)
        for failure in failures:
            self.spool.release(failure.rows)
        if failures:
            await self._back_off(failures)
        else:
            self._succeeded()

    def _succeeded(self) -> None:
        if self._config_fault:
            self.log.warning("PUBSUB_CONFIG_OK", topic=self.publisher.topic_path)
            self._config_fault = False
        self.link.succeeded()
        self.backoff.reset()

    async def _back_off(self, failures: list[_Failure]) -> None:
        config = [f for f in failures if f.result.outcome is Outcome.CONFIG_FAULT]
        worst = config[0] if config else failures[0]
        retry_after = max((f.result.retry_after_s for f in failures
                           if f.result.retry_after_s is not None), default=None)
        delay = self.backoff.next_delay(
            retry_after, floor_s=self.config_fault_retry_s if config else 0.0)
        self.sink.count("bessai.publish.retries", len(failures))
        if config and not self._config_fault:
            self._config_fault = True
            await self._alert_config_fault(worst.result, delay)
        self.link.failed(worst.result.reason, delay, fatal=bool(config))
        await trio.sleep(delay)

    # ---- one batch: 401 refresh, 400 bisection ----------------------------------------------

    async def _send(self, rows: list[SpoolRow], *, refreshed: bool = False) -> list[_Failure]:
        started = trio.current_time()
        with self.tracer.span("publish_batch", messages=len(rows), after_refresh=refreshed) as span:
            result = await self.publisher.publish(rows)
            span.set(status=result.status_label, outcome=result.outcome.value)
        self.sink.record("bessai.publish.latency_s", trio.current_time() - started)
        self.sink.count("bessai.publish.results", status=result.status_label)
        if result.outcome is Outcome.OK:
            self.spool.ack(rows)
            self.published += len(rows)
            self.sink.count("bessai.publish.messages", len(rows))
            return []
        if result.outcome is Outcome.UNAUTHORIZED and not refreshed:
            self.log.info("credentials_refresh_after_401", topic=self.publisher.topic_path)
            self.publisher.credentials.invalidate()
            return await self._send(rows, refreshed=True)
        if result.outcome is Outcome.BAD_REQUEST:
            if len(rows) == 1:
                await self._poison(rows[0], result)
                return []
            middle = len(rows) // 2
            return (await self._send(rows[:middle], refreshed=refreshed)
                    + await self._send(rows[middle:], refreshed=refreshed))
        return [_Failure(rows, result)]

    async def _poison(self, row: SpoolRow, result: PublishResult) -> None:
        self.poisoned += 1
        self.log.error("PUBSUB_POISON_MESSAGE", msg_id=row.msg_id, seq=row.seq,
                       device=row.device_id, kind=row.kind, reason=result.reason,
                       action="moved to the spool's dead_letter table; inspect it with "
                              "`bessai spool export --table dead_letter`")
        await self.spool.dead_letter(row, result.reason)
        if _is_poison_alert(row):
            return  # never alert about an alert: a rejected alert must not start a loop
        await self._alert(Event(
            name="PUBSUB_POISON_MESSAGE", site_id=row.site_id, device_id=row.device_id,
            ts=self.spool.wall_clock(), kind=EventKind.EVENT, critical=True,
            body={"msg_id": row.msg_id, "seq": row.seq, "kind": row.kind,
                  "reason": result.reason}))

    async def _alert_config_fault(self, result: PublishResult, retry_in_s: float) -> None:
        topic = self.publisher.topic_path
        if result.status == 404:
            check = (f"the topic does not exist: create it (gcloud pubsub topics create "
                     f"{self.publisher.topic} --project {self.publisher.project}) or fix "
                     "GCP_PROJECT_ID / PUBSUB_TOPIC")
        else:
            check = ("permission denied: grant roles/pubsub.publisher on the topic to the "
                     "service account in GOOGLE_APPLICATION_CREDENTIALS")
        self.log.error("PUBSUB_CONFIG_FAULT", topic=topic, status=result.status,
                       reason=result.reason, check=check, retry_in_s=round(retry_in_s, 1),
                       note="data is kept in the spool and sent once this is fixed")
        self.sink.count("bessai.publish.config_faults")

    async def _alert(self, event: Event) -> None:
        try:
            await self.spool.append(record_from_event(event))
        except Exception as exc:  # an alert must never take the uplink down
            self.log.error("UPLINK_ALERT_NOT_SPOOLED", alert=event.name,
                           error=type(exc).__name__)
