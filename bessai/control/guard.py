"""The safety guard: evaluates every snapshot against the site's limits and acts on a block.

Job: wait for a newer snapshot in the latest-value cell *or* a timer tick (so stale data is
caught even when nothing arrives), evaluate (`limits.evaluate`), publish the decision in the site
context (the command gate reads it), and on each transition:

* block — ``log.critical("SAFETY_BLOCK", rule=..., value=..., limit=...)`` (rendered as logfmt
  ``level=CRITICAL event=SAFETY_BLOCK rule=soc_min value=4.2 limit=5.0 ...``, which the runbook
  greps for), a critical SAFETY_BLOCK `Event` into the never-dropping outbox, and a
  ``bessai.safety.blocks{rule}`` count;
* clear — ``SAFETY_CLEAR`` line and event.

And, while a direction is blocked, a forced command in that direction — known to the dispatcher,
or seen in the snapshot's mode tag (forcing left by an earlier instance) — is stopped on the
device at once, at SAFETY priority (``SAFETY_STOP``). A failed stop is retried on the next
evaluation.

Invariants: the guard never touches the cloud and never blocks on an event consumer; telemetry
keeps flowing during a block (the guard only decides; it does not gate the recorder). A guard
restarted by its supervisor resumes from the state in the site context, so it neither forgets a
hysteresis band nor logs the same block twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio

from bessai.control.context import SiteContext
from bessai.control.device_link import Priority
from bessai.control.dispatch import Dispatcher, DispatchTags
from bessai.control.limits import (
    Limits,
    RuleHit,
    SafetyState,
    evaluate,
    transitions,
)
from bessai.model import Action, Event, Snapshot

if TYPE_CHECKING:
    from bessai.device.profile import WatchdogSpec

log = structlog.get_logger("bessai.control.guard")

FIRST_DATA_DEADLINE_S = 30.0
"""How long after start the guard waits for the device's first snapshot before the wait itself
is a safety incident (CRITICAL SAFETY_BLOCK rule=no_data). Both directions stay blocked all the
while; 30 s covers Huawei's pause after connect, slow first replies and a few reconnects."""


@attrs.define(eq=False)
class SafetyGuard:
    """One device's guard. ``tick_s`` bounds how late staleness is noticed (default: the fast
    poll period); a new snapshot is evaluated the moment it is published."""

    ctx: SiteContext
    limits: Limits = attrs.field(factory=Limits)
    tick_s: float = 1.0
    first_data_deadline_s: float = FIRST_DATA_DEADLINE_S
    dispatch_tags: DispatchTags = attrs.field(factory=DispatchTags)
    watchdog: Any = None  # a Watchdog, for watchdog_loop()
    _stop_done_at: float | None = None
    _stop_failing: bool = False
    _stop: trio.Event = attrs.field(factory=trio.Event)
    _waiting: trio.CancelScope | None = None

    @property
    def state(self) -> SafetyState:
        return self.ctx.safety

    @property
    def live_limits(self) -> Limits:
        """The limits of the next decision: those the tree published in the site context (a
        configuration reload replaces them), else the ones this guard was built with."""
        return self.ctx.limits if self.ctx.limits is not None else self.limits

    def request_stop(self) -> None:
        """End `run` now: the wait for the next snapshot is cut short (the gateway stops its
        sites one after another, so a wait here would be paid once per device)."""
        self._stop.set()
        if self._waiting is not None:
            self._waiting.cancel()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Evaluate on every new snapshot and every tick until cancelled."""
        cell = self.ctx.snapshots
        started_at = trio.current_time()
        # Until the first snapshot the state stays as inherited: UNKNOWN at a first start, which
        # blocks both directions. That is the expected start-up state, not an incident: it is
        # logged once as SAFETY_WAITING_FOR_DATA (WARNING); only if no snapshot arrives within
        # first_data_deadline_s does it become a CRITICAL SAFETY_BLOCK rule=no_data.
        waiting = not self.ctx.safety_evaluated
        if waiting and self.ctx.waiting_for_data_since is None:
            self.ctx.waiting_for_data_since = started_at
            log.warning("SAFETY_WAITING_FOR_DATA", blocks="both",
                        deadline_s=self.first_data_deadline_s, site=self.ctx.site_id,
                        device=self.ctx.device_id)
        if waiting:
            assert self.ctx.waiting_for_data_since is not None
            started_at = self.ctx.waiting_for_data_since
            grace_until = started_at + self.first_data_deadline_s
        else:
            grace_until = started_at + self.live_limits.stale_after_s
        seen = 0
        task_status.started(self)
        while not self._stop.is_set():
            with trio.move_on_after(self.tick_s) as self._waiting:
                seen = (await cell.wait_newer(seen)).version
            self._waiting = None
            if self._stop.is_set():
                break
            snapshot = self.ctx.latest()
            if snapshot is None and trio.current_time() < grace_until:
                continue
            first = not self.ctx.safety_evaluated
            state = await self.check(snapshot)
            if first and snapshot is not None:
                log.info("SAFETY_DATA_READY", waited_s=round(trio.current_time() - started_at, 3),
                         rules=",".join(state.rules()) or "none", site=self.ctx.site_id,
                         device=self.ctx.device_id)

    async def check(self, snapshot: Snapshot | None) -> SafetyState:
        """One evaluation: publish the new state, report transitions, stop worsening forcing."""
        now = trio.current_time()
        old = self.ctx.safety
        limits = self.live_limits
        new = evaluate(snapshot, now, old, limits)
        # Before the first evaluation the state is UNKNOWN by default, not by incident: every
        # rule of the first evaluation is reported, including no_data, but "clearing" the
        # default is not.
        reported = SafetyState() if not self.ctx.safety_evaluated else old
        self.ctx.safety = new
        self.ctx.safety_evaluated = True
        change = transitions(reported, new)
        soc = snapshot.value(limits.soc_tag) if snapshot is not None else None
        for hit in change.blocked:
            self._report_block(hit, soc)
        for hit in change.cleared:
            self._report_clear(hit, soc)
        device = self.ctx.device_id
        if snapshot is not None:  # here, not in the link: it must keep rising while down
            self.ctx.metrics.gauge("bessai.device.snapshot_age_s", now - snapshot.taken_at,
                                   device=device)
        self.ctx.metrics.gauge("bessai.safety.blocked", float(new.blocked_charge),
                               direction="charge", device=device)
        self.ctx.metrics.gauge("bessai.safety.blocked", float(new.blocked_discharge),
                               direction="discharge", device=device)
        if new.blocked_charge or new.blocked_discharge:
            await self._stop_worsening_forcing(new, snapshot)
        return new

    async def watchdog_loop(self, heartbeat: WatchdogSpec | None = None, *,
                            renew_interval_s: float | None = None,
                            task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Feed the device's watchdog and renew forced commands, for an app that embeds the
        guard without the site supervisor (the site runs a `Watchdog` child instead).

        ``heartbeat`` is the profile's watchdog section (``profile.watchdog``); without it this
        guard's ``watchdog`` runs if it was given one, else only leases are renewed: no
        heartbeat is assumed, the profile is the one place that states it.
        """
        from bessai.control.watchdog import Watchdog

        watchdog = self.watchdog
        if watchdog is None or heartbeat is not None:
            watchdog = Watchdog(self.ctx, heartbeat=heartbeat,
                                renew_interval_s=renew_interval_s
                                or self.dispatch_tags.renew_interval_s)
        await watchdog.run(task_status=task_status)

    # -- reporting ---------------------------------------------------------------------------

    def _fields(self, hit: RuleHit, soc: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"rule": hit.rule, "value": hit.value, "limit": hit.limit}
        if hit.tag is not None:
            fields["tag"] = hit.tag
        if hit.reason is not None:
            fields["reason"] = hit.reason
        fields["blocks"] = _blocks(hit)
        fields["soc"] = soc
        return fields

    def _report_block(self, hit: RuleHit, soc: Any) -> None:
        fields = self._fields(hit, soc)
        log.critical("SAFETY_BLOCK", **fields, site=self.ctx.site_id, device=self.ctx.device_id)
        self.ctx.metrics.count("bessai.safety.blocks", rule=hit.rule, device=self.ctx.device_id)
        self._emit("SAFETY_BLOCK", fields)

    def _report_clear(self, hit: RuleHit, soc: Any) -> None:
        fields = self._fields(hit, soc)
        fields.pop("blocks")
        log.warning("SAFETY_CLEAR", **fields, site=self.ctx.site_id, device=self.ctx.device_id)
        self.ctx.metrics.count("bessai.safety.clears", rule=hit.rule, device=self.ctx.device_id)
        self._emit("SAFETY_CLEAR", fields)

    def _emit(self, name: str, body: dict[str, Any]) -> None:
        self.ctx.events.emit(Event(name=name, site_id=self.ctx.site_id,
                                   device_id=self.ctx.device_id, ts=self.ctx.wall_clock(),
                                   body=body, critical=True))

    # -- acting ------------------------------------------------------------------------------

    async def _stop_worsening_forcing(self, state: SafetyState, snapshot: Snapshot | None) -> None:
        dispatcher: Dispatcher | None = self.ctx.dispatcher
        known = dispatcher.active.action if dispatcher and dispatcher.active else None
        seen = None
        if snapshot is not None and (self._stop_done_at is None
                                     or snapshot.taken_at > self._stop_done_at):
            # Only trust a mode reading taken after our last stop landed.
            seen = self.dispatch_tags.forcing(snapshot.value(self.dispatch_tags.mode_tag))
        worsening = [a for a in {known, seen} if a is not None
                     and ((a is Action.CHARGE and state.blocked_charge)
                          or (a is Action.DISCHARGE and state.blocked_discharge))]
        if not worsening:
            return
        action = worsening[0]
        reason = state.reasons(charge=action is Action.CHARGE)
        if not self.ctx.link.up:
            # Nothing can be written now; the device's own lease and watchdog end forcing by
            # themselves. Stop the moment the link is back (next evaluation after it returns).
            if not self._stop_failing:
                log.error("SAFETY_STOP_FAILED", site=self.ctx.site_id, device=self.ctx.device_id,
                          action=action.value, reason=reason, error="device link down",
                          next_try="as soon as the device link is up")
                self._stop_failing = True
            return
        try:
            if dispatcher is not None:
                was = await dispatcher.safety_stop()
            else:
                was = None
                await self.ctx.link.write(self.dispatch_tags.mode_tag,
                                          self.dispatch_tags.stop_value, Priority.SAFETY)
        except trio.Cancelled:
            raise
        except Exception as exc:
            if not self._stop_failing:
                log.error("SAFETY_STOP_FAILED", site=self.ctx.site_id, device=self.ctx.device_id,
                          action=action.value, reason=reason, error=str(exc),
                          next_try="next evaluation")
                self._stop_failing = True
            self.ctx.metrics.count("bessai.safety.stop_failures", device=self.ctx.device_id)
            return
        self._stop_failing = False
        self._stop_done_at = trio.current_time()
        fields = {"action": action.value, "reason": reason,
                  "command_id": was.command.id if was is not None else None,
                  "source": "gateway command" if known else "device mode tag"}
        log.critical("SAFETY_STOP", **fields, site=self.ctx.site_id, device=self.ctx.device_id)
        self.ctx.metrics.count("bessai.safety.stops", device=self.ctx.device_id)
        self._emit("SAFETY_STOP", fields)


def _blocks(hit: RuleHit) -> str:
    if hit.blocks_charge and hit.blocks_discharge:
        return "both"
    return "charge" if hit.blocks_charge else "discharge"

