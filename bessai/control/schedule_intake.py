"""Schedule intake: a schedule message from the commands subscription (or `bessai schedule
push`) becomes the device's plan, or a rejection listing every reason.

The pipeline, like the command gate's:

1. **route** (`ScheduleIntake.route`): a message whose JSON body says ``"type": "schedule"`` is
   a schedule; everything else goes to the command router unchanged;
2. **parse** (`parse_schedule`): size, depth, then every field, every problem at once;
3. **verify** (with a `ScopeVerifier`, issue 14): with verify keys configured a schedule is
   verified the same way as a command — a signature over its exact bytes naming this site and
   device — before anything is stored or remembered (``signature_*``);
4. **check**: for this site, for a device this gateway drives (``wrong_site``, ``wrong_device``);
5. **store** (`ScheduleStore.replace`, in a worker thread): the device's previous schedule is
   replaced atomically; only then does the new one reach the `ScheduleBook` and the executor
   (``store_failed`` if the disk refused it: the old plan stays in force);
6. **acknowledge**: one critical SCHEDULE_ACCEPTED / SCHEDULE_REJECTED event (kind
   ``command_result``, body ``"type": "schedule_result"``) per distinct schedule id; a redelivered
   id gets its first answer back and is not stored twice.

Invariant: `handle` never raises for any input, so the Pub/Sub message is acknowledged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
import structlog
import trio

from bessai.bounds import MAX_REASON_CHARS, clip
from bessai.clock import WallClock
from bessai.control.command import field_errors
from bessai.control.events import EventEmitter
from bessai.control.schedule import (
    InvalidSchedule,
    Schedule,
    ScheduleLimits,
    decode_body,
    is_schedule_message,
    parse_schedule,
)
from bessai.control.schedule_store import ScheduleBook, ScheduleStore
from bessai.model import Event, RecordKind
from bessai.observe.sink import NULL_SINK, MetricSink

log = structlog.get_logger("bessai.control.schedule_intake")

MessageHandler = Callable[[bytes, Mapping[str, str] | None], Awaitable[Any]]


@attrs.frozen
class ScheduleOutcome:
    """What became of one schedule message."""

    schedule: Schedule | None
    accepted: bool
    code: str
    reason: str
    schedule_id: str | None = None
    device_id: str | None = None
    errors: Mapping[str, str] = attrs.field(factory=dict, converter=field_errors)


class ScopeVerifier(Protocol):
    """What the intake asks before it trusts a schedule (`bessai.trust.CommandTrust`)."""

    def verify_scope(self, data: bytes, attributes: Mapping[str, str], site_id: str,
                     device_id: str) -> str | None: ...


@attrs.define(eq=False)
class ScheduleIntake:
    """Parses, checks, stores and acknowledges schedules for the devices of one gateway.

    ``limits`` maps each device id this gateway drives to the limits its slots are checked
    against (the profile's writable power tags, the minimum command power).
    """

    site_id: str
    limits: Mapping[str, ScheduleLimits]
    store: ScheduleStore
    book: ScheduleBook
    emit: EventEmitter
    wall_clock: WallClock
    metrics: MetricSink = NULL_SINK
    remember: int = 256
    limiter: Any = None
    trust: ScopeVerifier | None = None
    """Signed schedules (issue 14, `bessai.trust.CommandTrust`): with verify keys configured a
    schedule must carry a valid signature over its exact bytes, like a command."""
    """The worker-thread limiter for the store's writes (tests freeze virtual time with it)."""
    _seen: OrderedDict[str, ScheduleOutcome] = attrs.field(factory=OrderedDict)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    def route(self, commands: MessageHandler) -> MessageHandler:
        """The commands subscription's handler: schedules here, everything else to
        ``commands`` (the `CommandRouter`), which reports what it cannot parse."""

        async def handler(data: bytes, attributes: Mapping[str, str] | None = None) -> Any:
            try:
                body = decode_body(data)
            except InvalidSchedule:
                return await commands(data, attributes)  # it says why, as a command
            if is_schedule_message(body):
                return await self.handle(data, attributes)  # the exact bytes: signed
            return await commands(data, attributes)

        return handler

    async def handle(self, data: bytes | str | Mapping[str, Any],
                     attributes: Mapping[str, str] | None = None) -> ScheduleOutcome:
        """Parse, (verify,) check, store, acknowledge. Never raises (bar cancellation)."""
        try:
            return await self._handle(data, attributes)
        except trio.Cancelled:
            raise
        except Exception as exc:
            log.exception("schedule_intake_error", site=self.site_id)
            outcome = ScheduleOutcome(None, False, "internal_error",
                                      clip(f"internal error in schedule intake "
                                           f"({type(exc).__name__}: {clip(exc)})",
                                           MAX_REASON_CHARS))
            self._record(outcome)
            return outcome

    async def _handle(self, data: bytes | str | Mapping[str, Any],
                      attributes: Mapping[str, str] | None) -> ScheduleOutcome:
        now = self.wall_clock()
        device_hint = attributes.get("device_id") if isinstance(attributes, Mapping) else None
        try:
            body = decode_body(data) if isinstance(data, bytes | str) else data
            if device_hint is None and isinstance(body, Mapping):
                device_hint = body.get("device_id")
            limits = self.limits.get(device_hint) if isinstance(device_hint, str) else None
            schedule = parse_schedule(body, now_wall=now, attributes=attributes,
                                      limits=limits or ScheduleLimits())
        except InvalidSchedule as exc:
            outcome = ScheduleOutcome(None, False, exc.code, str(exc), exc.schedule_id,
                                      device_hint if isinstance(device_hint, str) else None,
                                      exc.errors)
            self._record(outcome)
            return outcome
        refusal = self._verify(data, attributes, schedule)  # before any state: burns nothing
        if refusal is not None:
            outcome = ScheduleOutcome(schedule, False, refusal.split(":", 1)[0],
                                      clip(refusal, 1000), schedule.schedule_id,
                                      schedule.device_id)
            self._record(outcome)
            return outcome
        async with self._lock:
            previous = self._seen.get(schedule.schedule_id)
            if previous is not None:
                log.info("schedule_duplicate", schedule_id=schedule.schedule_id)
                return previous
            outcome = await self._check_and_store(schedule, limits, now)
            self._seen[schedule.schedule_id] = outcome
            while len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            self._record(outcome)
            return outcome

    def _verify(self, data: Any, attributes: Mapping[str, str] | None,
                schedule: Schedule) -> str | None:
        if self.trust is None:
            return None
        raw = data if isinstance(data, bytes | bytearray) else None
        if raw is None:  # a decoded body has no exact bytes to check a signature over
            raw = b""
        return self.trust.verify_scope(bytes(raw), attributes or {}, schedule.site_id,
                                       schedule.device_id)

    async def _check_and_store(self, schedule: Schedule, limits: ScheduleLimits | None,
                               now: float) -> ScheduleOutcome:
        def reject(code: str, reason: str) -> ScheduleOutcome:
            return ScheduleOutcome(schedule, False, code, reason, schedule.schedule_id,
                                   schedule.device_id)

        if schedule.site_id != self.site_id:
            return reject("wrong_site", f"schedule is for site {clip(schedule.site_id, 64)!r}, "
                          f"this gateway serves {self.site_id!r}")
        if limits is None:  # checked against the defaults only: not ours to drive anyway
            return reject("wrong_device", f"schedule is for device "
                          f"{clip(schedule.device_id, 64)!r}; this gateway drives "
                          f"{sorted(self.limits)}")
        try:
            await trio.to_thread.run_sync(self.store.replace, schedule, now,
                                          limiter=self.limiter)
        except (OSError, Exception) as exc:  # sqlite3.Error, disk full, read-only...
            return reject("store_failed", f"could not store the schedule "
                          f"({type(exc).__name__}: {clip(exc)}) — the previous plan stays in "
                          f"force; fix the disk ({self.store.path}) and send it again")
        self.book.put(schedule)
        return ScheduleOutcome(schedule, True, "ok", f"stored; {len(schedule.slots)} slots "
                               f"until {schedule.valid_until:.0f}", schedule.schedule_id,
                               schedule.device_id)

    def _record(self, outcome: ScheduleOutcome) -> None:
        name = "SCHEDULE_ACCEPTED" if outcome.accepted else "SCHEDULE_REJECTED"
        body: dict[str, Any] = {"type": "schedule_result", "schedule_id": outcome.schedule_id,
                                "decision": "accepted" if outcome.accepted else "rejected",
                                "code": outcome.code,
                                "reason": clip(outcome.reason, MAX_REASON_CHARS)}
        if outcome.schedule is not None:
            body.update(slots=len(outcome.schedule.slots),
                        valid_until=outcome.schedule.valid_until)
        if outcome.errors:
            body["errors"] = {clip(k, 64): clip(v, MAX_REASON_CHARS)
                              for k, v in list(outcome.errors.items())[:33]}
        device = clip(outcome.device_id or "-", 64)
        self.metrics.count("bessai.schedules", decision=body["decision"], device=device)
        fields = {k: v for k, v in body.items() if v is not None and k not in ("errors", "type")}
        if outcome.accepted:
            log.info(name, site=self.site_id, device=device, **fields)
        else:
            log.warning(name, site=self.site_id, device=device, **fields)
        self.emit(Event(name=name, site_id=self.site_id, device_id=device, ts=self.wall_clock(),
                        body=body, kind=RecordKind.COMMAND_RESULT, critical=True))
