"""The schedule executor: one device follows its stored plan, with or without the cloud.

A child of the site supervisor (after the watchdog). On every slot boundary — and every poll
period in between — it works out what the device should be doing and, if the device is not
doing it, puts it there through the **same path as a dispatch command**: a `Command` (id
``<schedule_id>#<slot>``, expiring at the slot's end) handed to the site's `Dispatcher`, so the
same writes, the same device-side lease and the same watchdog renewals apply. If the gateway
dies, the device leaves the slot by itself within one lease; if only this actor dies, the
watchdog still ends the slot's forcing at the slot's end.

Precedence, highest first:

1. **Safety.** A direction the guard blocks is never forced; the guard itself stops a forcing
   slot that worsens a block (SAFETY_STOP). The slot is held (``SCHEDULE_SLOT_HELD``) and put
   back the moment the block clears — after the guard's hysteresis (``SCHEDULE_SLOT_RESUMED``).
2. **A direct command** (through the command gate; `DirectCommands` sees it applied) overrides
   the schedule until its ``expires_at`` (``SCHEDULE_OVERRIDDEN``); then the slot resumes.
3. **The schedule.** Outside every slot but before ``valid_until``: ``auto``. At
   ``valid_until``: ``auto`` once, ``SCHEDULE_EXPIRED`` logged.

Every change this actor makes on the device is a critical event (``SCHEDULE_SLOT_APPLIED``,
``SCHEDULE_SETPOINT`` for a controller decision, ``SCHEDULE_EXPIRED``) and a
``bessai.schedule.writes{action,reason}`` count. Controller slots (`bessai.control.controllers`)
write at most once per `ControllerConfig.write_interval_s`.

Invariants: reads only the `ScheduleBook` and the site context (no disk, no cloud); a device
error is a state (``SCHEDULE_APPLY_FAILED`` once per streak, retried next period); only a bug
escapes `run`. Its progress (state, setpoint) is published after every step into the site
context's `StatusCell` (``ctx.schedule``), which `schedule_status` reads for ``/status``.
"""

from __future__ import annotations

from typing import Any

import attrs
import structlog
import trio

from bessai.control import controllers
from bessai.control.context import SiteContext
from bessai.control.controllers import ControllerConfig
from bessai.control.device_link import LinkDown
from bessai.control.dispatch import DispatchStopped, DispatchTags
from bessai.control.gate import Applier, power_limits
from bessai.control.schedule import Schedule, Slot
from bessai.control.schedule_store import ScheduleBook
from bessai.model import Action, Command, Event
from bessai.status_cell import Presence

log = structlog.get_logger("bessai.control.executor")


@attrs.frozen
class ScheduleProgress:
    """What the running executor publishes: where it is in the plan, and its setpoint."""

    state: str
    setpoint_w: float


def schedule_status(ctx: SiteContext, book: ScheduleBook) -> dict[str, Any] | None:
    """The plan this device runs and where it is (for /status), or None without one (or
    before the executor first ran). The plan comes from the book; the state and setpoint from
    the running executor's cell — ``restarting`` / ``stopped`` while none runs."""
    schedule = book.get(ctx.device_id)
    cell = ctx.schedule
    if schedule is None or cell.presence is Presence.NEVER_STARTED:
        return None
    found = schedule.slot_at(ctx.wall_clock())
    progress = cell.value
    return {"schedule_id": schedule.schedule_id, "valid_until": schedule.valid_until,
            "state": str(cell.presence) if progress is None else progress.state,
            "slot": None if found is None else found[0],
            "slot_action": None if found is None else found[1].action.value,
            "setpoint_w": None if progress is None else round(progress.setpoint_w, 1)}


@attrs.define(eq=False)
class DirectCommands:
    """The command gate's applier: passes commands to the dispatcher and remembers the last one
    applied, so the executor knows a direct command is overriding the schedule, and until when.
    Built once per site (it outlives the executor's restarts)."""

    inner: Applier
    last: Command | None = None

    async def apply(self, command: Command, power_w: float | None) -> None:
        await self.inner.apply(command, power_w)
        self.last = command

    def overriding(self, now_wall: float) -> Command | None:
        last = self.last
        return last if last is not None and last.expires_at > now_wall else None


@attrs.frozen
class Want:
    """What the device should be doing now, and why."""

    key: str  # the slot (or gap / expiry) this comes from
    action: Action
    power_w: float = 0.0
    expires_at: float = 0.0
    slot: Slot | None = None
    index: int | None = None


@attrs.define(eq=False)
class ScheduleExecutor:
    """Runs one device's schedule. Build a fresh one per start (the site's factory does)."""

    ctx: SiteContext
    book: ScheduleBook
    direct: DirectCommands
    dispatch_tags: DispatchTags = attrs.field(factory=DispatchTags)
    control: ControllerConfig = attrs.field(factory=ControllerConfig)
    tick_s: float = 1.0
    stale_after_s: float = 3.0
    applied_key: str | None = None
    """The slot this instance last put on the device (a new instance starts with none, so a
    restart puts the current slot back at once)."""
    setpoint_w: float = 0.0
    last_write_at: float | None = None
    state: str = "idle"
    _expired_id: str | None = None
    _last_action: Action | None = None
    _failing: bool = False
    _stop: trio.Event = attrs.field(factory=trio.Event)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        with self.ctx.schedule.running():
            self._publish()
            task_status.started(self)
            await self._run()

    def _publish(self) -> None:
        self.ctx.schedule.publish(ScheduleProgress(self.state, self.setpoint_w))

    async def _run(self) -> None:
        while not self._stop.is_set():
            changed = self.book.changed_event()
            await self.step()
            self._publish()
            delay = self.tick_s
            schedule = self.book.get(self.ctx.device_id)
            if schedule is not None:
                now = self.ctx.wall_clock()
                boundary = schedule.next_boundary(now)
                if boundary is not None:
                    delay = max(0.0, min(delay, boundary - now))
            with trio.move_on_after(delay):
                await changed.wait()

    # -- deciding ---------------------------------------------------------------------------

    async def step(self) -> None:
        """One look at the plan; act if the device is not doing what it says."""
        schedule = self.book.get(self.ctx.device_id)
        if schedule is None or not self.ctx.safety_evaluated:
            return  # nothing planned, or no safety verdict yet (the guard's first look)
        now = self.ctx.wall_clock()
        if now >= schedule.valid_until:
            await self._expire(schedule)
            return
        override = self.direct.overriding(now)
        if override is not None:
            if self.state != "overridden":
                self._note(schedule, name="SCHEDULE_OVERRIDDEN", command_id=override.id,
                           action=override.action.value, until=override.expires_at)
                self.state = "overridden"
            self.applied_key = None  # the slot is no longer on the device
            return
        want = self._want(schedule, now)
        if want is None:
            return
        if want.action in (Action.CHARGE, Action.DISCHARGE):
            blocked = (self.ctx.safety.blocked_charge if want.action is Action.CHARGE
                       else self.ctx.safety.blocked_discharge)
            if blocked:
                if self.state != "held":
                    self._note(schedule, name="SCHEDULE_SLOT_HELD", slot=want.index,
                               action=want.action.value,
                               reason=self.ctx.safety.reasons(charge=want.action is Action.CHARGE),
                               level="warning")
                    self.state = "held"
                self.applied_key = None
                return
        if self._on_device(want):
            self.state = "running"
            return
        controlled = want.slot is not None and want.slot.action.controlled
        if self.state in ("held", "overridden"):
            reason = "resume"
        elif self.state == "idle":
            reason = "start"  # this instance's first write: a (re)start puts the slot back
        elif self.applied_key != want.key:
            reason = "slot_start"
        else:
            reason = "controller" if controlled else "restore"
        await self._apply(schedule, want, reason)

    def _want(self, schedule: Schedule, now: float) -> Want | None:
        found = schedule.slot_at(now)
        if found is None:
            boundary = schedule.next_boundary(now) or schedule.valid_until
            return Want(f"{schedule.schedule_id}#gap@{boundary:.0f}", Action.AUTO,
                        expires_at=boundary)
        index, slot = found
        key = f"{schedule.schedule_id}#{index}"
        expires = min(slot.end, schedule.valid_until)
        if not slot.action.controlled:
            action = slot.action.command_action
            assert action is not None
            power = self._capped(action, slot.power_w or 0.0, slot)
            return Want(key, action, power, expires, slot, index)
        return self._control(key, slot, index, expires)

    def _caps(self, slot: Slot | None) -> tuple[float, float]:
        limits = power_limits(self.ctx.latest(),
                              charge_tag_max_w=self.dispatch_tags.charge_power_max_w,
                              discharge_tag_max_w=self.dispatch_tags.discharge_power_max_w)
        charge = limits.max_charge_w if limits.max_charge_w is not None else float("inf")
        discharge = (limits.max_discharge_w if limits.max_discharge_w is not None
                     else float("inf"))
        if slot is not None and slot.power_w is not None:
            charge, discharge = min(charge, slot.power_w), min(discharge, slot.power_w)
        return charge, discharge

    def _capped(self, action: Action, power_w: float, slot: Slot | None) -> float:
        charge, discharge = self._caps(slot)
        if action is Action.CHARGE:
            return min(power_w, charge)
        if action is Action.DISCHARGE:
            return min(power_w, discharge)
        return 0.0

    def _control(self, key: str, slot: Slot, index: int, expires: float) -> Want | None:
        """A controller slot: a new setpoint at most once per write interval, else keep."""
        now = trio.current_time()
        if self.applied_key != key:
            self.setpoint_w = 0.0  # a new slot starts from what the device does by itself
        elif (self.last_write_at is not None
              and now - self.last_write_at < self.control.write_interval_s):
            return self._setpoint_want(key, slot, index, expires)
        snapshot = self.ctx.latest()
        meter = snapshot.value(self.control.meter_tag) if snapshot is not None else None
        battery = snapshot.value(self.control.battery_tag) if snapshot is not None else None
        fresh = snapshot is not None and now - snapshot.taken_at <= self.stale_after_s
        if not fresh or not isinstance(meter, int | float) or not isinstance(battery, int | float):
            # no meter, no control: leave the device to its own mode until data returns
            return Want(key, Action.STOP, 0.0, expires, slot, index)
        charge, discharge = self._caps(slot)
        if self.ctx.safety.blocked_charge:
            charge = 0.0
        if self.ctx.safety.blocked_discharge:
            discharge = 0.0
        since = now - self.last_write_at if self.last_write_at is not None else 1e9
        new = controllers.decide(slot.action, limit_w=slot.limit_w or 0.0, meter_w=float(meter),
                                 battery_w=float(battery), setpoint_w=self.setpoint_w,
                                 since_write_s=since, max_charge_w=charge,
                                 max_discharge_w=discharge, config=self.control)
        if new is not None:
            self.setpoint_w = new
        return self._setpoint_want(key, slot, index, expires)

    def _setpoint_want(self, key: str, slot: Slot, index: int, expires: float) -> Want:
        power = self.setpoint_w
        if abs(power) < 1.0:
            return Want(key, Action.STOP, 0.0, expires, slot, index)
        return Want(key, Action.CHARGE if power > 0 else Action.DISCHARGE, abs(power), expires,
                    slot, index)

    def _on_device(self, want: Want) -> bool:
        if self.applied_key != want.key:
            return False
        dispatcher = self.ctx.dispatcher
        active = dispatcher.active if dispatcher is not None else None
        if want.action in (Action.CHARGE, Action.DISCHARGE):
            return (active is not None and active.command.id == want.key
                    and active.action is want.action and abs(active.power_w - want.power_w) < 1)
        # stop / auto: ours unless something forced the device since
        return active is None and self._last_action is want.action

    # -- acting -----------------------------------------------------------------------------

    async def _write(self, schedule: Schedule, command: Command, power_w: float | None, *,
                     slot: int | None = None) -> bool:
        """One schedule write through the dispatch path (and its lease); whether it landed.
        A link that is down is waited for; a write safety stopped is held until the next step;
        any other failure is said once per streak and retried at the next tick."""
        dispatcher = self.ctx.dispatcher
        if dispatcher is None:
            return False
        try:
            await dispatcher.apply(command, power_w)
        except LinkDown:
            await self.ctx.link.wait_up()  # and try again at once
            return False
        except DispatchStopped:
            self.applied_key = None
            return False  # safety won meanwhile: held on the next step
        except trio.Cancelled:
            raise
        except Exception as exc:
            if not self._failing:
                where = {} if slot is None else {"slot": slot}
                log.error("SCHEDULE_APPLY_FAILED", site=self.ctx.site_id,
                          device=self.ctx.device_id, schedule_id=schedule.schedule_id,
                          **where, action=command.action.value, error=str(exc),
                          next_try_in_s=self.tick_s)
                self._failing = True
            self.ctx.metrics.count("bessai.schedule.apply_failures", device=self.ctx.device_id)
            return False
        self._failing = False
        return True

    async def _apply(self, schedule: Schedule, want: Want, reason: str) -> None:
        now_wall = self.ctx.wall_clock()
        command = Command(id=want.key, site_id=self.ctx.site_id, device_id=self.ctx.device_id,
                          action=want.action, power_w=want.power_w, issued_at=now_wall,
                          expires_at=want.expires_at)
        if not await self._write(schedule, command, want.power_w or None, slot=want.index):
            return
        self.applied_key = want.key
        self._last_action = want.action
        self.last_write_at = trio.current_time()
        was = self.state
        self.state = "running"
        name = "SCHEDULE_SETPOINT" if reason == "controller" else "SCHEDULE_SLOT_APPLIED"
        if was in ("held", "overridden"):
            log.warning("SCHEDULE_SLOT_RESUMED", site=self.ctx.site_id,
                        device=self.ctx.device_id, schedule_id=schedule.schedule_id,
                        slot=want.index, after=was)
        fields: dict[str, Any] = {
            "schedule_id": schedule.schedule_id, "slot": want.index, "reason": reason,
            "action": want.action.value, "power_w": round(want.power_w, 1),
            "slot_action": want.slot.action.value if want.slot is not None else "auto",
            "slot_end": want.expires_at}
        if want.slot is not None and want.slot.limit_w is not None:
            fields["limit_w"] = want.slot.limit_w
        (log.info if name == "SCHEDULE_SETPOINT" else log.warning)(
            name, site=self.ctx.site_id, device=self.ctx.device_id, **fields)
        self.ctx.metrics.count("bessai.schedule.writes", action=want.action.value,
                               reason=reason, device=self.ctx.device_id)
        self._emit(name, fields)

    async def _expire(self, schedule: Schedule) -> None:
        if self._expired_id == schedule.schedule_id:
            return
        if self.ctx.dispatcher is None:
            return
        if self.direct.overriding(self.ctx.wall_clock()) is None:
            command = Command(id=f"{schedule.schedule_id}#expired", site_id=self.ctx.site_id,
                              device_id=self.ctx.device_id, action=Action.AUTO,
                              expires_at=schedule.valid_until)
            if not await self._write(schedule, command, None):
                return
        self._failing = False
        self._expired_id = schedule.schedule_id
        self.applied_key = None
        self.state = "expired"
        fields = {"schedule_id": schedule.schedule_id, "valid_until": schedule.valid_until,
                  "action": "auto"}
        log.warning("SCHEDULE_EXPIRED", site=self.ctx.site_id, device=self.ctx.device_id,
                    **fields)
        self.ctx.metrics.count("bessai.schedule.writes", action="auto", reason="expired",
                               device=self.ctx.device_id)
        self._emit("SCHEDULE_EXPIRED", fields)

    def _note(self, schedule: Schedule, *, name: str, level: str = "info",
              **fields: Any) -> None:
        fields["schedule_id"] = schedule.schedule_id
        getattr(log, level)(name, site=self.ctx.site_id, device=self.ctx.device_id, **fields)
        self.ctx.metrics.count("bessai.schedule.transitions", state=name.lower(),
                               device=self.ctx.device_id)
        self._emit(name, fields)

    def _emit(self, name: str, body: dict[str, Any]) -> None:
        self.ctx.events.emit(Event(name=name, site_id=self.ctx.site_id,
                                   device_id=self.ctx.device_id, ts=self.ctx.wall_clock(),
                                   body=body, critical=True))
