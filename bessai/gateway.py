"""The gateway tree: the one place where actors are built and wired together.

::

    gateway supervisor (one_for_one)
    ├── telemetry          started first, stopped last (flushes OTel)
    ├── data               the disk and cloud branch: an IsolatedBranch around a supervisor
    │   │                  (one_for_one) whose escalation never reaches the gateway
    │   ├── spool          owns the durable outbox (SQLite)
    │   ├── recorder       snapshots (drop-oldest ring) → spool
    │   ├── events         critical events (held in a bounded outbox) → spool
    │   ├── emulator_setup creates missing topics/subscription      (on the Pub/Sub emulator only)
    │   ├── uplink         spool → Pub/Sub REST; link state machine     (when a topic is set)
    │   └── commands       Pub/Sub pull of dispatch commands → gate   (when a subscription is set)
    │                      (and of schedules → ScheduleIntake → schedules.sqlite + book)
    ├── site_<device>      one nested supervisor per device (rest_for_one):
    │   ├── device_link    owns the one Modbus connection; polls; serves writes by priority
    │   ├── safety_guard   limits, hysteresis, command gate, SAFETY_BLOCK
    │   ├── watchdog       heartbeat + dispatch lease renewals, through the device link
    │   └── schedule       the stored local schedule, slot by slot, through the dispatcher
    ├── status             /healthz and /status on STATUS_BIND (127.0.0.1 by default)
    └── sighup             re-reads the whole configuration on SIGHUP (when signals are ours)

Why one_for_one at the top: the local control loop never waits on the cloud. A crash in the
uplink, the recorder or telemetry restarts only that child; the device sites keep polling,
guarding and feeding the watchdog. Expected faults (device timeouts, a dead link, a full or
read-only disk) are states inside the actors and never reach a supervisor, so a 3-day outage
consumes no intensity.

Why a separate ``data`` branch (DESIGN rule 6): nothing from outside may take the control loop
down. Escalating to "exit 1, let systemd restart us" is right for a bug in the control loop
itself (a site that crash-loops still escalates to the gateway and ends the process, as
before); it is wrong when the cause is an input or a resource the restart will meet again.
Everything that touches the disk or the cloud therefore runs in ``data``: if it crash-loops
past its own intensity (10 in 60 s), `IsolatedBranch` stops it, logs ``DATA_BRANCH_DEGRADED``
once, and rebuilds it after a capped backoff (1 s doubling to 60 s) — for ever, never
escalating — and logs ``DATA_BRANCH_RECOVERED`` once it has run 2 minutes without escalating.
Meanwhile the sites keep polling, guarding and heartbeating; critical events wait in the
bounded `EventOutbox` (``EVENTS_HOLD_FULL`` past 10,000) and readings in the drop-oldest ring
(drops counted and written as gap records once the spool takes writes again). ``/healthz``
answers 503 naming the degraded branch or the disk condition, so an operator is called; the
process itself keeps the battery safe.

State that must outlive a restart lives here, outside the actor instances: the spool object
(its rows are on disk; the spool actor re-opens it), the snapshot ring, the critical-event
outbox, each site's context (latest snapshot, safety state, active forced command), and the
schedule book (its plans are in ``schedules.sqlite`` beside the spool; read once at start).

Status is published, not scraped: the uplink and the commands source write their link state
into the gateway's `StatusCell`s (``cloud_status``, ``commands_status``), the site children
into their `SiteContext`'s, and each cell is marked ended the moment its instance ends.
`Gateway.status` reads those cells and the supervisors' introspection, never an instance, so
during a restart backoff ``/status`` says ``restarting`` instead of a dead instance's state.
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import httpx
import structlog
import trio

from actors import (
    Backoff,
    ChildInfo,
    ChildSpec,
    DropOldestRing,
    IsolatedBranch,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorEvent,
)
from bessai.bounds import clip
from bessai.clock import WallClock, system_wall_clock
from bessai.config_reload import ReloadPlan, live_settings, plan_reload
from bessai.control import CommandRouter, EventOutbox, Site, site_from_settings
from bessai.control.connections import connections_for, distinct
from bessai.control.gate import CommandPolicy
from bessai.control.schedule import ScheduleLimits  # schedules (issue 15)
from bessai.control.schedule_intake import ScheduleIntake  # schedules (issue 15)
from bessai.control.schedule_store import (  # schedules (issue 15)
    ScheduleBook,
    ScheduleStore,
    schedule_path_for,
)
from bessai.control.site import LIMIT_SETTINGS
from bessai.device import Profile, load_profile
from bessai.device.connection import ModbusConnection
from bessai.model import Event, Snapshot
from bessai.observe import StatusServer, TelemetryActor, TelemetryConfig, health_from_status
from bessai.observe.logs import set_log_level
from bessai.settings import DeviceSpec, Settings, SettingsError, get_settings
from bessai.status_cell import LinkReport, StatusCell, link_view
from bessai.trust import CommandTrust
from bessai.uplink.credentials import (
    Endpoint,
    SwitchableCredentials,
    credentials_for,
    make_client,
)
from bessai.uplink.emulator_setup import EmulatorSetup
from bessai.uplink.publisher import Publisher
from bessai.uplink.recorder import Recorder, record_event
from bessai.uplink.spool import Spool
from bessai.uplink.uplink import Uplink
from bessai.version import gateway_version

log = structlog.get_logger("bessai.gateway")

StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]

DRAIN_CHECK_S = 0.3
"""At shutdown the uplink stops once nothing is left to publish on two checks this far apart
(longer than the spool's group commit), or when its grace (SHUTDOWN_DEADLINE_S / 2) ends."""

DRAIN_TICK_S = 0.05
DRAIN_STALL_S = 0.3
"""... or as soon as nothing has been published for this long (the cloud is down, black-holed or
slow): what is left stays in the spool and is sent after the next start, so a stop with the
cloud down takes well under a second instead of the whole grace."""

TELEMETRY_FLUSH_MAX_S = 5.0
"""The longest the last OTel flush may take at shutdown (less when SHUTDOWN_DEADLINE_S is short)."""

SNAPSHOT_RING_CAPACITY = 10_000
"""Snapshots waiting for the recorder. The recorder only waits on local disk, so the ring fills
only if the disk stalls; then the oldest readings are dropped and counted, the poll never waits."""


SIMULATED = {"simulated": "true"}
"""The attribute every message of a simulator run carries (downstream filters on it)."""

GATEWAY_INTENSITY = 10
GATEWAY_PERIOD_S = 60.0
GATEWAY_BACKOFF = Backoff(initial_s=0.1, max_s=3.0, multiplier=2.0, jitter=0.2, reset_after_s=60.0)
"""Restart policy of the top supervisor. Only bugs reach it (expected faults are states inside
the actors). The backoff cap must stay well below ``GATEWAY_PERIOD_S / GATEWAY_INTENSITY``-ish
spacing: with a 30 s cap a crash-looping child would restart every 30 s forever and never
escalate; with 3 s it escalates within about half a minute, the process exits 1, and systemd or
Docker restarts it clean — what an operator expects from a crash loop of the control loop.
The ``data`` branch has the same intensity for its own children, but its escalation is absorbed
(`DATA_BRANCH_BACKOFF`)."""

DATA_BRANCH_BACKOFF = Backoff(initial_s=1.0, max_s=60.0, multiplier=2.0, jitter=0.2,
                              reset_after_s=120.0)
"""Between rebuilds of a ``data`` branch that escalated: capped at a minute (the disk or the
cloud is retried at least that often), and healthy again after 2 quiet minutes."""


class _ClientActor(Protocol):
    """An actor built around an httpx client (the uplink, the commands source, the emulator
    set-up)."""

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


@attrs.define(eq=False)
class _HttpActor:
    """Runs an actor that needs an httpx client, and closes the client when the actor ends.

    ``status``: the tree's cell the inner actor publishes its link into; marked ended here when
    the actor ends, however it ends, so ``/status`` never shows a dead instance's link.
    Graceful stop: without ``drained`` it ends at once; with it (the uplink) it keeps running
    until ``drained()`` has held twice in a row `DRAIN_CHECK_S` apart (so a group the recorder
    is committing right now is not missed), within the supervisor's grace, then it is cancelled.
    """

    endpoint: Endpoint
    transport: httpx.AsyncBaseTransport | None
    build: Callable[[httpx.AsyncClient], _ClientActor]
    timeout_s: float = 30.0
    status: StatusCell[LinkReport] | None = None
    drained: Callable[[], bool] | None = None
    progress: Callable[[], object] | None = None
    """What else moves while a drain is worth waiting for (rows still arriving)."""
    _stop: trio.Event = attrs.field(factory=trio.Event, init=False)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.status is None:
            await self._run(task_status)
            return
        with self.status.running():
            await self._run(task_status)

    async def _run(self, task_status: Any) -> None:
        async with make_client(self.endpoint, timeout_s=self.timeout_s,
                               transport=self.transport) as client:
            actor = self.build(client)
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_actor, actor, nursery.cancel_scope)
                task_status.started()
                nursery.start_soon(self._stop_when_drained, nursery.cancel_scope)

    async def _run_actor(self, actor: _ClientActor, scope: trio.CancelScope,
                         task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await actor.run(task_status=task_status)
        scope.cancel()  # it ended by itself: so does this actor (the supervisor decides)

    async def _stop_when_drained(self, scope: trio.CancelScope) -> None:
        await self._stop.wait()
        progress = self._progress()
        now = trio.current_time()
        progressed_at, drained_since = now, None
        while self.drained is not None:
            now = trio.current_time()
            if self.drained():
                drained_since = now if drained_since is None else drained_since
                if now - drained_since >= DRAIN_CHECK_S:
                    break
            else:
                drained_since = None
                if self._progress() != progress:
                    progress, progressed_at = self._progress(), now
                elif self._link_down() or now - progressed_at >= DRAIN_STALL_S:
                    # Nothing leaves the spool (cloud down, black-holed or slow): the rest stays
                    # on disk for the next start; waiting longer would only delay the stop.
                    log.info("uplink_drain_stopped", reason="no progress",
                             stalled_s=round(now - progressed_at, 2))
                    break
            await trio.sleep(DRAIN_TICK_S)
        scope.cancel()

    def _link_down(self) -> bool:
        report = None if self.status is None else self.status.value
        return report is not None and report.is_down

    def _progress(self) -> tuple[int, object]:
        """What moves while a drain is worth waiting for: messages published (the count in the
        status cell), and (through ``progress``) rows still arriving from the recorder."""
        report = None if self.status is None else self.status.value
        extra = self.progress() if self.progress is not None else None
        return (0 if report is None else report.count, extra)


@attrs.define(eq=False)
class _SighupReloader:
    """On SIGHUP: ``reload()`` (the gateway re-reads and applies its configuration). Needs the
    main thread's signals. ``reload`` must not raise: a crash here would leave the process
    without a handler while this child restarts, and the next SIGHUP would kill it."""

    reload: Callable[[], object]

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                self.reload()


@attrs.define(eq=False)
class Gateway:
    """Builds and runs the whole tree from `Settings`.

    Seams for tests and the demo: ``stream_factories`` (device id → in-memory stream to an
    in-process simulator instead of TCP), ``http_transport`` (wrap the Pub/Sub transport to
    inject faults), ``wall_clock`` (data timestamps), ``rng`` (jitter).
    """

    settings: Settings
    wall_clock: WallClock = system_wall_clock
    stream_factories: Mapping[str, StreamFactory] = attrs.field(factory=dict)
    http_transport: httpx.AsyncBaseTransport | None = None
    rng: random.Random = attrs.field(factory=random.Random)
    env_file: str | None = "config/.env"
    handle_sighup: bool = False
    status_server: bool = True
    telemetry_config: TelemetryConfig | None = None
    event_hook: Callable[[SupervisorEvent], None] | None = None
    """Also receives every supervisor event of the tree (gateway and sites), after telemetry."""
    simulated: bool = False
    """Data comes from a simulator: every published message carries ``simulated=true``."""
    settings_loader: Callable[[], Settings] | None = None
    """How a reload (SIGHUP) reads the settings again (default: ``get_settings(env_file=...)``;
    ``bessai-run --simulator`` adds its defaults the same way it did at start)."""

    telemetry: TelemetryActor = attrs.field(init=False)
    spool: Spool = attrs.field(init=False)
    snapshots: DropOldestRing[Snapshot] = attrs.field(init=False)
    events: EventOutbox = attrs.field(init=False)
    data_children: tuple[ChildSpec, ...] = attrs.field(init=False)
    """The ``data`` branch's children; each rebuild of the branch reads this (a seam for chaos
    tests, which wrap one of them)."""
    data_branch: IsolatedBranch = attrs.field(init=False)
    """The ``data`` child: the same object on every start (its state is the branch's health),
    so its introspection answers for the supervisor it runs now."""
    sites: dict[str, Site] = attrs.field(init=False, factory=dict)
    router: CommandRouter = attrs.field(init=False)
    command_trust: CommandTrust = attrs.field(init=False)
    """Issue 14: verify keys, the durable replay store, the clock's trust (one per gateway)."""
    schedule_book: ScheduleBook = attrs.field(init=False)  # schedules (issue 15)
    schedule_intake: ScheduleIntake = attrs.field(init=False)
    supervisor: Supervisor = attrs.field(init=False)
    endpoint: Endpoint | None = attrs.field(init=False, default=None)
    cloud_status: StatusCell[LinkReport] = attrs.field(init=False, factory=StatusCell)
    """The running uplink's Pub/Sub link and published count (``links.cloud`` in /status)."""
    commands_status: StatusCell[LinkReport] = attrs.field(init=False, factory=StatusCell)
    """The running commands source's link and handled count (``links.commands``)."""
    supervisor_done: trio.Event = attrs.field(init=False, factory=trio.Event)
    """Set when the tree has ended, whether by a stop request or an escalation."""
    connections: dict[str, ModbusConnection] = attrs.field(init=False, factory=dict)
    """Device id → its endpoint's connection (one object per endpoint)."""
    _profiles: dict[str, Profile] = attrs.field(init=False, factory=dict)
    _credentials: SwitchableCredentials | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        s = self.settings
        # Telemetry stops last and its flush is shielded: give it at most half the shutdown
        # deadline (the uplink's drain has the other half), so a hung collector cannot hold
        # the process past SHUTDOWN_DEADLINE_S.
        config = self.telemetry_config or TelemetryConfig(
            endpoint=s.otel_exporter_otlp_endpoint, site_id=s.site_id, host_name=_host_name(),
            service_version=gateway_version(),
            shutdown_deadline_s=min(TELEMETRY_FLUSH_MAX_S, s.shutdown_deadline_s / 2))
        self.telemetry = TelemetryActor(config)
        sink = self.telemetry.sink
        self.spool = Spool(Path(s.spool_path), max_bytes=s.spool_max_bytes,
                           wall_clock=self.wall_clock, sink=sink)
        self.snapshots = DropOldestRing(SNAPSHOT_RING_CAPACITY)
        self.events = EventOutbox()
        self.command_trust = CommandTrust.from_settings(s, wall_clock=self.wall_clock,
                                                        sink=sink)
        # One connection per physical endpoint, shared by the units behind it (SDongle).
        self.connections = connections_for(
            s.devices, lambda d: self._profile(d), site_id=s.site_id,
            stream_factories=self.stream_factories, rng=self.rng, metrics=self.telemetry.sink)
        self.schedule_book = _load_schedules(ScheduleStore(schedule_path_for(s.spool_path)))
        for device in s.devices:
            self.sites[device.id] = self._build_site(device)
        self.router = CommandRouter(s.site_id, {d: site.gate for d, site in self.sites.items()},
                                    emit=self.events.emit, wall_clock=self.wall_clock,
                                    metrics=self.telemetry.sink, trust=self.command_trust)
        # -- schedules (issue 15): checked against each device's writable power limits --
        self.schedule_intake = ScheduleIntake(
            s.site_id, {d: ScheduleLimits(site.config.dispatch.charge_power_max_w,
                                          site.config.dispatch.discharge_power_max_w,
                                          s.command_min_power_w)
                        for d, site in self.sites.items()},
            ScheduleStore(schedule_path_for(s.spool_path)), self.schedule_book,
            emit=self.events.emit, wall_clock=self.wall_clock, metrics=self.telemetry.sink,
            trust=self.command_trust)
        if s.uplink_mode != "off":
            self.endpoint = (Endpoint.for_emulator(s.pubsub_emulator_host or "")
                             if s.uplink_mode == "emulator" else Endpoint())
            self._credentials = SwitchableCredentials(
                credentials_for(self.endpoint, s.google_application_credentials))
        self.data_children = tuple(self._data_specs())
        self.data_branch = IsolatedBranch(self._build_data_supervisor,
                                          backoff=DATA_BRANCH_BACKOFF,
                                          on_state=self._on_data_state, rng=self.rng)
        self.supervisor = Supervisor(children=self._child_specs(), strategy=Strategy.ONE_FOR_ONE,
                                     intensity=GATEWAY_INTENSITY, period_s=GATEWAY_PERIOD_S,
                                     backoff=GATEWAY_BACKOFF, name="gateway",
                                     on_event=self._on_event, rng=self.rng)

    # ---- wiring ---------------------------------------------------------------------------

    def _profile(self, device: DeviceSpec) -> Profile:
        if device.id not in self._profiles:
            self._profiles[device.id] = load_profile(device.profile)
        return self._profiles[device.id]

    def _build_site(self, device: DeviceSpec) -> Site:
        site = site_from_settings(
            self.settings, device, wall_clock=self.wall_clock, profile=self._profile(device),
            events=self.events, metrics=self.telemetry.sink, tracer=self.telemetry.tracer,
            outputs=[self._push_snapshot], connection=self.connections[device.id],
            rng=self.rng, schedules=self.schedule_book)  # schedules (issue 15)
        # issue 14: the gate asks the trust layer; a forcing ends at its expiry on a clock the
        # gateway trusts (server time while the local clock is off by more than the limit)
        site.gate.trust = self.command_trust
        site.dispatcher.wall_clock = self._expiry_clock
        return site

    def _expiry_clock(self) -> float:
        return self.command_trust.expiry_now(self.wall_clock())

    def _push_snapshot(self, snapshot: Snapshot) -> None:
        """Into the recorder's ring; a reading the full ring pushed out is counted as a drop
        and becomes part of a gap record (the spool writes it once it takes writes)."""
        victim = self.snapshots.push(snapshot)
        if victim is not None:
            self.spool.note_lost(victim.site_id, victim.device_id, 1, victim.ts, victim.ts,
                                 reason="ring_full")

    def _data_specs(self) -> list[ChildSpec]:
        s = self.settings
        specs = [
            # The same Spool object on every start: its state is the file; run() re-opens it.
            ChildSpec("spool", lambda: self.spool, grace_s=5.0),
            ChildSpec("recorder", self._recorder, grace_s=2.0),
            ChildSpec.from_function("events", self.events.forward, self._record_event),
        ]
        if self.endpoint is not None and self.endpoint.emulator:
            specs.append(ChildSpec("emulator_setup", self._emulator_setup, grace_s=0.0))
        if self.endpoint is not None and s.pubsub_topic:
            specs.append(ChildSpec("uplink", self._uplink, grace_s=s.shutdown_deadline_s / 2))
        if self.endpoint is not None and s.pubsub_commands_subscription:
            specs.append(ChildSpec("commands", self._commands, grace_s=1.0))
        return specs

    def _build_data_supervisor(self) -> Supervisor:
        """A fresh ``data`` supervisor for each (re)build of the branch."""
        return Supervisor(children=self.data_children, strategy=Strategy.ONE_FOR_ONE,
                          intensity=GATEWAY_INTENSITY, period_s=GATEWAY_PERIOD_S,
                          backoff=GATEWAY_BACKOFF, name="data", on_event=self._on_event,
                          rng=self.rng)

    def _on_data_state(self, degraded: bool, escalation: SupervisorEscalation | None) -> None:
        if degraded:
            log.error("DATA_BRANCH_DEGRADED",
                      child=None if escalation is None else escalation.child_id,
                      error=clip(repr(None if escalation is None
                                      else escalation.last_exception), 300),
                      held_events=len(self.events.pending),
                      action="the spool/uplink branch crash-looped and is rebuilt with backoff "
                             "(up to 60 s); the device sites keep running; critical events are "
                             "held in memory. Look at the error and SPOOL_DISK_FAULT lines")
        else:
            log.warning("DATA_BRANCH_RECOVERED", held_events=len(self.events.pending),
                        escalations=self.data_branch.escalations)

    def _child_specs(self) -> list[ChildSpec]:
        s = self.settings
        specs = [
            ChildSpec("telemetry", lambda: self.telemetry, grace_s=s.shutdown_deadline_s),
            ChildSpec("data", lambda: self.data_branch, grace_s=math.inf),
        ]
        for connection in distinct(self.connections):
            # The same object on every start: the connection outlives its owner's restarts.
            specs.append(ChildSpec(f"connection_{connection.peer}",
                                   _same(connection), grace_s=2.0))
        for site in self.sites.values():
            specs.append(site.supervisor_spec(on_event=self._on_event))
        if self.status_server:
            specs.append(ChildSpec("status", self._status, grace_s=0.0))
        if self.handle_sighup:
            specs.append(ChildSpec("sighup", self._sighup, grace_s=0.0))
        return specs

    def _recorder(self) -> Recorder:
        return Recorder(self.spool, snapshots=self.snapshots, sink=self.telemetry.sink)

    async def _record_event(self, event: Event) -> None:
        """Deliver one critical event: returns once it is on disk (then the outbox forgets it)."""
        await record_event(self.spool, event)

    def _uplink(self) -> _HttpActor:
        s = self.settings
        endpoint, credentials = self._cloud()

        def build(client: httpx.AsyncClient) -> Uplink:
            publisher = Publisher(client, s.gcp_project_id or "", s.pubsub_topic or "",
                                  endpoint=endpoint, credentials=credentials,
                                  wall_clock=self.wall_clock,
                                  extra_attributes=SIMULATED if self.simulated else {})
            # A 403/404 is retried with the normal backoff (capped at a minute), not a fixed
            # minute: a topic created by hand is used within seconds.
            return Uplink(self.spool, publisher, sink=self.telemetry.sink,
                          tracer=self.telemetry.tracer, rng=self.rng, config_fault_retry_s=0.0,
                          status_cell=self.cloud_status)

        return _HttpActor(endpoint, self.http_transport, build, status=self.cloud_status,
                          drained=self._nothing_to_publish, progress=self._rows_accepted)

    def _cloud(self) -> tuple[Endpoint, SwitchableCredentials]:
        """The Pub/Sub endpoint and credentials (only the cloud children ask: they exist only
        when the uplink is not off)."""
        assert self.endpoint is not None
        assert self._credentials is not None
        return self.endpoint, self._credentials

    def _rows_accepted(self) -> object:
        """Changes while the recorder still moves readings into the spool."""
        return (len(self.snapshots), len(self.events.pending), self.spool.stats().depth)

    def _nothing_to_publish(self) -> bool:
        """True when every reading and event produced so far has left the spool for Pub/Sub."""
        return (len(self.snapshots) == 0 and not self.events.pending
                and self.spool.stats().depth == 0)

    def _commands(self) -> _HttpActor:
        from bessai.uplink.pull import CommandSource

        s = self.settings
        endpoint, credentials = self._cloud()

        def build(client: httpx.AsyncClient) -> CommandSource:
            return CommandSource(client, s.gcp_project_id or "",
                                 s.pubsub_commands_subscription or "",
                                 # schedules (issue 15): "type": "schedule" to the intake
                                 self.schedule_intake.route(self.router.handle_command_message),
                                 endpoint=endpoint, credentials=credentials, rng=self.rng,
                                 wall_clock=self.wall_clock, sink=self.telemetry.sink,
                                 observe=self.command_trust.clock.observe_response,
                                 config_fault_retry_s=0.0, status_cell=self.commands_status)

        return _HttpActor(endpoint, self.http_transport, build, status=self.commands_status)

    def _emulator_setup(self) -> _HttpActor:
        """The topics and subscription this configuration needs, created on the emulator."""
        s = self.settings
        endpoint, _ = self._cloud()
        topics = tuple(t for t in (s.pubsub_topic, s.pubsub_commands_topic) if t)
        subscriptions = ((s.pubsub_commands_subscription, s.pubsub_commands_topic),
                         ) if s.pubsub_commands_subscription and s.pubsub_commands_topic else ()

        def build(client: httpx.AsyncClient) -> EmulatorSetup:
            return EmulatorSetup(client, endpoint, s.gcp_project_id or "", topics,
                                 subscriptions)

        return _HttpActor(endpoint, self.http_transport, build, timeout_s=5.0)

    def _status(self) -> StatusServer:
        bind = self.settings.status_bind
        return StatusServer(self.status, self.health, host=bind.host, port=bind.port)

    def _sighup(self) -> _SighupReloader:
        return _SighupReloader(self.reload_config)

    # ---- configuration reload (SIGHUP) ------------------------------------------------------

    def _load_settings(self) -> Settings:
        if self.settings_loader is not None:
            return self.settings_loader()
        return get_settings(env_file=self.env_file)

    def reload_config(self) -> ReloadPlan | None:
        """Re-read and validate the whole configuration; apply the live keys, all or nothing.

        Returns what was done (None when the new configuration was rejected). Runs without a
        checkpoint between the first change and the last, so no actor ever sees half of it:
        the guard's next decision uses every new limit, or none. Cached credentials are always
        dropped, so a key file rotated in place is read again on the next publish. Never raises.
        """
        try:
            loaded = self._load_settings()
            plan = plan_reload(self.settings, loaded)
            site_configs = {
                device_id: site.reconfigured(
                    {name: getattr(loaded, name) for name in LIMIT_SETTINGS},
                    fast_interval_s=loaded.poll_interval_s,
                    slow_interval_s=loaded.slow_poll_interval_s)
                for device_id, site in self.sites.items()}
            effective = live_settings(self.settings, loaded)
        except SettingsError as error:
            log.error("CONFIG_RELOAD_FAILED", errors=len(error.problems),
                      problems=clip("; ".join(error.errors), 2000),
                      kept="the running configuration, unchanged")
            self._drop_cached_credentials()
            return None
        except Exception as error:  # a bug or an unreadable file: the same promise holds
            log.error("CONFIG_RELOAD_FAILED", errors=1,
                      problems=clip(f"{type(error).__name__}: {error}", 2000),
                      kept="the running configuration, unchanged")
            self._drop_cached_credentials()
            return None
        # ---- commit: nothing below raises or waits ----
        applied = set(plan.applied_keys())
        for device_id, config in site_configs.items():
            self.sites[device_id].apply(config)
        if "LOG_LEVEL" in applied:
            set_log_level(effective.log_level)
        if ("GOOGLE_APPLICATION_CREDENTIALS" in applied and self.endpoint is not None
                and self._credentials is not None):
            self._credentials.target = credentials_for(
                self.endpoint, effective.google_application_credentials)
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in applied:
            self.telemetry.reconfigure(attrs.evolve(
                self.telemetry.config, endpoint=effective.otel_exporter_otlp_endpoint))
        # The verify keys are re-read on every reload, changed path or not: a key added to or
        # removed from the directory is the rotation procedure (a bad set keeps the old one).
        self.command_trust.reconfigure(effective)
        policy = CommandPolicy.from_settings(effective)
        for site in self.sites.values():
            site.gate.policy = policy
        self.settings = effective
        self._drop_cached_credentials()
        log.warning("CONFIG_RELOADED", **plan.log_fields(), google_login="renewed")
        return plan

    def _drop_cached_credentials(self) -> None:
        if self._credentials is not None:
            self._credentials.invalidate()

    def _on_event(self, event: SupervisorEvent) -> None:
        self.telemetry.on_event(event)
        if self.event_hook is not None:
            self.event_hook(event)

    # ---- running --------------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the tree until `request_stop` or cancellation; ready when every child is."""
        log.info("gateway_starting", site=self.settings.site_id,
                 devices=",".join(str(d) for d in self.settings.devices),
                 uplink=self.settings.uplink_mode)
        self.command_trust.announce(
            subscription=self.settings.pubsub_commands_subscription
            if self.endpoint is not None else None)
        try:
            # A stop during start-up ends run normally (nursery.start returns): actors' contract.
            await self.supervisor.run(task_status=task_status)
        finally:
            self.supervisor_done.set()
            if self.command_trust.replay is not None:
                self.command_trust.replay.close()

    def request_stop(self) -> None:
        """Graceful stop: children stop in reverse order, each within its grace."""
        self.supervisor.request_stop()

    # ---- introspection --------------------------------------------------------------------

    def health(self) -> tuple[bool, list[str]]:
        """Healthy when the tree runs and every device link is up (the cloud may be down)."""
        return health_from_status(self.status())

    def status(self) -> dict[str, Any]:
        """The status document behind ``/status`` and the terminal screen.

        Read from what the tree owns — the supervisors' introspection, the status cells, the
        sites' contexts, the spool — never from an actor instance (see the module docstring)."""
        actors: dict[str, Any] = {}
        for info in self.supervisor.which_children(recursive=True):
            actors[info.id] = _child_view(info)
            for child in info.children:  # a running site supervisor's children
                actors[f"{info.id}/{child.id}"] = _child_view(child)
        branch = self.data_branch
        for info in branch.which_children():
            actors[f"data/{info.id}"] = _child_view(info)
        links: dict[str, Any] = {}
        sites: dict[str, Any] = {}
        for device_id, site in self.sites.items():
            view = site.status()
            latest = site.ctx.latest()
            view["values"] = None if latest is None else latest.values()
            view["connection"] = self.connections[device_id].peer
            sites[device_id] = view
            links[f"device:{device_id}"] = view["link"]
        for connection in distinct(self.connections):
            links[f"connection:{connection.peer}"] = connection.status()
        cloud = link_view(self.cloud_status, "published")
        if cloud is not None:
            links["cloud"] = cloud
        commands = link_view(self.commands_status, "handled", "handler_failures")
        if commands is not None:
            links["commands"] = commands
        spool = self.spool.stats().to_json()
        document = {
            "site": self.settings.site_id,
            "version": gateway_version(),
            "tree_running": self.supervisor.running,
            "actors": actors,
            "links": links,
            "sites": sites,
            "spool": spool,
            "data_branch": {"state": "degraded" if branch.degraded else "ok",
                            "escalations": branch.escalations,
                            "last_escalation": None if branch.last_escalation is None
                            else clip(repr(branch.last_escalation.last_exception), 300)},
            "events_held": len(self.events.pending),
            "events_dropped": self.events.dropped,
            "snapshots_dropped": self.snapshots.dropped,
            "telemetry": self.telemetry.status(),
            "uplink_mode": self.settings.uplink_mode,
            "commands_trust": self.command_trust.status(),
        }
        healthy, lines = health_from_status(document)
        document["health"] = {"healthy": healthy, "conditions": lines}
        return document


def _same(connection: ModbusConnection) -> Callable[[], ModbusConnection]:
    """A factory that hands out the same connection on every start."""
    return lambda: connection


def _load_schedules(store: ScheduleStore) -> ScheduleBook:
    """The stored schedules (issue 15). A file that cannot be read is a state, not a crash: the
    gateway starts without schedules (the sites still poll and guard) and says so."""
    try:
        return ScheduleBook(store.load_all())
    except Exception as exc:  # sqlite3.Error, OSError: a damaged or unreadable file
        log.error("SCHEDULE_STORE_FAILED", path=str(store.path), error=str(exc),
                  consequence="starting without schedules; send them again")
        return ScheduleBook()


def _child_view(info: ChildInfo) -> dict[str, Any]:
    failure = info.last_failure
    return {"state": info.state.value, "restart": info.restart.value,
            "restarts": info.restarts,
            "last_failure": None if failure is None else failure.exception_repr}


def _host_name() -> str:
    import socket

    return socket.gethostname()
