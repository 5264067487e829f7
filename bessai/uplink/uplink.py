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
- A Pub/Sub that rejects EVERY message is not a run of poison messages: after
  ``all_rejected_after`` dead letters in a row with no message accepted in between, the uplink
  stops dead-lettering. ``UPLINK_ALL_REJECTED`` is logged once, the link is ``degraded`` with
  the reason, rows stay in the spool, and every backoff delay (at least
  ``all_rejected_retry_s``) two of the oldest rows are offered one by one. The first one
  accepted ends the state (``UPLINK_ALL_REJECTED_CLEARED``, once) and normal publishing —
  including bisection of a genuine poison message — resumes.
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

from bessai.bounds import clip
from bessai.model import Event, RecordKind
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.observe.tracing import NULL_TRACER, Tracer
from bessai.status_cell import LinkReport, StatusCell
from bessai.uplink.link import Link
from bessai.uplink.message import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    SpoolRow,
    record_from_event,
    split_batches,
)
from bessai.uplink.publisher import Publisher, PublishOutcome, PublishResult
from bessai.uplink.retry import RetrySchedule
from bessai.uplink.spool import Spool


def _is_poison_alert(row: SpoolRow) -> bool:
    if row.kind != RecordKind.EVENT:
        return False
    try:
        body: object = json.loads(row.data)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("name") == "PUBSUB_POISON_MESSAGE"


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
    all_rejected_after: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """Dead letters in a row (no message accepted between them) that mean "Pub/Sub rejects
    everything": past it, rows are held in the spool, not dead-lettered."""
    all_rejected_retry_s: float = 5.0
    """Least delay between probes while every message is rejected (the backoff grows to
    ``backoff_cap_s``)."""
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    status_cell: StatusCell[LinkReport] | None = attrs.field(default=None, repr=False)
    """The tree's cell this instance publishes its link state and ``published`` into."""
    link: Link = attrs.field(init=False)
    backoff: RetrySchedule = attrs.field(init=False)
    published: int = attrs.field(default=0, init=False)
    poisoned: int = attrs.field(default=0, init=False)
    _config_fault: bool = attrs.field(default=False, init=False, repr=False)
    dead_in_row: int = attrs.field(default=0, init=False)
    """Dead letters since the last message Pub/Sub accepted."""
    _rejected_since: float | None = attrs.field(default=None, init=False, repr=False)
    _rejected_reason: str | None = attrs.field(default=None, init=False, repr=False)
    _rejected_probes: int = attrs.field(default=0, init=False, repr=False)

    @property
    def all_rejected(self) -> bool:
        """True while Pub/Sub rejects every message and rows are held instead of dead-lettered."""
        return self._rejected_since is not None

    def __attrs_post_init__(self) -> None:
        self.link = Link(name="pubsub", down_after=self.down_after, sink=self.sink, log=self.log,
                         on_change=self._publish_status)
        self.backoff = RetrySchedule(rng=self.rng, base_s=self.backoff_base_s,
                                     cap_s=self.backoff_cap_s)

    def status(self) -> dict[str, Any]:
        """For the status endpoint (call from inside the Trio run)."""
        return {**self.link.status(), "topic": self.publisher.topic_path,
                "published": self.published, "poisoned": self.poisoned,
                "config_fault": self._config_fault, "all_rejected": self.all_rejected,
                "spool": self.spool.stats().to_json()}

    def _publish_status(self) -> None:
        if self.status_cell is not None:
            self.status_cell.publish(LinkReport.of(self.link, self.published))

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._publish_status()
        self.spool.reset_leases()
        task_status.started()
        while True:
            if self.link.is_down:
                await self._probe()
            elif self.all_rejected:
                await self._probe_rejected()
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
            await self._after_failures(failures)
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
        if failures and self.all_rejected and all(
                f.result.outcome is PublishOutcome.BAD_REQUEST for f in failures):
            # the network is back (Pub/Sub answered), but it still rejects every message
            self.link.succeeded()
            self.link.rejecting(f"Pub/Sub rejects every message "
                                f"({clip(self._rejected_reason, 120)})")
        if failures:
            await self._after_failures(failures)
        else:
            self._succeeded()

    async def _probe_rejected(self) -> None:
        """Every message is being rejected: offer the two oldest rows, one at a time (two, so a
        single genuine poison message at the head cannot keep the state on forever)."""
        rows = await self.spool.lease(2)
        if not rows:
            with trio.move_on_after(self.idle_poll_s):
                await self.spool.wait_changed()
            return
        self._rejected_probes += 1
        failures: list[_Failure] = []
        unsent: list[SpoolRow] = list(rows)
        try:
            while unsent and self.all_rejected:
                row = unsent.pop(0)
                failures.extend(await self._send([row]))
        finally:
            self.spool.release([r for f in failures for r in f.rows] + unsent)
        if not self.all_rejected:
            self._succeeded()
            return
        await self._after_failures(failures)

    async def _after_failures(self, failures: list[_Failure]) -> None:
        """Back off. Rows held because every message is rejected are not link failures (the
        peer answered): they wait at least ``all_rejected_retry_s`` without touching the link's
        failure count; any other failure goes through the link state machine."""
        other = [f for f in failures if f.result.outcome is not PublishOutcome.BAD_REQUEST]
        if other or not self.all_rejected:
            await self._back_off(other or failures)
            return
        delay = self.backoff.next_delay(None, floor_s=self.all_rejected_retry_s)
        self.log.debug("uplink_all_rejected_probe", retry_in_s=round(delay, 1),
                       probes=self._rejected_probes)
        await trio.sleep(delay)

    def _enter_all_rejected(self, result: PublishResult) -> None:
        if self.all_rejected:
            return
        self._rejected_since = trio.current_time()
        self._rejected_reason = result.reason
        self._rejected_probes = 0
        reason = f"Pub/Sub rejects every message ({clip(result.reason, 120)})"
        self.link.rejecting(reason)
        self.sink.count("bessai.publish.all_rejected")
        self.log.error(
            "UPLINK_ALL_REJECTED", topic=self.publisher.topic_path, reason=clip(result.reason),
            dead_letters_in_row=self.dead_in_row,
            action="stopped dead-lettering: rows are held in the spool and offered again with "
                   "backoff; check the topic's schema/message limits and the gateway version")

    def _accepted(self) -> None:
        """Pub/Sub took a message: a run of dead letters (or the all-rejected state) ends."""
        self.dead_in_row = 0
        if self._rejected_since is None:
            return
        held_for = trio.current_time() - self._rejected_since
        self.log.warning("UPLINK_ALL_REJECTED_CLEARED", topic=self.publisher.topic_path,
                         held_for_s=round(held_for, 1), probes=self._rejected_probes,
                         previous_reason=clip(self._rejected_reason))
        self._rejected_since = None
        self._rejected_reason = None

    def _succeeded(self) -> None:
        if self.all_rejected:
            return  # nothing failed this round, but nothing was accepted: still degraded
        if self._config_fault:
            self.log.warning("PUBSUB_CONFIG_OK", topic=self.publisher.topic_path)
            self._config_fault = False
        self.link.succeeded()
        self.backoff.reset()

    async def _back_off(self, failures: list[_Failure]) -> None:
        config = [f for f in failures if f.result.outcome is PublishOutcome.CONFIG_FAULT]
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
        if result.outcome is PublishOutcome.OK:
            self.spool.ack(rows)
            self._accepted()
            self.published += len(rows)
            self._publish_status()
            self.sink.count("bessai.publish.messages", len(rows))
            return []
        if result.outcome is PublishOutcome.UNAUTHORIZED and not refreshed:
            self.log.info("credentials_refresh_after_401", topic=self.publisher.topic_path)
            self.publisher.credentials.invalidate()
            return await self._send(rows, refreshed=True)
        if result.outcome is PublishOutcome.BAD_REQUEST:
            if self.all_rejected:  # hold: no bisection, no dead letters
                return [_Failure(rows, result)]
            if len(rows) == 1:
                await self._poison(rows[0], result)
                return []
            middle = len(rows) // 2
            return (await self._send(rows[:middle], refreshed=refreshed)
                    + await self._send(rows[middle:], refreshed=refreshed))
        return [_Failure(rows, result)]

    async def _poison(self, row: SpoolRow, result: PublishResult) -> None:
        self.poisoned += 1
        self.dead_in_row += 1
        self.log.error("PUBSUB_POISON_MESSAGE", msg_id=row.msg_id, seq=row.seq,
                       device=row.device_id, kind=row.kind, reason=result.reason,
                       action="moved to the spool's dead_letter table; inspect it with "
                              "`bessai spool export --table dead_letter`")
        await self.spool.dead_letter(row, result.reason)
        if self.dead_in_row >= self.all_rejected_after:
            self._enter_all_rejected(result)
        if _is_poison_alert(row):
            return  # never alert about an alert: a rejected alert must not start a loop
        await self._alert(Event(
            name="PUBSUB_POISON_MESSAGE", site_id=row.site_id, device_id=row.device_id,
            ts=self.spool.wall_clock(), kind=RecordKind.EVENT, critical=True,
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
