"""The chaos rig: the whole gateway, the in-process simulator and Google's Pub/Sub emulator, in
virtual time, with faults injected at the seams and figures measured from the outside.

What runs is what ships: `bessai.gateway.Gateway` with every actor, fed by a
`bessai.sim.Simulator` through its in-memory ``stream_factory`` and publishing to the real
emulator through `tests.pubsub_faults.FaultyTransport` (the uplink engineer's fault transport:
cuts, status storms) wrapped in `ChaosTransport` below. Nothing inside the gateway is patched:
crashes are injected by wrapping child factories (`crash_child`), device faults through the
simulator's `Faults`.

Virtual time: a `trio.testing.MockClock` with ``autojump_threshold=0``; real I/O freezes the
clock while it is in flight (the fault transport freezes it around every request to the
emulator, `FreezingLimiter` around every SQLite thread call of the spool), so three days of
outage pass in minutes, a real socket never races a virtual deadline, and a run is repeatable
from its seed (jitter, the simulator's curves and the fault script all come from it).

Figures (per scenario): messages produced, spooled, delivered (unique ``msg_id``), duplicated,
dropped with gap records, left on disk at stop, lost; the largest heartbeat gap as the device
saw it (the simulator's write log); restarts by actor (supervisor introspection); drain time
after recovery; peak spool size; peak process memory (RSS, psutil).
"""

from __future__ import annotations

import base64
import json
import math
import random
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import psutil
import trio

from actors import ChildSpec
from bessai.clock import WallClock, trio_wall_clock
from bessai.control.site import Site
from bessai.gateway import Gateway
from bessai.settings import BindAddress, DeviceSpec, Settings
from bessai.sim import Simulator
from bessai.sim.pubsub_emulator import EmulatorAdmin, free_port
from tests.pubsub_faults import FaultyTransport, FreezingLimiter, frozen_virtual_time

PROJECT = "bessai-chaos"
SITE = "chaos-site"
DEVICE = "inv1"


class InjectedCrash(RuntimeError):
    """The exception a chaos scenario injects into an actor (a stand-in for a bug)."""


# ---- transport -----------------------------------------------------------------------------


@attrs.define
class ChaosTransport(httpx.AsyncBaseTransport):
    """The gateway's ``http_transport``: `FaultyTransport` plus what a whole gateway needs.

    * The commands actor long-polls (``returnImmediately: false``); the emulator would hold such
      a request for real seconds while virtual time is frozen. Here the pull goes to the
      emulator with ``returnImmediately: true`` and an empty answer is held ``hold_s`` of
      *virtual* time — the service's long-poll hold, on the test's clock.
    * One transport serves both the uplink and the commands client; a client closing when its
      actor restarts must not close it under the other, so `aclose` is a no-op here and the
      rig closes the inner transport at the end.
    """

    faults: FaultyTransport
    hold_s: float = 5.0
    pulls: int = 0
    publishes: int = 0
    publishes_at_recovery: int = 0
    on_publish: Callable[[int, str], None] | None = None
    """Called with the publish's number and ``"sending"`` (before it goes out) or
    ``"answered"`` (Pub/Sub took it; the caller has not seen the answer yet)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(":publish"):
            self.publishes += 1
            if self.on_publish is not None:
                # before the batch goes out: a crash fired here lands while it is in flight
                self.on_publish(self.publishes, "sending")
                await trio.lowlevel.checkpoint()
            response = await self.faults.handle_async_request(request)
            if self.on_publish is not None:
                # after Pub/Sub took the batch, before the caller sees the answer: a crash
                # fired here lands while the batch is published but not yet acknowledged
                self.on_publish(self.publishes, "answered")
                await trio.lowlevel.checkpoint()
            return response
        if request.url.path.endswith(":pull"):
            body = json.loads(request.content or b"{}")
            if not body.get("returnImmediately"):
                body["returnImmediately"] = True
                headers = {k: v for k, v in request.headers.items()
                           if k.lower() != "content-length"}
                request = httpx.Request(request.method, request.url, headers=headers,
                                        content=json.dumps(body).encode(),
                                        extensions=request.extensions)
                response = await self.faults.handle_async_request(request)
                self.pulls += 1
                if response.status_code == 200 and not json.loads(
                        response.content or b"{}").get("receivedMessages"):
                    await trio.sleep(self.hold_s)
                return response
        return await self.faults.handle_async_request(request)

    async def aclose(self) -> None:
        """Shared by two clients: closed by the rig, not by whichever client closes first."""


# ---- crash injection -----------------------------------------------------------------------


@attrs.define(eq=False)
class _CrashAfter:
    """Runs the real actor and raises `InjectedCrash` from its task after ``after_s``."""

    inner: Any
    after_s: float | trio.Event
    crashed_at: list[float]

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            value = await nursery.start(self.inner.run)
            task_status.started(value)
            if isinstance(self.after_s, trio.Event):
                await self.after_s.wait()
            else:
                await trio.sleep(self.after_s)
            self.crashed_at.append(trio.current_time())
            raise InjectedCrash(f"injected crash of {type(self.inner).__name__}")

    def request_stop(self) -> None:
        stop = getattr(self.inner, "request_stop", None)
        if stop is not None:
            stop()


def _crash_once(spec: ChildSpec, after_s: float | trio.Event,
                crashed_at: list[float], times: int = 1) -> ChildSpec:
    def factory() -> Any:
        inner = spec.factory()
        if len(crashed_at) >= times:  # the instances after the last crash run unharmed
            return inner
        return _CrashAfter(inner, after_s, crashed_at)

    return attrs.evolve(spec, factory=factory)


@attrs.define(eq=False)
class _CrashingSite(Site):
    """A `Site` whose child ``target`` crashes once (its factories are otherwise the real ones)."""

    target: str = ""
    after_s: float | trio.Event = 0.0
    crashed_at: list[float] = attrs.field(factory=list)
    times: int = 1

    def child_specs(self) -> list[ChildSpec]:
        return [_crash_once(s, self.after_s, self.crashed_at, self.times)
                if s.id == self.target else s
                for s in super().child_specs()]


def crash_child(gw: Gateway, path: str, after_s: float | trio.Event,
                times: int = 1) -> list[float]:
    """Make the actor at ``path`` (``data/uplink``, ``site_inv1/watchdog``...) raise once,
    ``after_s`` after it started (or when the event is set). Call before `Gateway.run`. Returns
    the list the crash time is put in. ``times``: that many successive instances crash the same
    way."""
    crashed_at: list[float] = []
    if path.startswith("data/"):  # a child of the data branch: each rebuild reads the specs
        child = path.removeprefix("data/")
        if all(s.id != child for s in gw.data_children):
            raise ValueError(f"no child {child!r} in the data branch; it has "
                             f"{[s.id for s in gw.data_children]}")
        gw.data_children = tuple(_crash_once(s, after_s, crashed_at, times) if s.id == child
                                 else s for s in gw.data_children)
        return crashed_at
    if "/" in path:
        site_id, child = path.split("/", 1)
        device = site_id.removeprefix("site_")
        site = gw.sites[device]
        fields = {a.name: getattr(site, a.name) for a in attrs.fields(Site) if a.init}
        crashing = _CrashingSite(**fields, target=child, after_s=after_s,
                                 crashed_at=crashed_at, times=times)
        gw.sites[device] = crashing
        # the gateway nests each site by its supervisor_spec, built with the tree: rebuild it
        gw.supervisor = attrs.evolve(gw.supervisor, children=tuple(
            crashing.supervisor_spec(on_event=gw._on_event) if s.id == site_id else s
            for s in gw.supervisor.children))
        return crashed_at
    specs = tuple(_crash_once(s, after_s, crashed_at, times) if s.id == path else s
                  for s in gw.supervisor.children)
    if all(s.id != path for s in specs):
        raise ValueError(f"no child {path!r}; the gateway has {[s.id for s in specs]}")
    gw.supervisor = attrs.evolve(gw.supervisor, children=specs)
    return crashed_at


# ---- results -------------------------------------------------------------------------------


@attrs.define
class Check:
    name: str
    ok: bool
    detail: str = ""


@attrs.define
class Result:
    """One scenario's figures and verdict."""

    name: str
    seed: int
    virtual_s: float = 0.0
    real_s: float = 0.0
    poll_interval_s: float = 1.0
    produced: int = 0
    spooled: int = 0
    delivered: int = 0
    duplicates: int = 0
    dropped: int = 0
    gap_records: int = 0
    pending_at_stop: int = 0
    lost: int = 0
    unspooled: int = 0
    max_heartbeat_gap_s: float | None = None
    """None where it is not measured (the real-process scenario)."""
    comm_loss: bool = False
    safety_latency_s: float | None = None
    restarts: dict[str, int] = attrs.field(factory=dict)
    drain_s: float | None = None
    peak_spool_rows: int = 0
    peak_spool_bytes: int = 0
    peak_rss_mb: float = 0.0
    rss_growth_mb: float = 0.0
    """Peak RSS minus RSS when the scenario started (the process runs every scenario in turn)."""
    checks: list[Check] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in self.failures())
        verdict = "PASS" if self.passed else f"FAIL ({failed})"
        return (f"chaos {self.name} seed={self.seed}: {verdict} — produced={self.produced} "
                f"delivered={self.delivered} dup={self.duplicates} dropped={self.dropped} "
                f"lost={self.lost} hb_gap={self.max_heartbeat_gap_s}s "
                f"restarts={ {k: v for k, v in self.restarts.items() if v} } "
                f"drain={'-' if self.drain_s is None else f'{self.drain_s}s'} "
                f"peak_rss={self.peak_rss_mb}MiB real={self.real_s}s")


# ---- the rig -------------------------------------------------------------------------------


@attrs.define(eq=False)
class Rig:
    """One gateway + simulator + emulator topic, ready for a scenario's fault script."""

    name: str
    seed: int
    workdir: Path
    emulator_host: str
    poll_interval_s: float = 1.0
    spool_max_bytes: int | None = None
    sim_soc_pct: float = 50.0
    settings_overrides: dict[str, Any] = attrs.field(factory=dict)
    crash: tuple[str, float | None] | None = None
    """(actor path, seconds after its start, None: random from the seed): raises once."""
    crash_times: int = 1
    wall_offset: float = 1_767_225_600.0
    """Trio time 0 as wall time (`trio_wall_clock`'s epoch): event ts - offset = Trio time."""
    rng: random.Random = attrs.field(init=False)
    wall: WallClock = attrs.field(init=False)
    sim: Simulator = attrs.field(init=False)
    gw: Gateway = attrs.field(init=False)
    faults: FaultyTransport = attrs.field(init=False)
    transport: ChaosTransport = attrs.field(init=False)
    admin: EmulatorAdmin = attrs.field(init=False)
    topic: str = attrs.field(init=False)
    commands_topic: str = attrs.field(init=False)
    result: Result = attrs.field(init=False)
    recovered_at: float | None = None
    crashed_at: list[float] = attrs.field(factory=list)
    soc_crossed_at: float = 0.0
    hb_allowance_s: float = 0.0
    slow_phases: list[tuple[float, float, float]] = attrs.field(factory=list)
    storm_count: int = 0
    command_id: str = ""
    dup_mismatch: int = 0
    events_delivered: int = 0
    """Critical events delivered or still on disk at stop (they are never dropped)."""
    crash_trigger: trio.Event = attrs.field(factory=trio.Event)
    status_port: int = attrs.field(factory=free_port)
    """The status endpoint runs (so its actor is in the tree), on a free port."""
    cut_window: tuple[float, float] = (0.0, 0.0)
    delivered_events: list[dict[str, Any]] = attrs.field(factory=list)
    telemetry_ts: list[float] = attrs.field(factory=list)
    kinds: Counter[str] = attrs.field(factory=Counter)
    drained_at: float | None = None
    _peak_rows: int = 0
    _peak_bytes: int = 0
    _peak_rss: int = 0
    _start_rss: int = attrs.field(factory=lambda: psutil.Process().memory_info().rss)
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        # the fault script's own stream: seed and scenario name, so that scenarios sharing a
        # seed still differ (the gateway's jitter takes the bare seed)
        self.rng = random.Random(f"{self.seed}:{self.name}")
        self.result = Result(self.name, self.seed, poll_interval_s=self.poll_interval_s)
        tag = uuid.UUID(int=self.rng.getrandbits(128)).hex[:8]
        self.topic = f"chaos-{tag}"
        self.commands_topic = f"chaos-cmd-{tag}"
        self.admin = EmulatorAdmin(f"http://{self.emulator_host}", PROJECT)

    @property
    def site(self) -> Site:
        return self.gw.sites[DEVICE]

    @property
    def ctx(self) -> Any:
        return self.site.ctx

    def settings(self) -> Settings:
        fields: dict[str, Any] = {
            "site_id": SITE,
            "devices": (DeviceSpec(DEVICE, "127.0.0.1", 502, 1),),
            "poll_interval_s": self.poll_interval_s,
            "gcp_project_id": PROJECT,
            "pubsub_topic": self.topic,
            "pubsub_commands_subscription": f"{self.commands_topic}-sub",
            "pubsub_commands_topic": self.commands_topic,
            "pubsub_emulator_host": self.emulator_host,
            "spool_path": self.workdir / f"{self.name}-{self.seed}.sqlite",
            "shutdown_deadline_s": 10.0,
            "status_bind": BindAddress("127.0.0.1", self.status_port),
            # The rig's wall clock follows virtual time from a fixed 2026 epoch while the
            # emulator stamps publishTime with the real clock: their difference is not a skew
            # of the gateway's clock (tests/integration/test_trust_emulator.py tests that).
            "clock_skew_max_s": math.inf,
        }
        if self.spool_max_bytes is not None:
            fields["spool_max_bytes"] = self.spool_max_bytes
        fields.update(self.settings_overrides)
        return Settings(**fields)

    async def _emulator(self, fn: Callable[..., Any], *args: Any) -> Any:
        with frozen_virtual_time():
            return await trio.to_thread.run_sync(fn, *args)

    def build(self) -> None:
        """Build (not start) the simulator and the gateway; wrap seams before `start`."""
        self.wall = trio_wall_clock(self.wall_offset)
        self.sim = Simulator(soc_pct=self.sim_soc_pct, seed=self.seed)
        self.sim.inverter.write_log_max = 10**7
        self.faults = FaultyTransport(httpx.AsyncHTTPTransport())
        self.transport = ChaosTransport(self.faults)
        self.gw = Gateway(self.settings(), wall_clock=self.wall,
                          stream_factories={DEVICE: self.sim.stream_factory()},
                          http_transport=self.transport, rng=random.Random(self.seed),
                          status_server=True, env_file=None)
        self.gw.spool.limiter = FreezingLimiter()
        if self.gw.command_trust.replay is not None:  # its SQLite thread takes no virtual time
            self.gw.command_trust.replay.limiter = FreezingLimiter()
        self.gw.schedule_intake.limiter = FreezingLimiter()  # its SQLite writes, as the spool's
        if self.crash is not None:
            path, after_s = self.crash
            if after_s is None:  # a random point, from the seed
                after_s = round(self.rng.uniform(10.0, 60.0), 2)
            if math.isinf(after_s):  # when the script calls fire_crash()
                self.crashed_at = crash_child(self.gw, path, self.crash_trigger)
                return
            self.result.notes.append(f"crash injected {after_s:g} s after {path} started"
                                     + (f", {self.crash_times} times" if self.crash_times > 1
                                        else ""))
            self.crashed_at = crash_child(self.gw, path, after_s, self.crash_times)

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self._emulator(self.admin.create_topic, self.topic)
        await self._emulator(self.admin.create_subscription, f"{self.topic}-sub", self.topic)
        await self._emulator(self.admin.create_topic, self.commands_topic)
        await self._emulator(self.admin.create_subscription, f"{self.commands_topic}-sub",
                             self.commands_topic)
        await nursery.start(self.sim.run)
        await nursery.start(self.gw.run)
        nursery.start_soon(self._monitor)

    # ---- fault helpers for scripts ----------------------------------------------------------

    def cut_cloud(self, duration_s: float) -> tuple[float, float]:
        now = trio.current_time()
        self.faults.cut(now, now + duration_s)
        return now, now + duration_s

    def fire_crash(self) -> None:
        """Crash the actor named in ``crash=(path, math.inf)`` now."""
        self.crash_trigger.set()

    def mark_recovered(self, at: float | None = None) -> None:
        self.recovered_at = trio.current_time() if at is None else at
        self.drained_at = None

    async def publish_command(self, action: str, power_w: float, ttl_s: float = 3600.0) -> str:
        from bessai.uplink.credentials import Endpoint
        from bessai.uplink.pull import publish_command

        now = self.wall()
        command = {"id": f"cmd-{self.rng.getrandbits(32):08x}", "site_id": SITE,
                   "device_id": DEVICE, "action": action, "power_w": power_w,
                   "issued_at": now, "expires_at": now + ttl_s}
        # the operator's own client: closing it must not close the gateway's shared transport
        async with httpx.AsyncClient() as client:
            with frozen_virtual_time():
                await publish_command(client, PROJECT, self.commands_topic, command,
                                      endpoint=Endpoint.for_emulator(self.emulator_host),
                                      wall_clock=self.wall)
        return command["id"]

    async def publish_raw(self, data: bytes, attributes: dict[str, str] | None = None) -> None:
        """Publish any bytes as a command message (a hostile or broken sender's message)."""
        from bessai.uplink.credentials import Endpoint
        from bessai.uplink.publisher import publish_json

        message = {"data": base64.b64encode(data).decode(),
                   "attributes": attributes or {"kind": "command"}}
        async with httpx.AsyncClient() as client:
            with frozen_virtual_time():
                await publish_json(client, Endpoint.for_emulator(self.emulator_host),
                                   f"projects/{PROJECT}/topics/{self.commands_topic}", [message],
                                   timeout_s=120.0)

    # ---- measuring --------------------------------------------------------------------------

    async def _monitor(self) -> None:
        proc = psutil.Process()
        sample_s = max(1.0, self.poll_interval_s)
        while True:
            stats = self.gw.spool.stats()
            self._peak_rows = max(self._peak_rows, stats.depth)
            self._peak_bytes = max(self._peak_bytes, stats.bytes)
            self._peak_rss = max(self._peak_rss, proc.memory_info().rss)
            age = stats.oldest_pending_age_s
            young = stats.depth == 0 or (age is not None and age <= 3 * sample_s)
            if self.recovered_at is not None and self.drained_at is None and young:
                self.drained_at = trio.current_time()
            await trio.sleep(sample_s)

    async def wait_drained(self, timeout_s: float = 6 * 3600) -> None:
        """Until the backlog from before `mark_recovered` is gone (oldest pending row young)."""
        if self.recovered_at is None:
            self.mark_recovered()
        with trio.move_on_after(timeout_s):
            while self.drained_at is None:
                await trio.sleep(1)

    def heartbeat_times(self) -> list[float]:
        tag = self.sim.profile.watchdog.heartbeat_tag
        return [w.at for w in self.sim.write_log if w.tag == tag]

    def restarts(self) -> dict[str, int]:
        return {name: view["restarts"] for name, view in self.gw.status()["actors"].items()}

    async def stop_and_measure(self, virtual_start: float, real_start: float) -> Result:
        r = self.result
        r.restarts = self.restarts()
        r.drain_s = (None if self.drained_at is None or self.recovered_at is None
                     else round(self.drained_at - self.recovered_at, 1))
        beats = self.heartbeat_times()
        start = self.sim.inverter.start_time
        gaps = [b - a for a, b in zip([start, *beats], beats, strict=False)]
        gaps.append(trio.current_time() - (beats[-1] if beats else start))
        r.max_heartbeat_gap_s = round(max(gaps), 3)
        r.comm_loss = (r.max_heartbeat_gap_s >= self.sim.profile.watchdog.device_timeout_s
                       or self.sim.inverter.comm_lost)
        self.gw.request_stop()
        with trio.move_on_after(60):
            await self.gw.supervisor_done.wait()
        r.virtual_s = round(trio.current_time() - virtual_start, 1)
        received = await self._emulator(self.admin.pull_all, f"{self.topic}-sub")
        await self.faults.inner.aclose()
        r.real_s = round(time.monotonic() - real_start, 1)  # wall-clock: the bench's figure
        self._account(received)
        r.peak_spool_rows = self._peak_rows
        r.peak_spool_bytes = self._peak_bytes
        r.peak_rss_mb = round(self._peak_rss / 2**20, 1)
        r.rss_growth_mb = round(max(0, self._peak_rss - self._start_rss) / 2**20, 1)
        return r

    def _account(self, received: list[dict[str, Any]]) -> None:
        """Every accepted seq is delivered, dropped with a gap record, or still on disk."""
        r = self.result
        by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in received:
            by_id[m["attributes"]["msg_id"]].append(m)
        r.delivered = len(by_id)
        r.duplicates = len(received) - len(by_id)
        self.dup_mismatch = sum(1 for copies in by_id.values() for c in copies[1:]
                                if c["data"] != copies[0]["data"]
                                or c["attributes"] != copies[0]["attributes"])
        seqs: dict[str, set[int]] = defaultdict(set)
        kinds: Counter[str] = Counter()
        for copies in by_id.values():
            a = copies[0]["attributes"]
            seqs[a["device_id"]].add(int(a["seq"]))
            kinds[a["kind"]] += 1
            if a["kind"] == "gap":
                gap = json.loads(copies[0]["data"])["dropped"]
                r.dropped += gap["count"]
                r.gap_records += 1
                seqs[a["device_id"]].update(range(gap["first_seq"], gap["last_seq"] + 1))
            elif a["kind"] in ("event", "command_result"):
                self.delivered_events.append(json.loads(copies[0]["data"]))
            elif a["kind"] == "telemetry" and a["device_id"] == DEVICE:
                self.telemetry_ts.append(json.loads(copies[0]["data"])["ts"])
        pending_kinds: Counter[str] = Counter()
        self.events_delivered = kinds["event"] + kinds["command_result"]
        conn = sqlite3.connect(self.gw.spool.path)
        try:
            for device, seq, kind, data in conn.execute(
                    "SELECT device_id, seq, kind, data FROM outbox"):
                r.pending_at_stop += 1
                pending_kinds[kind] += 1
                seqs[device].add(seq)
                if kind == "gap":
                    gap = json.loads(data)["dropped"]
                    r.dropped += gap["count"]
                    seqs[device].update(range(gap["first_seq"], gap["last_seq"] + 1))
            last = dict(conn.execute("SELECT device_id, last_seq FROM seqs").fetchall())
        finally:
            conn.close()
        self.events_delivered += pending_kinds["event"] + pending_kinds["command_result"]
        r.spooled = sum(last.values())
        r.lost = sum(len(set(range(1, n + 1)) - seqs[d]) for d, n in last.items())
        gap_rows = kinds["gap"] + pending_kinds["gap"]
        r.produced = self.gw.snapshots.pushed + self.gw.events.emitted
        r.unspooled = r.produced - (r.spooled - gap_rows - r.dropped) - r.dropped
        self.kinds = kinds

    # ---- standard checks --------------------------------------------------------------------

    def standard_checks(self, *, hb_limit_s: float | None = None,
                        expected_restarts: dict[str, int] | None = None,
                        expect_drops: bool = False, drain_within_s: float | None = None,
                        max_duplicates: int = 0) -> None:
        r = self.result
        wd = self.site.config.heartbeat
        limit = hb_limit_s if hb_limit_s is not None else wd.interval_s + request_timeout_s(self)
        r.check("zero loss", r.lost == 0, f"{r.lost} accepted rows neither delivered, "
                                          "gap-recorded nor on disk")
        r.check("nothing lost before the spool", r.unspooled == 0 and
                self.gw.snapshots.dropped == 0 and not self.gw.events.pending,
                f"unspooled={r.unspooled} ring_dropped={self.gw.snapshots.dropped} "
                f"events_pending={len(self.gw.events.pending)}")
        r.check("every critical event delivered", self.events_delivered == self.gw.events.emitted,
                f"{self.events_delivered} of {self.gw.events.emitted} events emitted")
        if not expect_drops:
            r.check("no drops", r.dropped == 0, f"{r.dropped} rows dropped")
        r.check("duplicates are identical re-sends", self.dup_mismatch == 0,
                f"{self.dup_mismatch} copies differ from the first under the same msg_id")
        r.check("duplicates bounded", r.duplicates <= max_duplicates,
                f"{r.duplicates} duplicates > {max_duplicates}")
        r.check("heartbeat gap", r.max_heartbeat_gap_s is not None
                and r.max_heartbeat_gap_s <= limit,
                f"{r.max_heartbeat_gap_s} s > {limit:.1f} s")
        r.check("no comm loss", not r.comm_loss, "the device entered comm loss")
        expected = expected_restarts or {}
        unexpected = {k: v for k, v in r.restarts.items() if v != expected.get(k, 0)}
        r.check("restarts as expected", not unexpected,
                f"got {unexpected}, expected {expected or 'none'}")
        if self.recovered_at is not None:
            r.check("drained after recovery", r.drain_s is not None,
                    "backlog not drained before the end")
            if drain_within_s is not None and r.drain_s is not None:
                r.check("drain time", r.drain_s <= drain_within_s,
                        f"{r.drain_s} s > {drain_within_s} s")


def request_timeout_s(rig: Rig) -> float:
    """One Modbus request timeout of the device's profile (Huawei: 10 s)."""
    from bessai.device import load_profile

    return float(load_profile(rig.settings().devices[0].profile).connection.timeout_s)


Script = Callable[[Rig], Awaitable[None]]


async def run_rig(rig: Rig, script: Script, checks: Callable[[Rig], None]) -> Result:
    """Start everything, play ``script``, stop, account, check. Call inside a Trio run whose
    clock is a MockClock(autojump_threshold=0)."""
    real_start = time.monotonic()  # wall-clock: how long the run took, for the table
    virtual_start = trio.current_time()
    rig.build()
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await script(rig)
        result = await rig.stop_and_measure(virtual_start, real_start)
        nursery.cancel_scope.cancel()
    checks(rig)
    if not math.isfinite(result.virtual_s):
        result.check("finite run", False)
    return result
