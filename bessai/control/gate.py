"""The command gate: every dispatch command passes here before it can touch the battery.

Order of checks (the first failure decides; each gives a reason an operator can act on):

1. the message parses (`parse_command`: every bad field named);
2. it is for this site and this device;
3. it has not expired — ``expires_at <= wall now`` is rejected, never applied late (a command
   that waited out an outage in a subscription is stale by definition);
4. the current safety state allows its direction (SOC low blocks discharge, SOC high blocks
   charge, over-temperature and bad data block both; ``stop`` and ``auto`` are always allowed:
   they end forcing, which is never less safe);
5. its power fits the device: above the device's current max charge/discharge power or the
   writable power tag's max, it is clamped (decision ``clamped``); a limit of 0 W rejects it.

Invariants: `decide` is pure. `CommandGate.handle_command_message` never raises for bad input or
a failed device write — it returns the Outcome — and records exactly one critical
COMMAND_ACCEPTED / COMMAND_REJECTED event per distinct command id (a redelivered id gets the
first outcome back and is not applied twice).

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

from bessai.clock import WallClock
from bessai.control.command import InvalidCommand, parse_command
from bessai.control.events import EventEmitter
from bessai.control.limits import SafetyState
from bessai.model import Action, Command, Event, EventKind, Snapshot
from bessai.observe.sink import NULL_SINK, MetricSink

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
    errors: Mapping[str, str] = attrs.field(factory=dict, converter=lambda m: dict(m))
    command_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.decision is not Decision.REJECTED


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
           safety: SafetyState, limits: PowerLimits) -> Outcome:
    """The gate's verdict on a parsed command (pure: no I/O, no clock)."""

    def reject(reason: str) -> Outcome:
        return Outcome(command, Decision.REJECTED, reason, None, command_id=command.id)

    if command.site_id != site_id:
        return reject(f"command is for site {command.site_id!r}, this gateway serves {site_id!r}")
    if command.device_id != device_id:
        return reject(f"command is for device {command.device_id!r} on site {site_id!r}, "
                      f"this site supervisor drives {device_id!r}")
    if command.expires_at <= now_wall:
        return reject(f"expired {now_wall - command.expires_at:.1f} s ago "
                      f"(expires_at={command.expires_at}) — send a fresh command")
    if command.action in (Action.STOP, Action.AUTO):
        return Outcome(command, Decision.ACCEPTED, f"{command.action.value}: end forcing", None,
                       command_id=command.id)
    charging = command.action is Action.CHARGE
    blocked = safety.blocked_charge if charging else safety.blocked_discharge
    if blocked:
        return reject(f"{command.action.value} blocked by safety: "
                      f"{safety.reasons(charge=charging)}")
    cap = limits.max_charge_w if charging else limits.max_discharge_w
    if cap is not None and cap <= 0:
        return reject(f"device allows no {command.action.value} power right now (max 0 W)")
    if cap is not None and command.power_w > cap:
        return Outcome(command, Decision.CLAMPED,
                       f"{command.power_w:g} W clamped to the device maximum {cap:g} W", cap,
                       command_id=command.id)
    return Outcome(command, Decision.ACCEPTED, "ok", command.power_w, command_id=command.id)


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


def outcome_event(outcome: Outcome, *, site_id: str, device_id: str, ts: float) -> Event:
    """The critical COMMAND_ACCEPTED / COMMAND_REJECTED event for the uplink."""
    cmd = outcome.command
    body: dict[str, Any] = {
        "command_id": outcome.command_id,
        "decision": outcome.decision.value,
        "reason": outcome.reason,
        "applied_power_w": outcome.applied_power_w,
    }
    if cmd is not None:
        body.update(action=cmd.action.value, requested_power_w=cmd.power_w,
                    issued_at=cmd.issued_at, expires_at=cmd.expires_at,
                    command_site_id=cmd.site_id, command_device_id=cmd.device_id)
    if outcome.errors:
        body["errors"] = dict(outcome.errors)
    name = "COMMAND_REJECTED" if outcome.decision is Decision.REJECTED else "COMMAND_ACCEPTED"
    return Event(name=name, site_id=site_id, device_id=device_id, ts=ts, body=body,
                 kind=EventKind.COMMAND_RESULT, critical=True)


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
    remember: int = 512
    trust: Trust | None = None
    """Signatures, durable replay, clock trust (bessai.trust); None: none of them."""
    _seen: OrderedDict[str, Outcome] = attrs.field(factory=OrderedDict)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def handle_command_message(self, data: bytes, attributes: Mapping[str, str] | None
                                     = None) -> Outcome:
        """The Pub/Sub handler: parse, decide, apply, record. Never raises for bad input, nor
        for a bug past parsing (logged with its traceback, answered as rejected), so a message
        is never redelivered forever."""
        try:
            command = parse_command(data, attributes)
        except InvalidCommand as exc:
            outcome = Outcome(None, Decision.REJECTED, str(exc), None, errors=exc.errors,
                              command_id=exc.command_id)
            self._record(outcome)
            return outcome
        refusal = (self.trust.verify(data, attributes or {}, command)  # issue 14: signature
                   if self.trust is not None else None)
        if refusal is not None:
            outcome = Outcome(command, Decision.REJECTED, refusal, None, command_id=command.id)
            self._record(outcome)
            return outcome
        try:
            return await self.submit(command)
        except trio.Cancelled:
            raise
        except Exception as exc:
            log.exception("command_gate_error", site=self.site_id, device=self.device_id,
                          command_id=command.id)
            outcome = Outcome(command, Decision.REJECTED,
                              f"internal error in the command gate ({type(exc).__name__}: "
                              f"{exc}) — see the gateway log", None, command_id=command.id)
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
            # -- issue 14: durable replay check (claims the id), expiry on a trusted clock --
            now_wall = self.wall_clock()
            refusal = None
            if self.trust is not None:
                refusal = await self.trust.admit(command)
                now_wall = self.trust.expiry_now(now_wall)
            outcome = decide(command, site_id=self.site_id, device_id=self.device_id,
                             now_wall=now_wall, safety=self.safety(), limits=limits)
            if refusal is None and outcome.accepted and self.trust is not None:
                refusal = self.trust.refuse_forcing(command)
            if refusal is not None:
                outcome = Outcome(command, Decision.REJECTED, refusal, None,
                                  command_id=command.id)
            # -- end issue 14 --
            if outcome.accepted:
                outcome = await self._apply(outcome)
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
            return attrs.evolve(outcome, decision=Decision.REJECTED, applied_power_w=None,
                                reason=f"could not apply on the device: {exc}")
        return outcome

    def _record(self, outcome: Outcome) -> None:
        event = outcome_event(outcome, site_id=self.site_id, device_id=self.device_id,
                              ts=self.wall_clock())
        self.metrics.count("bessai.commands", decision=outcome.decision.value,
                           device=self.device_id)
        fields = {k: v for k, v in event.body.items() if v is not None}
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
        """Parse once, pick the device's gate, let it decide. Never raises for bad input."""
        try:
            command = parse_command(data, attributes)
        except InvalidCommand as exc:
            outcome = Outcome(None, Decision.REJECTED, str(exc), None, errors=exc.errors,
                              command_id=exc.command_id)
        else:
            refusal = (self.trust.verify(data, attributes or {}, command)  # issue 14: signature
                       if self.trust is not None else None)
            gate = self.gates.get(command.device_id)
            if refusal is None and gate is not None and command.site_id == self.site_id:
                return await gate.submit(command)
            where = (f"site {command.site_id!r}" if command.site_id != self.site_id
                     else f"device {command.device_id!r}")
            outcome = Outcome(command, Decision.REJECTED,
                              refusal or f"command is for {where}; this gateway serves site "
                              f"{self.site_id!r}, devices {sorted(self.gates)}", None,
                              command_id=command.id)
        event = outcome_event(outcome, site_id=self.site_id, device_id="-", ts=self.wall_clock())
        self.metrics.count("bessai.commands", decision=outcome.decision.value, device="-")
        log.warning(event.name, site=self.site_id,
                    **{k: v for k, v in event.body.items() if v is not None})
        self.emit(event)
        return outcome
