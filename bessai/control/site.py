"""One site supervisor per device: device link, safety guard, watchdog — and the gate beside it.

`build_site` wires everything for one device in one place: the tree-owned `SiteContext` (latest
snapshot, safety state, link handle, active forced command, event outbox, status cells), the
`Dispatcher`, the `CommandGate`, and the factories of the children. `Site.child_specs()` /
`Site.supervisor()` / `Site.supervisor_spec()` hand them to the `actors` runtime;
`site_from_settings` builds a `Site` from the settings (the gateway's and the tools' one way).

The factories keep nothing: every child publishes what ``/status`` shows into the context's
cells while it runs, and `Site.status` reads only those, so a crashed child never answers for
itself during its restart backoff.

Strategy: **rest_for_one**, children in the order device link → safety guard → watchdog
(→ schedule executor, when the tree gives a schedule book: a crash of any of the three before
it restarts it too, and the new instance puts the slot in force back at once).

* If the device link crashes (a bug: device faults are handled inside it), the guard and the
  watchdog restart after it: they start against the new link instance, with no stale write
  in flight and no half-finished stop.
* A crash of the guard restarts the guard and the watchdog, never the link: the connection and
  its polling survive (Huawei drops a client that reconnects too often), and the guard resumes
  from the state in the context, without re-logging blocks.
* A crash of the watchdog restarts only the watchdog.

Device and cloud outages consume no restart intensity: they are states inside the actors.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from actors import Backoff, ChildSpec, EventHook, Strategy, Supervisor, supervisor_spec
from bessai.clock import WallClock
from bessai.control.context import SiteContext
from bessai.control.controllers import ControllerConfig  # schedules (issue 15)
from bessai.control.device_link import DeviceLink, Driver, PollClass, WritePath
from bessai.control.dispatch import Dispatcher, DispatchTags
from bessai.control.events import EventOutbox
from bessai.control.executor import (  # schedules (issue 15)
    DirectCommands,
    ScheduleExecutor,
    schedule_status,
)
from bessai.control.gate import CommandGate, CommandPolicy
from bessai.control.guard import SafetyGuard
from bessai.control.limits import Limits, limits_from, stale_after
from bessai.control.schedule_store import ScheduleBook  # schedules (issue 15)
from bessai.control.watchdog import Watchdog
from bessai.device.connection import RECONNECT_BACKOFF, ModbusConnection
from bessai.device.modbus import StreamFactory
from bessai.model import Action, Snapshot
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.observe.tracing import NULL_TRACER, Tracer
from bessai.status_cell import Presence

if TYPE_CHECKING:
    from bessai.device import Profile, UniversalDriver
    from bessai.device.profile import WatchdogSpec
    from bessai.settings import DeviceSpec, Settings


@attrs.frozen
class SiteConfig:
    """How one device is driven. Build it from a profile with `SiteConfig.from_profile`."""

    site_id: str
    device_id: str
    limits: Limits = attrs.field(factory=Limits)
    heartbeat: WatchdogSpec | None = None
    """The profile's watchdog section (``None``: no heartbeat to feed)."""
    dispatch: DispatchTags = attrs.field(factory=DispatchTags)
    fast_interval_s: float = 1.0
    slow_interval_s: float = 30.0
    guard_tick_s: float | None = None
    backoff: Backoff = RECONNECT_BACKOFF
    retry_cap_s: float | None = None
    """Longest wait before retrying a unit (and reconnecting): from the device's comm-loss
    timeout (`bessai.device.reconnect_cap_s`), so it is heartbeated again before it gives up."""
    own_connection: bool = True
    """False when the tree runs the endpoint's connection (the gateway, several units)."""
    call_timeout_s: float | None = None
    heartbeat_late_tolerance_s: float = 1.0
    write_path: WritePath = "direct"  # DeviceLink.write_path: "direct" or "queue"
    command_policy: CommandPolicy = attrs.field(factory=CommandPolicy)
    """TTL, minimum power and rate bounds of the command gate (COMMAND_* settings)."""

    @classmethod
    def from_profile(cls, profile: Any, *, site_id: str, device_id: str,
                     limits: Mapping[str, object] | None = None,
                     fast_interval_s: float = 1.0, slow_interval_s: float = 30.0,
                     stale_polls: int = 3, **kwargs: Any) -> SiteConfig:
        """From a loaded `bessai.device.Profile` plus site overrides (``limits``: any `Limits`
        field, e.g. ``{"soc_min_pct": 10.0}``). Data older than ``stale_polls`` fast polls is
        stale."""
        from bessai.device.connection import reconnect_cap_s

        timeout = getattr(getattr(profile, "connection", None), "timeout_s", None)
        kwargs.setdefault("call_timeout_s", 3 * timeout + 5 if timeout else None)
        watchdog = profile.watchdog
        kwargs.setdefault("retry_cap_s", reconnect_cap_s(
            watchdog.device_timeout_s if watchdog is not None else None))
        return cls(
            site_id=site_id, device_id=device_id,
            limits=limits_from(limits, soc_tag=profile.safety.soc_tag,
                               temp_tags=profile.safety.temperature_tags,
                               poll_interval_s=fast_interval_s, stale_polls=stale_polls),
            heartbeat=profile.watchdog,
            dispatch=DispatchTags.from_profile(profile),
            fast_interval_s=fast_interval_s, slow_interval_s=slow_interval_s, **kwargs)


@attrs.define(eq=False)
class Site:
    """Everything for one device. Children are built fresh by the factories on every start;
    the context, dispatcher and gate are built once and outlive restarts."""

    config: SiteConfig
    ctx: SiteContext
    driver_factory: Callable[[], Driver]
    dispatcher: Dispatcher
    gate: CommandGate
    outputs: Sequence[Callable[[Snapshot], Any]] = ()
    fast_poll: PollClass = "fast"
    slow_poll: PollClass = None
    tracer: Tracer = NULL_TRACER
    # -- schedules (issue 15): the executor child, when the tree gives a schedule book --
    direct: DirectCommands | None = None
    schedules: ScheduleBook | None = None
    control: ControllerConfig = attrs.field(factory=ControllerConfig)

    def schedule_executor(self) -> ScheduleExecutor:
        assert self.schedules is not None
        assert self.direct is not None
        c = self.config
        return ScheduleExecutor(
            self.ctx, self.schedules, self.direct, dispatch_tags=c.dispatch,
            control=self.control, tick_s=c.fast_interval_s,
            stale_after_s=c.limits.stale_after_s)
    # -- end schedules --

    def device_link(self) -> DeviceLink:
        c = self.config
        return DeviceLink(
            self.driver_factory(), c.site_id, c.device_id, fast_interval_s=c.fast_interval_s,
            slow_interval_s=c.slow_interval_s, outputs=self.outputs,
            latest_outputs=[self.ctx.snapshots.set], backoff=c.backoff,
            metrics=self.ctx.metrics, tracer=self.tracer, call_timeout_s=c.call_timeout_s,
            handle=self.ctx.link, own_connection=c.own_connection, retry_cap_s=c.retry_cap_s,
            fast_poll=self.fast_poll, slow_poll=self.slow_poll, write_path=c.write_path)

    def safety_guard(self) -> SafetyGuard:
        c = self.config
        return SafetyGuard(self.ctx, limits=c.limits, tick_s=c.guard_tick_s or c.fast_interval_s,
                           dispatch_tags=c.dispatch, watchdog=None)

    def watchdog(self) -> Watchdog:
        c = self.config
        return Watchdog(self.ctx, heartbeat=c.heartbeat,
                        renew_interval_s=c.dispatch.renew_interval_s,
                        late_tolerance_s=c.heartbeat_late_tolerance_s)

    def reconfigured(self, limits: Mapping[str, float], *, fast_interval_s: float,
                     slow_interval_s: float, stale_polls: int = 3) -> SiteConfig:
        """This site's config with new limits (any `LIMIT_SETTINGS` field) and poll rates; the
        staleness threshold follows the fast poll. Raises ValueError and changes nothing if the
        result is inconsistent (the reload then keeps everything as it was)."""
        c = self.config
        changes: dict[str, Any] = {**limits,
                                   "stale_after_s": stale_after(fast_interval_s, stale_polls)}
        new_limits = attrs.evolve(c.limits, **changes)
        return attrs.evolve(c, limits=new_limits, fast_interval_s=fast_interval_s,
                            slow_interval_s=slow_interval_s)

    def apply(self, config: SiteConfig) -> None:
        """Put ``config`` in force without a restart: the guard's next decision uses its limits
        (published in the context), the running device link its poll rates from its next poll,
        and every instance started later the whole of it. Never raises, never waits."""
        self.config = config
        self.ctx.limits = config.limits
        link = self.ctx.link.current
        if link is not None:
            link.fast_interval_s = config.fast_interval_s
            link.slow_interval_s = config.slow_interval_s

    def status(self) -> dict[str, Any]:
        """A JSON-ready view of this device's control loop, for the status endpoint and the
        CLI: link state and why, snapshot age, active safety rules, forcing, heartbeat.
        Reads only what the tree owns: the context's cells, the dispatcher, the schedule book.
        While the device link restarts its state is ``restarting`` with the error."""
        now = trio.current_time()
        cell = self.ctx.link.cell
        link = cell.value
        link_view: dict[str, Any] = {"state": "stopped"}
        if link is None and cell.presence is Presence.RESTARTING:
            link_view = {"state": str(cell.presence), "reason": cell.ended_reason,
                         "for_s": None if cell.since is None else round(now - cell.since, 3)}
        if link is not None:
            age = link.snapshot_age(now)
            link_view = {
                "state": link.state.value, "reason": link.reason,
                "for_s": round(now - link.since, 3),
                "retry_in_s": None if link.retry_at is None else round(link.retry_at - now, 3),
                "snapshot_age_s": None if age is None else round(age, 3)}
        safety = self.ctx.safety
        active = self.dispatcher.active
        beat = self.ctx.heartbeat
        return {
            "site": self.config.site_id,
            "device": self.config.device_id,
            "link": link_view,
            "safety": {
                "blocked_charge": safety.blocked_charge,
                "blocked_discharge": safety.blocked_discharge,
                "waiting_for_data": not self.ctx.safety_evaluated,
                "rules": [attrs.asdict(hit) for _, hit in sorted(safety.active.items())]},
            "forcing": None if active is None else {
                "command_id": active.command.id, "action": active.action.value,
                "power_w": active.power_w, "expires_at": active.command.expires_at,
                "lease_renewed_s_ago": round(now - active.renewed_at, 3)},
            "heartbeat": None if beat.last_beat_at is None else {
                "beats": beat.beats, "max_gap_s": round(beat.max_gap_s, 3),
                "last_s_ago": round(now - beat.last_beat_at, 3)},
            "events_pending": len(self.ctx.events.pending),
            # schedules (issue 15): the plan and the slot in force, while a schedule runs
            "schedule": None if self.schedules is None
            else schedule_status(self.ctx, self.schedules),
        }

    def child_specs(self) -> list[ChildSpec]:
        """The three children in start order: device link, safety guard, watchdog.

        Each factory builds a fresh instance per start. Grace: the link gets 2 s to finish the
        request in flight and close its connection; the guard and the watchdog hold nothing to
        flush (a forced command is left to the device-side lease, which ends it within a minute).
        """
        specs = [
            ChildSpec("device_link", self.device_link, grace_s=2.0),
            ChildSpec("safety_guard", self.safety_guard, grace_s=0.5),
            ChildSpec("watchdog", self.watchdog, grace_s=0.5),
        ]
        if self.schedules is not None:  # schedules (issue 15): last, after the watchdog
            specs.append(ChildSpec("schedule", self.schedule_executor, grace_s=0.5))
        return specs

    def supervisor_options(self) -> dict[str, Any]:
        # rest_for_one: see the module docstring. Device faults never reach the supervisor, so
        # only bugs count against the intensity: 3 crashes within a minute escalate to the
        # gateway supervisor (which restarts the whole site) instead of crash-looping here.
        return {"strategy": Strategy.REST_FOR_ONE, "intensity": 3, "period_s": 60.0,
                "backoff": Backoff(initial_s=0.5, max_s=10.0, jitter=0.2, reset_after_s=60.0),
                "name": f"site:{self.config.device_id}"}

    def supervisor(self, *, on_event: EventHook | None = None) -> Supervisor:
        """The site supervisor, to run on its own (``await nursery.start(sup.run)``)."""
        return Supervisor(children=self.child_specs(), on_event=on_event,
                          **self.supervisor_options())

    def supervisor_spec(self, child_id: str | None = None, *,
                        on_event: EventHook | None = None) -> ChildSpec:
        """A ChildSpec nesting this site's supervisor under the gateway supervisor (a fresh
        supervisor per start; nothing keeps it — reach it with ``Supervisor.nested``)."""
        return supervisor_spec(child_id or f"site_{self.config.device_id}", self.child_specs(),
                               on_event=on_event, **self.supervisor_options())


def build_site(config: SiteConfig, driver_factory: Callable[[], Driver], *,
               wall_clock: WallClock, events: EventOutbox | None = None,
               metrics: MetricSink = NULL_SINK,
               outputs: Sequence[Callable[[Snapshot], Any]] = (),
               fast_poll: PollClass = "fast", slow_poll: PollClass = None,
               tracer: Tracer = NULL_TRACER, schedules: ScheduleBook | None = None,
               control: ControllerConfig | None = None) -> Site:
    """Wire one device's control: context, dispatcher, gate and the children's factories.

    ``outputs`` receive every polled snapshot (the recorder's ring push); they must not block.
    ``events`` is where critical events go (the lead drains ``events.receive()`` into the spool).
    ``metrics`` / ``tracer`` are the telemetry seams (the device link spans each poll cycle).
    ``schedules`` (the tree's `ScheduleBook`) adds the schedule executor child; ``control``
    tunes its slot controllers.
    """
    ctx = SiteContext(config.site_id, config.device_id, wall_clock,
                      events=events or EventOutbox(), metrics=metrics, limits=config.limits)

    def blocked(action: Action) -> bool:
        if action is Action.CHARGE:
            return ctx.safety.blocked_charge
        if action is Action.DISCHARGE:
            return ctx.safety.blocked_discharge
        return False

    dispatcher = Dispatcher(ctx.link, config.dispatch, wall_clock=wall_clock, blocked=blocked,
                            site_id=config.site_id, device_id=config.device_id)
    ctx.dispatcher = dispatcher
    direct = DirectCommands(dispatcher)  # schedules (issue 15): a direct command overrides
    gate = CommandGate(config.site_id, config.device_id, direct, safety=lambda: ctx.safety,
                       emit=ctx.events.emit, wall_clock=wall_clock, latest=ctx.latest,
                       charge_tag_max_w=config.dispatch.charge_power_max_w,
                       discharge_tag_max_w=config.dispatch.discharge_power_max_w,
                       metrics=metrics, policy=config.command_policy)
    return Site(config, ctx, driver_factory, dispatcher, gate, outputs=outputs,
                fast_poll=fast_poll, slow_poll=slow_poll, tracer=tracer, direct=direct,
                schedules=schedules, control=control or ControllerConfig())


LIMIT_SETTINGS = ("soc_min_pct", "soc_max_pct", "soc_hysteresis_pct", "temp_max_c",
                  "temp_hysteresis_c")
"""The `bessai.settings.Settings` fields that become a site's `Limits`."""


def site_from_settings(settings: Settings, device: DeviceSpec, *, wall_clock: WallClock,
                       profile: Profile | None = None, events: EventOutbox | None = None,
                       metrics: MetricSink = NULL_SINK, tracer: Tracer = NULL_TRACER,
                       outputs: Sequence[Callable[[Snapshot], Any]] = (),
                       stream_factory: StreamFactory | None = None,
                       connection: ModbusConnection | None = None,
                       rng: random.Random | None = None,
                       schedules: ScheduleBook | None = None) -> Site:
    """The `Site` for one ``settings.devices`` entry: limits, poll rates, command policy and
    slot controllers from the settings, watchdog and dispatch from the device's profile, a
    `UniversalDriver` to ``device.host``. The gateway builds its sites here, and so do tools.

    ``stream_factory`` replaces TCP (``Simulator.stream_factory()`` for an in-process device).
    ``connection``: the endpoint's shared `ModbusConnection`, run by the tree (see
    `bessai.control.connections`); without it each device link runs a private one.
    ``schedules`` (the tree's `ScheduleBook`) adds the schedule executor child.
    """
    from bessai.device import UniversalDriver, load_profile

    loaded = profile if profile is not None else load_profile(device.profile)
    config = SiteConfig.from_profile(
        loaded, site_id=settings.site_id, device_id=device.id,
        limits={name: getattr(settings, name) for name in LIMIT_SETTINGS},
        fast_interval_s=settings.poll_interval_s, slow_interval_s=settings.slow_poll_interval_s,
        command_policy=CommandPolicy.from_settings(settings),
        own_connection=connection is None)

    def driver() -> UniversalDriver:
        if connection is not None:
            return UniversalDriver(loaded, unit_id=device.unit_id, connection=connection,
                                   site_id=settings.site_id, device_id=device.id,
                                   wall_clock=wall_clock, rng=rng)
        if stream_factory is not None:
            return UniversalDriver(loaded, unit_id=device.unit_id,
                                   stream_factory=stream_factory, site_id=settings.site_id,
                                   device_id=device.id, wall_clock=wall_clock, rng=rng)
        return UniversalDriver(loaded, device.host, device.port, device.unit_id,
                               site_id=settings.site_id, device_id=device.id,
                               wall_clock=wall_clock, rng=rng)

    return build_site(config, driver, wall_clock=wall_clock, events=events, metrics=metrics,
                      outputs=outputs, tracer=tracer, schedules=schedules,
                      control=ControllerConfig.from_settings(settings))
