"""The command gate: every dispatch command passes here before it can touch the battery.

The pipeline, one step after the other (the first failure decides; each gives a reason an
operator can act on and a ``code`` a program can):

1. **parse** (`parse_message` → `parse_command`): size, encoding, depth, then every field —
   codes ``too_large``, ``too_deep``, ``malformed``;
2. **verify** (with a `Trust`: signatures, issue 14) — codes ``signature_*``;
3. **gate** (`decide`, pure):

   a. it is for this site and this device (``wrong_site``, ``wrong_device``);
   b. it has not expired — ``expires_at <= wall now`` is rejected, never applied late
      (``expired``);
   c. ``stop`` and ``auto`` are accepted from here on (``end_forcing``): they end forcing, which
      is never less safe, so no policy below may hold them back;
   d. its expiry is at most `CommandPolicy.max_ttl_s` away (``ttl_too_long``; rejected, not
      clamped: the sender learns its command was not what it meant);
   e. the current safety state allows its direction (``blocked_by_safety``);
   f. its power is at least `CommandPolicy.min_power_w` (``below_min_power``; rejected, not
      treated as stop: send ``stop`` to stop);
   g. it fits the device: above the device's current max charge/discharge power or the writable
      power tag's max, it is clamped (decision ``clamped``); a limit of 0 W, or one below the
      minimum power, rejects it (``no_power_allowed``);
   h. the device's last applied command is at least `CommandPolicy.min_interval_s` old
      (``rate_limited``; rejected, not coalesced: a held command would be applied late; the
      sender retries with a new command id, as a redelivered id gets its first answer);

4. **apply** through the Dispatcher (``apply_failed`` if the device write failed,
   ``blocked_by_safety`` if a block arrived while it was being applied).

Accepted outcomes have code ``ok``, ``clamped`` or ``end_forcing``. A bug anywhere past parsing
answers ``internal_error`` (with the traceback in the log), never an exception to the command
source.

Invariants: `decide` is pure. `CommandGate.handle_command_message` and
`CommandRouter.handle_command_message` never raise for any input — they return the Outcome, so
the Pub/Sub message is acknowledged and never redelivered forever — and record exactly one
critical COMMAND_ACCEPTED / COMMAND_REJECTED event per distinct command id (a redelivered id
gets the first outcome back and is not applied twice). Everything echoed from the command (its
reason, its errors) is clipped (`bessai.bounds`).

With a `Trust` (`bessai.trust.CommandTrust`): the signature is verified right after parsing,
before any gate state is touched (a forged copy burns nothing); the gate then claims the id in
the durable replay store (a copy after a restart is rejected ``replay``), judges expiry on
server time while the local clock is untrusted, and refuses charge/discharge then
(``clock_untrusted``).
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
import structlog
import trio

from bessai.bounds import MAX_REASON_CHARS, clip
from bessai.clock import WallClock
from bessai.control.command import InvalidCommand, field_errors, parse_command
from bessai.control.dispatch import DispatchStopped
from bessai.control.events import EventEmitter
from bessai.control.limits import SafetyState
from bessai.model import Action, Command, Event, RecordKind, Snapshot
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.settings import Settings, setting_default

log = structlog.get_logger("bessai.control.gate")


class Decision(enum.StrEnum):
    ACCEPTED = "accepted"
    CLAMPED = "clamped"
    REJECTED = "rejected"


@attrs.frozen
class Outcome:
    """What became of one command. ``command`` is None when the message did not parse (then
    ``errors`` names each bad field); ``applied_power_w`` is the power written, if any."""

    command: Command | None
    decision: Decision
    reason: str
    applied_power_w: float | None = None
    errors: Mapping[str, str] = attrs.field(factory=dict, converter=field_errors)
    command_id: str | None = None
    code: str = "ok"
    """Machine-readable: ``ok``, ``clamped``, ``end_forcing`` or why it was rejected (the
    module docstring lists them)."""

    @property
    def accepted(self) -> bool:
        return self.decision is not Decision.REJECTED


@attrs.frozen
class CommandPolicy:
    """Bounds in time and rate on what a command may ask (COMMAND_MAX_TTL_S, COMMAND_MIN_POWER_W,
    COMMAND_MIN_INTERVAL_S). None of them ever holds back ``stop`` or ``auto``."""

    max_ttl_s: float = setting_default("command_max_ttl_s")
    """A charge/discharge whose ``expires_at`` is further than this from now is rejected (its
    lease would otherwise be renewed for as long as it says)."""
    min_power_w: float = setting_default("command_min_power_w")
    """A charge/discharge below this many watts is rejected (0.0001 W is not a setpoint)."""
    min_interval_s: float = setting_default("command_min_interval_s")
    """At most one applied change per this many seconds per device: a charge/discharge that
    arrives sooner after the last applied command is rejected ``rate_limited``."""

    @classmethod
    def from_settings(cls, settings: Settings) -> CommandPolicy:
        """From `bessai.settings.Settings` (``command_max_ttl_s`` ...)."""
        return cls(max_ttl_s=settings.command_max_ttl_s,
                   min_power_w=settings.command_min_power_w,
                   min_interval_s=settings.command_min_interval_s)


@attrs.frozen
class PowerLimits:
    """The most the device may be asked to charge / discharge right now, in W (None: unknown)."""

    max_charge_w: float | None = None
    max_discharge_w: float | None = None


def power_limits(snapshot: Snapshot | None, *, charge_tag_max_w: float | None = None,
                 discharge_tag_max_w: float | None = None,
                 charge_cap_tag: str = "max_charge_power",
                 discharge_cap_tag: str = "max_discharge_power") -> PowerLimits:
    """The tighter of the profile's writable-tag maximum and the device's own reported maximum
    (Huawei 37046 / 37048, read-only, in the latest snapshot)."""

    def tighter(profile_max: float | None, tag: str) -> float | None:
        device_max = snapshot.value(tag) if snapshot is not None else None
        known = [float(v) for v in (profile_max, device_max)
                 if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                 and v >= 0]
        return min(known) if known else None

    return PowerLimits(tighter(charge_tag_max_w, charge_cap_tag),
                       tighter(discharge_tag_max_w, discharge_cap_tag))


def decide(command: Command, *, site_id: str, device_id: str, now_wall: float,
           safety: SafetyState, limits: PowerLimits,
           policy: CommandPolicy = CommandPolicy(),
           since_last_change_s: float | None = None) -> Outcome:
    """The gate's verdict on a parsed command (pure: no I/O, no clock).

    ``since_last_change_s``: seconds since this device's last applied command (None: none yet).
    """

    def reject(code: str, reason: str) -> Outcome:
        return Outcome(command, Decision.REJECTED, reason, None, command_id=command.id,
                       code=code)

    if command.site_id != site_id:
        return reject("wrong_site", f"command is for site {clip(command.site_id, 64)!r}, "
                      f"this gateway serves {site_id!r}")
    if command.device_id != device_id:
        return reject("wrong_device",
                      f"command is for device {clip(command.device_id, 64)!r} on site "
                      f"{site_id!r}, this site supervisor drives {device_id!r}")
    if command.expires_at <= now_wall:
        return reject("expired", f"expired {now_wall - command.expires_at:.1f} s ago "
                      f"(expires_at={command.expires_at}) — send a fresh command")
    if command.action in (Action.STOP, Action.AUTO):
        return Outcome(command, Decision.ACCEPTED, f"{command.action.value}: end forcing", None,
                       command_id=command.id, code="end_forcing")
    ttl_s = command.expires_at - now_wall
    if ttl_s > policy.max_ttl_s:
        return reject("ttl_too_long",
                      f"expires in {ttl_s:.0f} s, more than COMMAND_MAX_TTL_S="
                      f"{policy.max_ttl_s:g} s — send a command that expires sooner and renew it")
    charging = command.action is Action.CHARGE
    blocked = safety.blocked_charge if charging else safety.blocked_discharge
    if blocked:
        return reject("blocked_by_safety", f"{command.action.value} blocked by safety: "
                      f"{safety.reasons(charge=charging)}")
    if command.power_w < policy.min_power_w:
        return reject("below_min_power",
                      f"{command.power_w:g} W is below COMMAND_MIN_POWER_W="
                      f"{policy.min_power_w:g} W — send action=stop to stop forcing")
    cap = limits.max_charge_w if charging else limits.max_discharge_w
    if cap is not None and (cap <= 0 or (cap < command.power_w and cap < policy.min_power_w)):
        return reject("no_power_allowed", f"device allows only {cap:g} W of "
                      f"{command.action.value} right now (COMMAND_MIN_POWER_W="
                      f"{policy.min_power_w:g} W)")
    if since_last_change_s is not None and since_last_change_s < policy.min_interval_s:
        return reject("rate_limited",
                      f"rate_limited: the last command on this device was applied "
                      f"{since_last_change_s:.1f} s ago; COMMAND_MIN_INTERVAL_S="
                      f"{policy.min_interval_s:g} s — send it again later (stop and auto are "
                      f"never rate-limited)")
    if cap is not None and command.power_w > cap:
        return Outcome(command, Decision.CLAMPED,
                       f"{command.power_w:g} W clamped to the device maximum {cap:g} W", cap,
                       command_id=command.id, code="clamped")
    return Outcome(command, Decision.ACCEPTED, "ok", command.power_w, command_id=command.id)


def parse_message(data: Any, attributes: Any = None) -> Command | Outcome:
    """Step 1 of the pipeline: the Command, or the rejected Outcome saying why. Never raises."""
    try:
        return parse_command(data, attributes)
    except InvalidCommand as exc:
        return Outcome(None, Decision.REJECTED, str(exc), None, errors=exc.errors,
                       command_id=exc.command_id, code=exc.code)
    except Exception as exc:  # parse_command promises InvalidCommand only; belt and braces
        log.exception("command_parse_error")
        return Outcome(None, Decision.REJECTED, _internal_error(exc), None,
                       code="internal_error")


def _internal_error(exc: BaseException) -> str:
    return clip(f"internal error in the command gate ({type(exc).__name__}: {clip(exc)}) — "
                "see the gateway log", MAX_REASON_CHARS)


class Applier(Protocol):
    """Puts an accepted command on the device (the Dispatcher). Raises if it could not."""

    async def apply(self, command: Command, power_w: float | None) -> None: ...


class Trust(Protocol):
    """Issue 14 (implemented by `bessai.trust.CommandTrust`): signatures, replay, clock trust.

    Each returns a rejection reason (its first word names it) or None."""

    def verify(self, data: bytes, attributes: Mapping[str, str],
               command: Command) -> str | None: ...

    async def admit(self, command: Command) -> str | None: ...

    def expiry_now(self, local_wall: float) -> float: ...

    def refuse_forcing(self, command: Command) -> str | None: ...


def _refused(command: Command, refusal: str) -> Outcome:
    """The rejection for a `Trust` refusal; its first word (before ``:``) is the code."""
    code = refusal.split(":", 1)[0].strip() or "untrusted"
    return Outcome(command, Decision.REJECTED, clip(refusal, MAX_REASON_CHARS), None,
                   command_id=command.id, code=code)


def _verify(trust: Trust | None, data: Any, attributes: Mapping[str, str] | None,
            command: Command) -> Outcome | None:
    """Step 2 of the pipeline: the rejection for a signature that does not hold, else None."""
    if trust is None:
        return None
    refusal = trust.verify(data, attributes or {}, command)
    return None if refusal is None else _refused(command, refusal)


def outcome_event(outcome: Outcome, *, site_id: str, device_id: str, ts: float) -> Event:
    """The critical COMMAND_ACCEPTED / COMMAND_REJECTED event for the uplink."""
    cmd = outcome.command
    body: dict[str, Any] = {
        "command_id": outcome.command_id,
        "decision": outcome.decision.value,
        "code": outcome.code,
        "reason": clip(outcome.reason, MAX_REASON_CHARS),
        "applied_power_w": outcome.applied_power_w,
    }
    if cmd is not None:
        body.update(action=cmd.action.value, requested_power_w=cmd.power_w,
                    issued_at=cmd.issued_at, expires_at=cmd.expires_at,
                    command_site_id=cmd.site_id, command_device_id=cmd.device_id)
    if outcome.errors:
        body["errors"] = {clip(k, 64): clip(v, MAX_REASON_CHARS)
                          for k, v in list(outcome.errors.items())[:32]}
    name = "COMMAND_REJECTED" if outcome.decision is Decision.REJECTED else "COMMAND_ACCEPTED"
    return Event(name=name, site_id=site_id, device_id=device_id, ts=ts, body=body,
                 kind=RecordKind.COMMAND_RESULT, critical=True)


@attrs.define
class CommandGate:
    """Parses, decides, applies and records dispatch commands for one device.

    ``safety`` returns the guard's current SafetyState (``guard.state``); ``latest`` returns the
    latest snapshot (for the device's power caps), or None.
    """

    site_id: str
    device_id: str
    applier: Applier
    safety: Callable[[], SafetyState]
    emit: EventEmitter
    wall_clock: WallClock
    latest: Callable[[], Snapshot | None] = lambda: None
    charge_tag_max_w: float | None = None
    discharge_tag_max_w: float | None = None
    metrics: MetricSink = NULL_SINK
    policy: CommandPolicy = CommandPolicy()
    remember: int = 512
    trust: Trust | None = None
    """Signatures, durable replay, clock trust (bessai.trust); None: none of them."""
    _seen: OrderedDict[str, Outcome] = attrs.field(factory=OrderedDict)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    _last_change_at: float | None = None
    """Trio time of the last command applied on the device (for COMMAND_MIN_INTERVAL_S)."""

    async def handle_command_message(self, data: bytes, attributes: Mapping[str, str] | None
                                     = None) -> Outcome:
        """The Pub/Sub handler: parse, verify, decide, apply, record. Never raises for bad
        input, nor for a bug past parsing (logged with its traceback, answered as rejected), so
        a message is always acknowledged and never redelivered forever."""
        parsed = parse_message(data, attributes)
        if isinstance(parsed, Outcome):
            self._record(parsed)
            return parsed
        refused = _verify(self.trust, data, attributes, parsed)
        if refused is not None:
            self._record(refused)
            return refused
        return await self.submit_guarded(parsed)

    async def submit_guarded(self, command: Command) -> Outcome:
        """`submit`, with a bug answered as an ``internal_error`` rejection instead of raised."""
        try:
            return await self.submit(command)
        except trio.Cancelled:
            raise
        except Exception as exc:
            log.exception("command_gate_error", site=self.site_id, device=self.device_id,
                          command_id=command.id)
            outcome = Outcome(command, Decision.REJECTED, _internal_error(exc), None,
                              command_id=command.id, code="internal_error")
            self._record(outcome)
            return outcome

    async def submit(self, command: Command) -> Outcome:
        """Decide and apply an already parsed command (the CLI and tests use this directly)."""
        async with self._lock:  # one command at a time: decisions see the previous one applied
            if command.id in self._seen:
                previous = self._seen[command.id]
                log.info("command_duplicate", command_id=command.id,
                         decision=previous.decision.value)
                return previous
            latest = self.latest()
            limits = power_limits(latest, charge_tag_max_w=self.charge_tag_max_w,
                                  discharge_tag_max_w=self.discharge_tag_max_w)
            now = trio.current_time()
            since = None if self._last_change_at is None else now - self._last_change_at
            # -- issue 14: durable replay check (claims the id), expiry on a trusted clock --
            now_wall = self.wall_clock()
            refusal = None
            if self.trust is not None:
                refusal = await self.trust.admit(command)
                now_wall = self.trust.expiry_now(now_wall)
            outcome = decide(command, site_id=self.site_id, device_id=self.device_id,
                             now_wall=now_wall, safety=self.safety(), limits=limits,
                             policy=self.policy, since_last_change_s=since)
            if refusal is None and outcome.accepted and self.trust is not None:
                refusal = self.trust.refuse_forcing(command)
            if refusal is not None:
                outcome = _refused(command, refusal)
            # -- end issue 14 --
            if outcome.accepted:
                outcome = await self._apply(outcome)
                if outcome.accepted:
                    self._last_change_at = trio.current_time()
            self._seen[command.id] = outcome
            while len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            self._record(outcome)
            return outcome

    async def _apply(self, outcome: Outcome) -> Outcome:
        assert outcome.command is not None
        try:
            await self.applier.apply(outcome.command, outcome.applied_power_w)
        except trio.Cancelled:
            raise
        except Exception as exc:
            stopped = isinstance(exc, DispatchStopped)  # safety won while it was applied
            return attrs.evolve(outcome, decision=Decision.REJECTED, applied_power_w=None,
                                code="blocked_by_safety" if stopped else "apply_failed",
                                reason=f"could not apply on the device: {clip(exc)}")
        return outcome

    def _record(self, outcome: Outcome) -> None:
        event = outcome_event(outcome, site_id=self.site_id, device_id=self.device_id,
                              ts=self.wall_clock())
        self.metrics.count("bessai.commands", decision=outcome.decision.value,
                           device=self.device_id)
        # errors are in the reason already: the log line quotes them once
        fields = {k: v for k, v in event.body.items() if v is not None and k != "errors"}
        if outcome.decision is Decision.REJECTED:
            log.warning(event.name, site=self.site_id, device=self.device_id, **fields)
        else:
            log.info(event.name, site=self.site_id, device=self.device_id, **fields)
        self.emit(event)


@attrs.define
class CommandRouter:
    """One Pub/Sub handler for a gateway with several devices: routes by ``device_id``.

    A command for a device this gateway does not drive is rejected (with its event, emitted via
    ``emit``), never dropped silently. With a single device, hand the site's gate to the command
    source directly instead.
    """

    site_id: str
    gates: Mapping[str, CommandGate]
    emit: EventEmitter
    wall_clock: WallClock
    metrics: MetricSink = NULL_SINK
    """Rejections made here (malformed, other site, unknown device) count in
    ``bessai.commands{decision=rejected, device="-"}``; a gate counts the rest."""
    trust: Trust | None = None
    """Signature verification before any gate sees a command (bessai.trust); None: none."""

    async def handle_command_message(self, data: bytes, attributes: Mapping[str, str] | None
                                     = None) -> Outcome:
        """Parse once, (verify,) pick the device's gate, let it decide. Never raises."""
        parsed = parse_message(data, attributes)
        if isinstance(parsed, Outcome):
            outcome = parsed
        else:
            command = parsed
            refused = _verify(self.trust, data, attributes, command)
            if refused is not None:
                outcome = refused
            else:
                gate = self.gates.get(command.device_id)
                if gate is not None and command.site_id == self.site_id:
                    return await gate.submit_guarded(command)
                where = (f"site {clip(command.site_id, 64)!r}" if command.site_id != self.site_id
                         else f"device {clip(command.device_id, 64)!r}")
                outcome = Outcome(command, Decision.REJECTED,
                                  f"command is for {where}; this gateway serves site "
                                  f"{self.site_id!r}, devices {sorted(self.gates)}", None,
                                  command_id=command.id,
                                  code="wrong_site" if command.site_id != self.site_id
                                  else "wrong_device")
        event = outcome_event(outcome, site_id=self.site_id, device_id="-", ts=self.wall_clock())
        self.metrics.count("bessai.commands", decision=outcome.decision.value, device="-")
        log.warning(event.name, site=self.site_id,
                    **{k: v for k, v in event.body.items() if v is not None and k != "errors"})
        self.emit(event)
        return outcome
