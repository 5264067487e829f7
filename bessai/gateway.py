"""The gateway tree: the one place where actors are built and wired together.

::

    gateway supervisor (one_for_one)
    ├── telemetry          started first, stopped last (flushes OTel)
    ├── spool              owns the durable outbox (SQLite)
    ├── recorder           snapshots (drop-oldest ring) → spool
    ├── events             critical events (never dropped) → spool
    ├── uplink             spool → Pub/Sub REST; link state machine     (when a topic is set)
    ├── commands           Pub/Sub pull of dispatch commands → gate   (when a subscription is set)
    │                      (and of schedules → ScheduleIntake → schedules.sqlite + book)
    ├── site_<device>      one nested supervisor per device (rest_for_one):
    │   ├── device_link    owns the one Modbus connection; polls; serves writes by priority
    │   ├── safety_guard   limits, hysteresis, command gate, SAFETY_BLOCK
    │   ├── watchdog       heartbeat + dispatch lease renewals, through the device link
    │   └── schedule       the stored local schedule, slot by slot, through the dispatcher
    ├── status             /healthz and /status on STATUS_BIND (127.0.0.1 by default)
    └── sighup             re-reads LOG_LEVEL and credentials on SIGHUP (when signals are ours)

Why one_for_one at the top: the local control loop never waits on the cloud. A crash in the
uplink, the recorder or telemetry restarts only that child; the device sites keep polling,
guarding and feeding the watchdog. Expected faults (device timeouts, a dead link) are states
inside the actors and never reach the supervisor, so a 3-day outage consumes no intensity.

State that must outlive a restart lives here, outside the actor instances: the spool object
(its rows are on disk; the spool actor re-opens it), the snapshot ring, the critical-event
outbox, each site's context (latest snapshot, safety state, active forced command), and the
schedule book (its plans are in ``schedules.sqlite`` beside the spool; read once at start).
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import structlog
import trio

from actors import (
    Backoff,
    ChildSpec,
    DropOldestRing,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEvent,
)
from bessai.clock import WallClock, system_wall_clock
from bessai.control import CommandRouter, EventOutbox, Site, SiteConfig, build_site
from bessai.control.controllers import ControllerConfig  # schedules (issue 15)
from bessai.control.gate import CommandPolicy
from bessai.control.schedule import ScheduleLimits  # schedules (issue 15)
from bessai.control.schedule_intake import ScheduleIntake  # schedules (issue 15)
from bessai.control.schedule_store import (  # schedules (issue 15)
    ScheduleBook,
    ScheduleStore,
    schedule_path_for,
)
from bessai.device import UniversalDriver, load_profile
from bessai.errors import ConfigError
from bessai.model import Event, Snapshot
from bessai.observe import StatusServer, TelemetryActor, TelemetryConfig, health_from_status
from bessai.observe.logs import get_log_level, set_log_level
from bessai.settings import DeviceSpec, Settings, read_log_level
from bessai.uplink.credentials import Endpoint, credentials_for, make_client
from bessai.uplink.message import record_from_event
from bessai.uplink.publisher import Publisher
from bessai.uplink.recorder import Recorder
from bessai.uplink.spool import Spool
from bessai.uplink.uplink import Uplink

log = structlog.get_logger("bessai.gateway")

StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]

DRAIN_CHECK_S = 0.3
"""At shutdown the uplink stops once nothing is left to publish on two checks this far apart
(longer than the spool's group commit), or when its grace (SHUTDOWN_DEADLINE_S / 2) ends."""

TELEMETRY_FLUSH_MAX_S = 5.0
"""The longest the last OTel flush may take at shutdown (less when SHUTDOWN_DEADLINE_S is short)."""

SNAPSHOT_RING_CAPACITY = 10_000
"""Snapshots waiting for the recorder. The recorder only waits on local disk, so the ring fills
only if the disk stalls; then the oldest readings are dropped and counted, the poll never waits."""


GATEWAY_INTENSITY = 10
GATEWAY_PERIOD_S = 60.0
GATEWAY_BACKOFF = Backoff(initial_s=0.1, max_s=3.0, multiplier=2.0, jitter=0.2, reset_after_s=60.0)
"""Restart policy of the top supervisor. Only bugs reach it (expected faults are states inside
the actors). The backoff cap must stay well below ``GATEWAY_PERIOD_S / GATEWAY_INTENSITY``-ish
spacing: with a 30 s cap a crash-looping child would restart every 30 s forever and never
escalate; with 3 s it escalates within about half a minute, the process exits 1, and systemd or
Docker restarts it clean — what an operator expects from a crash loop."""


@attrs.define(eq=False)
class _HttpActor:
    """Runs an actor that needs an httpx client, and closes the client when the actor ends.

    Graceful stop: without ``drained`` it ends at once; with it (the uplink) it keeps running
    until ``drained()`` has held twice in a row `DRAIN_CHECK_S` apart (so a group the recorder
    is committing right now is not missed), within the supervisor's grace, then it is cancelled.
    """

    endpoint: Endpoint
    transport: httpx.AsyncBaseTransport | None
    build: Callable[[httpx.AsyncClient], Any]
    timeout_s: float = 30.0
    drained: Callable[[], bool] | None = None
    current: Any = None
    _stop: trio.Event = attrs.field(factory=trio.Event, init=False)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with make_client(self.endpoint, timeout_s=self.timeout_s,
                               transport=self.transport) as client:
            self.current = self.build(client)
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_current, nursery.cancel_scope)
                task_status.started()
                nursery.start_soon(self._stop_when_drained, nursery.cancel_scope)

    async def _run_current(self, scope: trio.CancelScope,
                           task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.current.run(task_status=task_status)
        scope.cancel()  # it ended by itself: so does this actor (the supervisor decides)

    async def _stop_when_drained(self, scope: trio.CancelScope) -> None:
        await self._stop.wait()
        streak = 0
        while self.drained is not None and streak < 2:
            streak = streak + 1 if self.drained() else 0
            await trio.sleep(DRAIN_CHECK_S)
        scope.cancel()


@attrs.define(eq=False)
class _SighupReloader:
    """On SIGHUP: re-read LOG_LEVEL from the environment file and drop cached credentials (a
    rotated key file is then read on the next publish). Needs the main thread's signals."""

    env_file: str | None
    on_reload: Callable[[], None]

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                level = get_log_level()
                try:
                    level = read_log_level(None, self.env_file or "config/.env")
                except ConfigError as error:  # a bad value, or a file no longer UTF-8
                    # A typo in the file must not crash this child: while it restarted, no
                    # handler would be installed and the next SIGHUP would kill the process.
                    # Keep the current level; still drop cached credentials.
                    log.error("LOG_LEVEL_RELOAD_FAILED", error=str(error), kept=level)
                else:
                    set_log_level(level)
                self.on_reload()
                log.warning("CONFIG_RELOADED", log_level=level, service_account="re-read")


@attrs.define(eq=False)
class _ReadyFlag:
    """Passes ``started()`` on and remembers that it was called."""

    task_status: Any
    called: bool = False

    def started(self, value: Any = None) -> None:
        self.called = True
        self.task_status.started(value)


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

    telemetry: TelemetryActor = attrs.field(init=False)
    spool: Spool = attrs.field(init=False)
    snapshots: DropOldestRing[Snapshot] = attrs.field(init=False)
    events: EventOutbox = attrs.field(init=False)
    sites: dict[str, Site] = attrs.field(init=False, factory=dict)
    router: CommandRouter = attrs.field(init=False)
    schedule_book: ScheduleBook = attrs.field(init=False)  # schedules (issue 15)
    schedule_intake: ScheduleIntake = attrs.field(init=False)
    supervisor: Supervisor = attrs.field(init=False)
    endpoint: Endpoint | None = attrs.field(init=False, default=None)
    uplink_actor: _HttpActor | None = attrs.field(init=False, default=None)
    commands_actor: _HttpActor | None = attrs.field(init=False, default=None)
    status_actor: StatusServer | None = attrs.field(init=False, default=None)
    supervisor_done: trio.Event = attrs.field(init=False, factory=trio.Event)
    """Set when the tree has ended, whether by a stop request or an escalation."""
    _site_supervisors: dict[str, Supervisor] = attrs.field(init=False, factory=dict)
    _credentials: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        s = self.settings
        # Telemetry stops last and its flush is shielded: give it at most half the shutdown
        # deadline (the uplink's drain has the other half), so a hung collector cannot hold
        # the process past SHUTDOWN_DEADLINE_S.
        config = self.telemetry_config or TelemetryConfig(
            endpoint=s.otel_exporter_otlp_endpoint, site_id=s.site_id, host_name=_host_name(),
            shutdown_deadline_s=min(TELEMETRY_FLUSH_MAX_S, s.shutdown_deadline_s / 2))
        self.telemetry = TelemetryActor(config)
        sink = self.telemetry.sink
        self.spool = Spool(Path(s.spool_path), max_bytes=s.spool_max_bytes,
                           wall_clock=self.wall_clock, sink=sink)
        self.snapshots = DropOldestRing(SNAPSHOT_RING_CAPACITY)
        self.events = EventOutbox()
        self.schedule_book = _load_schedules(ScheduleStore(schedule_path_for(s.spool_path)))
        for device in s.devices:
            self.sites[device.id] = self._build_site(device)
        self.router = CommandRouter(s.site_id, {d: site.gate for d, site in self.sites.items()},
                                    emit=self.events.emit, wall_clock=self.wall_clock,
                                    metrics=self.telemetry.sink)
        # -- schedules (issue 15): checked against each device's writable power limits --
        self.schedule_intake = ScheduleIntake(
            s.site_id, {d: ScheduleLimits(site.config.dispatch.charge_power_max_w,
                                          site.config.dispatch.discharge_power_max_w,
                                          s.command_min_power_w)
                        for d, site in self.sites.items()},
            ScheduleStore(schedule_path_for(s.spool_path)), self.schedule_book,
            emit=self.events.emit, wall_clock=self.wall_clock, metrics=self.telemetry.sink)
        if s.uplink_mode != "off":
            self.endpoint = (Endpoint.for_emulator(s.pubsub_emulator_host)
                             if s.uplink_mode == "emulator" else Endpoint())
            self._credentials = credentials_for(self.endpoint, s.google_application_credentials)
        self.supervisor = Supervisor(children=self._child_specs(), strategy=Strategy.ONE_FOR_ONE,
                                     intensity=GATEWAY_INTENSITY, period_s=GATEWAY_PERIOD_S,
                                     backoff=GATEWAY_BACKOFF, name="gateway",
                                     on_event=self._on_event, rng=self.rng)

    # ---- wiring ---------------------------------------------------------------------------

    def _build_site(self, device: DeviceSpec) -> Site:
        s = self.settings
        profile = load_profile(device.profile)
        config = SiteConfig.from_profile(
            profile, site_id=s.site_id, device_id=device.id,
            limits={"soc_min_pct": s.soc_min_pct, "soc_max_pct": s.soc_max_pct,
                    "soc_hysteresis_pct": s.soc_hysteresis_pct, "temp_max_c": s.temp_max_c,
                    "temp_hysteresis_c": s.temp_hysteresis_c},
            fast_interval_s=s.poll_interval_s, slow_interval_s=s.slow_poll_interval_s,
            command_policy=CommandPolicy.from_settings(s))
        stream_factory = self.stream_factories.get(device.id)

        def driver() -> UniversalDriver:
            return UniversalDriver(profile, host=device.host, port=device.port,
                                   unit_id=device.unit_id, stream_factory=stream_factory,
                                   site_id=s.site_id, device_id=device.id,
                                   wall_clock=self.wall_clock, rng=self.rng)

        return build_site(config, driver, wall_clock=self.wall_clock, events=self.events,
                          metrics=self.telemetry.sink, tracer=self.telemetry.tracer,
                          outputs=[self._push_snapshot],
                          schedules=self.schedule_book,  # schedules (issue 15)
                          control=ControllerConfig.from_settings(s))

    def _push_snapshot(self, snapshot: Snapshot) -> None:
        """Into the recorder's ring; a reading the full ring pushed out is counted as a drop."""
        before = self.snapshots.dropped
        self.snapshots.push(snapshot)
        if self.snapshots.dropped != before:
            self.telemetry.sink.count("bessai.spool.drops", self.snapshots.dropped - before,
                                      reason="ring_full")

    def _child_specs(self) -> list[ChildSpec]:
        s = self.settings
        specs = [
            ChildSpec("telemetry", lambda: self.telemetry, grace_s=s.shutdown_deadline_s),
            # The same Spool object on every start: its state is the file; run() re-opens it.
            ChildSpec("spool", lambda: self.spool, grace_s=5.0),
            ChildSpec("recorder", self._recorder, grace_s=2.0),
            ChildSpec.from_function("events", self.events.forward, self._record_event),
        ]
        if self.endpoint is not None and s.pubsub_topic:
            specs.append(ChildSpec("uplink", self._uplink, grace_s=s.shutdown_deadline_s / 2))
        if self.endpoint is not None and s.pubsub_commands_subscription:
            specs.append(ChildSpec("commands", self._commands, grace_s=1.0))
        for device_id in self.sites:
            specs.append(ChildSpec(f"site_{device_id}", self._site_factory(device_id),
                                   grace_s=math.inf))
        if self.status_server:
            specs.append(ChildSpec("status", self._status, grace_s=0.0))
        if self.handle_sighup:
            specs.append(ChildSpec("sighup", self._sighup, grace_s=0.0))
        return specs

    def _recorder(self) -> Recorder:
        return Recorder(self.spool, snapshots=self.snapshots, sink=self.telemetry.sink)

    async def _record_event(self, event: Event) -> None:
        """Deliver one critical event: returns once it is on disk (then the outbox forgets it).

        An event whose body JSON cannot carry (NaN, an object) is recorded with those values
        as text rather than raised: raising would crash the ``events`` child on the same event
        forever, and every critical event queued behind it would never reach the spool.
        """
        try:
            record = record_from_event(event)
        except (TypeError, ValueError) as error:
            log.error("EVENT_BODY_NOT_JSON", name=event.name, device=event.device_id,
                      error=str(error), hint="recorded with the offending values as text; "
                      "report this as a bug")
            record = record_from_event(attrs.evolve(event, body=_json_safe(event.body)))
        await self.spool.append(record)

    def _uplink(self) -> _HttpActor:
        s = self.settings
        assert self.endpoint is not None

        def build(client: httpx.AsyncClient) -> Uplink:
            publisher = Publisher(client, s.gcp_project_id or "", s.pubsub_topic or "",
                                  endpoint=self.endpoint, credentials=self._credentials,
                                  wall_clock=self.wall_clock)
            return Uplink(self.spool, publisher, sink=self.telemetry.sink,
                          tracer=self.telemetry.tracer, rng=self.rng)

        self.uplink_actor = _HttpActor(self.endpoint, self.http_transport, build,
                                       drained=self._nothing_to_publish)
        return self.uplink_actor

    def _nothing_to_publish(self) -> bool:
        """True when every reading and event produced so far has left the spool for Pub/Sub."""
        return (len(self.snapshots) == 0 and not self.events.pending
                and self.spool.stats().depth == 0)

    def _commands(self) -> _HttpActor:
        from bessai.uplink.pull import CommandSource

        s = self.settings
        assert self.endpoint is not None

        def build(client: httpx.AsyncClient) -> CommandSource:
            return CommandSource(client, s.gcp_project_id or "",
                                 s.pubsub_commands_subscription or "",
                                 # schedules (issue 15): "type": "schedule" to the intake
                                 self.schedule_intake.route(self.router.handle_command_message),
                                 endpoint=self.endpoint,
                                 credentials=self._credentials, rng=self.rng,
                                 wall_clock=self.wall_clock, sink=self.telemetry.sink)

        self.commands_actor = _HttpActor(self.endpoint, self.http_transport, build)
        return self.commands_actor

    def _site_factory(self, device_id: str) -> Callable[[], Supervisor]:
        def start() -> Supervisor:
            sup = self.sites[device_id].supervisor(on_event=self._on_event)
            self._site_supervisors[device_id] = sup
            return sup

        return start

    def _status(self) -> StatusServer:
        bind = self.settings.status_bind
        self.status_actor = StatusServer(self.status, self.health, host=bind.host,
                                         port=bind.port)
        return self.status_actor

    def _sighup(self) -> _SighupReloader:
        def reload() -> None:
            invalidate = getattr(self._credentials, "invalidate", None)
            if invalidate is not None:
                invalidate()

        return _SighupReloader(self.env_file, reload)

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
        ready = _ReadyFlag(task_status)
        try:
            await self.supervisor.run(task_status=ready)
        finally:
            self.supervisor_done.set()
        if not ready.called:
            # Stopped before every child was ready (a stop request during start-up, e.g. while
            # a child's first start kept failing): an ordinary end, not "exited without
            # calling started()".
            task_status.started()

    def request_stop(self) -> None:
        """Graceful stop: children stop in reverse order, each within its grace."""
        self.supervisor.request_stop()

    # ---- introspection --------------------------------------------------------------------

    def health(self) -> tuple[bool, list[str]]:
        """Healthy when the tree runs and every device link is up (the cloud may be down)."""
        return health_from_status(self.status())

    def status(self) -> dict[str, Any]:
        """The status document behind ``/status`` and the terminal screen."""
        actors: dict[str, Any] = {}
        for info in self.supervisor.which_children():
            actors[info.id] = _child_view(info)
        for device_id, sup in self._site_supervisors.items():
            for info in sup.which_children():
                actors[f"site_{device_id}/{info.id}"] = _child_view(info)
        links: dict[str, Any] = {}
        sites: dict[str, Any] = {}
        for device_id, site in self.sites.items():
            view = site.status()
            latest = site.ctx.latest()
            view["values"] = None if latest is None else latest.values()
            sites[device_id] = view
            links[f"device:{device_id}"] = view["link"]
        uplink = self.uplink_actor.current if self.uplink_actor else None
        if uplink is not None:
            links["cloud"] = _link_view(uplink.link, published=uplink.published)
        commands = self.commands_actor.current if self.commands_actor else None
        if commands is not None:
            links["commands"] = _link_view(commands.link, handled=commands.handled)
        spool = self.spool.stats().to_json()
        return {
            "site": self.settings.site_id,
            "tree_running": self.supervisor.running,
            "actors": actors,
            "links": links,
            "sites": sites,
            "spool": spool,
            "snapshots_dropped": self.snapshots.dropped,
            "telemetry": self.telemetry.status(),
            "uplink_mode": self.settings.uplink_mode,
        }


def _load_schedules(store: ScheduleStore) -> ScheduleBook:
    """The stored schedules (issue 15). A file that cannot be read is a state, not a crash: the
    gateway starts without schedules (the sites still poll and guard) and says so."""
    try:
        return ScheduleBook(store.load_all())
    except Exception as exc:  # sqlite3.Error, OSError: a damaged or unreadable file
        log.error("SCHEDULE_STORE_FAILED", path=str(store.path), error=str(exc),
                  consequence="starting without schedules; send them again")
        return ScheduleBook()


def _child_view(info: Any) -> dict[str, Any]:
    failure = info.last_failure
    return {"state": info.state.value if hasattr(info.state, "value") else str(info.state),
            "restart": info.restart.value if isinstance(info.restart, Restart) else info.restart,
            "restarts": info.restarts,
            "last_failure": None if failure is None else failure.exception_repr}


def _link_view(link: Any, **extra: Any) -> dict[str, Any]:
    now = trio.current_time()
    return {"state": str(link.state.value), "reason": link.reason,
            "down_for_s": None if link.down_since is None else round(now - link.down_since, 3),
            **extra}


def _json_safe(value: Any) -> Any:
    """``value`` with everything strict JSON cannot hold (NaN, infinities, objects) as text."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)


def _host_name() -> str:
    import socket

    return socket.gethostname()
