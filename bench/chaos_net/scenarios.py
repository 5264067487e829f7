"""The chaos-net scenarios: what is cut, when, for how long — and what must hold.

Each scenario runs three real processes, each in its own network namespace of one `Lane`: the
simulator (``python -m bessai.sim``: the inverter, Modbus TCP), Google's Pub/Sub emulator (the
cloud; one per lane, a fresh topic per scenario) and ``bessai-run`` (the gateway), on the real
clock. The harness (root namespace) cuts links with the kernel (`Lane.cut`), reads /status over
a management link that is never cut, and measures from the outside:

* **produced / delivered / dup / on disk / lost** — `bench.chaos.accounting` (the spool's seqs
  against the topic pulled back over the management link);
* **largest heartbeat gap while the inverter link is up** — from the simulator's own log (one
  DEBUG line per heartbeat write, stamped by the simulator); a gap that spans an inverter cut is
  the cut, not a late heartbeat, and is reported apart;
* **safety reaction** — inverter cuts with a command active: how long the device stayed forced
  after the last write it heard (its lease, 60 s for Huawei, must end it; the simulator logs
  FORCED_MODE_END / COMM_LOSS);
* **link down reported / resumed** — DEVICE_LINK_DOWN in the gateway's log after the cut, and the
  first heartbeat the device sees after the link is back;
* **drain** — cloud restored → the spool's oldest pending row younger than 3 polls (/status);
* **peak RSS** of the gateway process (psutil), and whether /status always answered (no hang).

Every wait is for an event, with a generous deadline; the run stops by itself. The verdicts are
`bench.chaos_net.judge`'s.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import psutil

from bench.chaos.accounting import account_spool
from bench.chaos.rig import PROJECT, Result
from bench.chaos_net.judge import (
    LINK_BACKOFF_CAP_S,
    POLL_INTERVAL_S,
    STATUS_TIMEOUT_S,
    NetFigures,
    judge,
    sim_events,
)
from bench.chaos_net.netns import Lane
from bessai.device import load_profile
from bessai.settings import DEFAULT_PROFILE
from bessai.sim.pubsub_emulator import EmulatorAdmin, PubSubEmulator
from tests.e2e.procs import ROOT, Proc, base_env, run_cli

SIM_PORT = 5020
STATUS_PORT = 8080
EMULATOR_PORT = 8085
EVENT_DEADLINE_S = 120.0
DRAIN_DEADLINE_S = 900.0


@attrs.frozen
class Cut:
    link: str  # "cloud" | "inv"
    how: str  # "down" | "blackhole"
    at_s: float  # after the cut phase starts
    for_s: float

    def label(self) -> str:
        what = {"cloud": "cloud", "inv": "inverter"}[self.link]
        how = {"down": "down", "blackhole": "black-holed"}[self.how]
        return f"{what} {how} {_dur(self.for_s)}"


@attrs.frozen
class NetScenario:
    name: str
    what: str
    cuts: tuple[Cut, ...] = ()
    command: bool = False
    """A discharge command is put on the device (and seen forced) before the cuts."""
    cpu_load_s: float = 0.0
    """Both cores kept busy by a load generator for this long (no cut)."""
    ci: bool = False

    def scaled(self, scale: float) -> NetScenario:
        """Every duration times ``scale`` (for trying the harness out quickly)."""
        if scale == 1:
            return self
        return attrs.evolve(
            self, cuts=tuple(attrs.evolve(c, at_s=c.at_s * scale, for_s=c.for_s * scale)
                             for c in self.cuts),
            cpu_load_s=self.cpu_load_s * scale)

    @property
    def span_s(self) -> float:
        return max([c.at_s + c.for_s for c in self.cuts] + [self.cpu_load_s, 0.0])


def _dur(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


SCENARIOS: list[NetScenario] = [
    NetScenario("net-cloud-down-5min", "cloud link down (interface down) for 5 minutes",
                (Cut("cloud", "down", 0, 300),)),
    NetScenario("net-cloud-blackhole-5min", "cloud link black-holed for 5 minutes",
                (Cut("cloud", "blackhole", 0, 300),)),
    NetScenario("net-cloud-down-30min", "cloud link down (interface down) for 30 minutes",
                (Cut("cloud", "down", 0, 1800),)),
    NetScenario("net-cloud-blackhole-30min", "cloud link black-holed for 30 minutes",
                (Cut("cloud", "blackhole", 0, 1800),)),
    NetScenario("net-inverter-blackhole-30s", "inverter link black-holed for 30 s while a "
                "discharge command is active", (Cut("inv", "blackhole", 0, 30),), command=True),
    NetScenario("net-inverter-blackhole-3min", "inverter link black-holed for 3 minutes while "
                "a discharge command is active", (Cut("inv", "blackhole", 0, 180),),
                command=True),
    NetScenario("net-both-blackhole", "cloud link black-holed for 5 minutes and, 1 minute into "
                "it, the inverter link for 3 minutes, a discharge command active",
                (Cut("cloud", "blackhole", 0, 300), Cut("inv", "blackhole", 60, 180)),
                command=True),
    NetScenario("net-cpu-starved-5min", "both cores busy with a load generator for 5 minutes, "
                "polling at 1 Hz", cpu_load_s=300),
    # the CI share (tests/chaos_net): a minute of black-holed cloud, 20 s of black-holed inverter
    NetScenario("net-ci-cloud-blackhole-60s", "cloud link black-holed for 60 s (CI)",
                (Cut("cloud", "blackhole", 0, 60),), ci=True),
    NetScenario("net-ci-inverter-blackhole-20s", "inverter link black-holed for 20 s while a "
                "discharge command is active (CI)", (Cut("inv", "blackhole", 0, 20),),
                command=True, ci=True),
]


def get(name: str) -> NetScenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no scenario {name!r}; known: {', '.join(s.name for s in SCENARIOS)}")


# ---- results ------------------------------------------------------------------------------


@attrs.define
class NetResult:
    scenario: NetScenario
    result: Result
    figures: NetFigures


# ---- the run --------------------------------------------------------------------------------


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@attrs.define(eq=False)
class _Monitor:
    """Samples the gateway once a second: /status (latency, spool), RSS, peaks."""

    status_url: str
    pid: int
    result: Result
    figures: NetFigures
    status: dict[str, Any] | None = None
    peak_rss: int = 0
    peak_rows: int = 0
    peak_bytes: int = 0
    rss_at_cut: int = 0
    _last: float = 0.0

    def tick(self) -> None:
        started = time.monotonic()  # wall-clock: a real-clock harness
        try:
            answer = httpx.get(self.status_url, timeout=STATUS_TIMEOUT_S)
            self.status = answer.json() if answer.status_code == 200 else None
            if self.status is None:
                self.figures.status_failures += 1
        except (httpx.HTTPError, ValueError):
            self.status = None
            self.figures.status_failures += 1
        took = time.monotonic() - started  # wall-clock
        self.figures.status_worst_s = max(self.figures.status_worst_s, round(took, 3))
        try:
            self.peak_rss = max(self.peak_rss, psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            pass
        spool = (self.status or {}).get("spool") or {}
        self.peak_rows = max(self.peak_rows, int(spool.get("depth") or 0))
        self.peak_bytes = max(self.peak_bytes, int(spool.get("bytes") or 0))
        self._last = time.monotonic()  # wall-clock

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds  # wall-clock
        while (left := end - time.monotonic()) > 0:  # wall-clock
            time.sleep(min(1.0, left))
            self.tick()

    def wait_for(self, condition: Callable[[], bool], what: str,
                 deadline_s: float = EVENT_DEADLINE_S) -> float | None:
        """Seconds until ``condition`` held (None: not within the deadline, noted)."""
        started = time.monotonic()  # wall-clock
        while True:
            if condition():
                return time.monotonic() - started  # wall-clock
            if time.monotonic() - started > deadline_s:  # wall-clock
                self.result.notes.append(f"no {what} within {deadline_s:.0f} s")
                return None
            time.sleep(0.5)
            self.tick()

    def spool_young(self) -> bool:
        if self.status is None:
            return False
        spool = self.status.get("spool") or {}
        age = spool.get("oldest_pending_age_s")
        return spool.get("depth") == 0 or (age is not None and age <= 3 * POLL_INTERVAL_S)

    def link_state(self, name: str) -> str | None:
        if self.status is None:
            return None
        return ((self.status.get("links") or {}).get(name) or {}).get("state")


def _busy_loop() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def run_net_scenario(scenario: NetScenario, lane: Lane, emulator: PubSubEmulator,
                     workdir: Path, seed: int) -> NetResult:
    """Run one scenario in ``lane`` (its processes are ended whatever happens)."""
    rng = random.Random(f"{seed}:{scenario.name}")
    r = Result(scenario.name, seed, poll_interval_s=POLL_INTERVAL_S)
    fig = NetFigures(cut=" + ".join(c.label() for c in scenario.cuts)
                     or f"CPU load {_dur(scenario.cpu_load_s)}")
    real_start = time.monotonic()  # wall-clock
    tag = f"{rng.getrandbits(32):08x}"
    topic, commands = f"net-{tag}", f"net-cmd-{tag}"
    admin = EmulatorAdmin(f"http://{emulator.host}", PROJECT)
    admin.create_topic(topic)
    admin.create_subscription(f"{topic}-sub", topic)
    admin.create_topic(commands)
    admin.create_subscription(f"{commands}-sub", commands)
    run_dir = workdir / scenario.name
    run_dir.mkdir(parents=True, exist_ok=True)
    spool = run_dir / "spool.sqlite"
    env_file = run_dir / "empty.env"
    env_file.write_text("")
    profile = load_profile(ROOT / DEFAULT_PROFILE)
    timeout_s = float(profile.connection.timeout_s)
    hb_interval_s = float(profile.watchdog.interval_s)
    lease_s = float(profile.dispatch.lease.period_s)
    settings = {
        "SITE_ID": "chaos-net-site", "INVERTER_IP": lane.inverter_ip,
        "INVERTER_PORT": str(SIM_PORT), "GCP_PROJECT_ID": PROJECT, "PUBSUB_TOPIC": topic,
        "PUBSUB_EMULATOR_HOST": f"{lane.cloud_ip}:{EMULATOR_PORT}",
        "PUBSUB_COMMANDS_SUBSCRIPTION": f"{commands}-sub", "PUBSUB_COMMANDS_TOPIC": commands,
        "SPOOL_PATH": str(spool), "STATUS_BIND": f"{lane.gw_status_ip}:{STATUS_PORT}",
        "POLL_INTERVAL_S": f"{POLL_INTERVAL_S:g}", "SHUTDOWN_DEADLINE_S": "10",
        "LOG_LEVEL": "INFO",
    }
    backstop_s = scenario.span_s + DRAIN_DEADLINE_S + 4 * EVENT_DEADLINE_S + 120
    procs: list[Proc] = []
    load: list[subprocess.Popen[bytes]] = []
    windows: list[tuple[float, float]] = []  # inverter cuts: (cut at, restored at), wall time
    cloud_restored_at: float | None = None
    cloud_windows: list[tuple[float, float]] = []
    forced_at: float | None = None
    try:
        sim = Proc.start("bessai-sim", "bessai.sim",
                         ["--host", lane.inverter_ip, "--port", str(SIM_PORT), "--seed",
                          str(seed), "--log-level", "DEBUG"], base_env({}),
                         prefix=lane.exec_prefix("inv"))
        procs.append(sim)
        sim.wait_for(r"event=SIM_LISTENING", 30)
        gw = Proc.start("bessai-run", "bessai.cli.run",
                        ["--no-screen", "--env-file", str(env_file), "--duration",
                         f"{backstop_s:.0f}"], base_env(settings),
                        prefix=lane.exec_prefix("gw"))
        procs.append(gw)
        mon = _Monitor(f"http://{lane.gw_status_ip}:{STATUS_PORT}/status", gw.popen.pid, r, fig)
        # up: device polled, cloud link up, first rows delivered, the device heard a heartbeat
        mon.wait_for(lambda: (mon.link_state("device:inv1") == "up"
                              and mon.link_state("cloud") == "up" and mon.spool_young()
                              and bool(sim.matching(r"event=heartbeat"))),
                     "gateway up (device polled, cloud up, heartbeat seen)", 90)
        mon.sleep(10)
        fig.status_failures = 0  # start-up probes before /status listened do not count
        if scenario.command:
            mark = sim.mark()
            done = run_cli(["command", "discharge", "--power-w", "1000", "--ttl-s", "3600",
                            "--env-file", str(env_file)],
                           dict(settings, PUBSUB_EMULATOR_HOST=emulator.host))
            if done.returncode != 0:
                r.notes.append(f"bessai command failed: {(done.stderr or done.stdout)[-300:]}")
            waited = mon.wait_for(lambda: bool(sim.matching(
                r"event=client_write .*tag=forcible_mode value=2\b", after=mark)),
                "forced discharge on the device")
            r.check("command forced on the device before the cut", waited is not None)
            forced_at = time.time()  # wall-clock: compared with the simulator's log stamps
            mon.sleep(5)
        mon.tick()
        mon.rss_at_cut = mon.peak_rss
        # ---- the cuts (and the load generator) --------------------------------------------
        t0 = time.monotonic()  # wall-clock
        steps: list[tuple[float, int, Cut]] = []
        for c in scenario.cuts:
            steps += [(c.at_s, 0, c), (c.at_s + c.for_s, 1, c)]
        steps.sort(key=lambda s: (s[0], s[1]))
        cut_wall: dict[Cut, float] = {}
        if scenario.cpu_load_s:
            load = [_busy_loop() for _ in range(os.cpu_count() or 2)]
            mon.sleep(scenario.cpu_load_s)
            fig.load_avg = load_average()
            for p in load:
                p.kill()
                p.wait(timeout=10)
            load = []
        for at_s, restore, c in steps:
            mon.sleep(max(0.0, t0 + at_s - time.monotonic()))  # wall-clock
            if restore:
                lane.restore(c.link)
                if c.link == "inv":
                    windows.append((cut_wall[c], time.time()))  # wall-clock
                else:
                    cloud_restored_at = time.time()  # wall-clock
                    cloud_windows.append((cut_wall[c], cloud_restored_at))
            else:
                lane.cut(c.link, c.how)
                cut_wall[c] = time.time()  # wall-clock
                if c is steps[0][2]:
                    fig.load_avg = load_average()
        # ---- recovery ---------------------------------------------------------------------
        for c in scenario.cuts:
            if c.link == "inv":
                restored = windows[-1][1]
                mon.wait_for(lambda restored=restored: any(
                    e.event == "heartbeat" and e.at > restored
                    for e in sim_events(sim.matching(r"event=heartbeat"))),
                    "heartbeat after the inverter link came back",
                    LINK_BACKOFF_CAP_S + 2 * EVENT_DEADLINE_S)
        if cloud_restored_at is not None:
            waited = mon.wait_for(mon.spool_young, "drain after the cloud link came back",
                                  DRAIN_DEADLINE_S)
            r.drain_s = None if waited is None else round(
                time.time() - cloud_restored_at, 1)  # wall-clock
            # commands: does the commands pull come back with the link? (stop is harmless:
            # the forcing of a command scenario has lapsed by now)
            mark = gw.mark()
            sent = time.monotonic()  # wall-clock
            done = run_cli(["command", "stop", "--ttl-s", "600", "--env-file", str(env_file)],
                           dict(settings, PUBSUB_EMULATOR_HOST=emulator.host))
            if done.returncode != 0:
                r.notes.append(f"bessai command failed: {(done.stderr or done.stdout)[-300:]}")
            waited = mon.wait_for(lambda: bool(gw.matching(r"event=COMMAND_(ACCEPTED|REJECTED)",
                                                           after=mark)),
                                  "command handled after the cloud link came back",
                                  DRAIN_DEADLINE_S)
            fig.commands_resumed_s = None if waited is None else round(
                time.monotonic() - sent, 1)  # wall-clock
        mon.sleep(10)
        # ---- stop -------------------------------------------------------------------------
        gw.send(signal.SIGTERM)
        try:
            rc = gw.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        r.check("bessai-run stopped on SIGTERM (exit 0)", rc == 0, f"exit {rc}")
        sim.send(signal.SIGTERM)
        sim.wait(30)
    finally:
        for p in load:
            p.kill()
        lane.restore_all()
        for proc in reversed(procs):
            proc.kill()
            (run_dir / f"{proc.name}.log").write_text(proc.output() + "\n")
    received = admin.pull_all(f"{topic}-sub")
    ledger = account_spool(r, received, spool)
    r.peak_spool_rows, r.peak_spool_bytes = mon.peak_rows, mon.peak_bytes
    r.peak_rss_mb = round(mon.peak_rss / 2**20, 1)
    r.rss_growth_mb = round(max(0, mon.peak_rss - mon.rss_at_cut) / 2**20, 1)
    r.real_s = r.virtual_s = round(time.monotonic() - real_start, 1)  # wall-clock
    judge(scenario, r, fig, ledger, sim, gw, windows, cloud_windows, forced_at, timeout_s,
          hb_interval_s, lease_s, received)
    return NetResult(scenario, r, fig)
