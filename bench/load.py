"""Load: one gateway process (``bessai-run``, real clock) polling 1-100 simulated inverters at 1 Hz.

Setup per size N (1, 10, 50, 100 by default):

- peers: ``bench.sim_farm`` — ONE separate process serving N independent simulated SUN2000 +
  LUNA2000 devices on N loopback Modbus TCP ports (its CPU is not counted);
- uplink: Google's Pub/Sub emulator (``gcloud beta emulators pubsub start``), a fresh topic and
  subscription per size;
- gateway: ``python -m bessai.cli.run --no-screen`` with ``DEVICES=inv001@127.0.0.1:P1/1,...``,
  ``POLL_INTERVAL_S=1``, ``SLOW_POLL_INTERVAL_S=30`` (the defaults), the Huawei profile as is
  (post-connect delay 1 s, cooldown 0.05 s between requests; a fast poll is 5 requests; every
  30 s the slow poll reads every tag instead, 8 requests), a spool in a temporary directory,
  LOG_LEVEL=WARNING, no OTLP endpoint.

Measured over a window of ``--window`` seconds (default 60) after every device link is up and a
warm-up (default 5 s):

- CPU % of one core: the gateway process's user+system CPU time over the window / wall time
  (psutil), plus per-second samples for the first-vs-last-10-s trend;
- RSS: sampled every second (max, and first vs last sample);
- publish lag: Pub/Sub ``publishTime`` (stamped by the emulator when it accepts the publish)
  minus the reading's ``ts`` (the gateway's wall clock when the snapshot was complete) — so it
  spans ring → recorder → spool commit → uplink → HTTP → emulator. Both clocks are this
  machine's; the emulator stamps milliseconds. Trend: readings whose ts falls in the window's
  first 10 s vs its last 10 s;
- achieved poll rate: snapshots per second per device (telemetry messages with ts in the
  window), of which fast (slow, full snapshots are told apart by a slow-only tag), and the
  largest gap between two consecutive snapshots of one device.

Baselines, measured in the same run: (1) the issue's targets (1 device ≤ 1 % of a core and
≤ 100 MB RSS; 100 devices ≤ 25 % of a core), printed with the ratio result/target; (2) an idle
Trio process that imported the gateway's modules (``bessai.gateway``, ``bessai.cli.run``) and
sleeps, sampled over the same window as each size: the floor of RSS and CPU for this code.

Run: ``/work/venv/bin/python -m bench.load [--sizes 1,10,50,100] [--window 60] [--warmup 5]``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import httpx
import psutil

from bench._machine import machine_description, utc_now, write_results
from bessai.sim.pubsub_emulator import EmulatorAdmin, PubSubEmulator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "load.md"
PYTHON = sys.executable
PROJECT = "bessai-bench"
SITE = "load-bench"
SLOW_ONLY_TAG = "rated_capacity"  # read only by the slow poll class
TARGETS_CPU = {1: 1.0, 100: 25.0}  # % of one core
TARGET_RSS_MB = {1: 100.0}
NOTES = (
    "Reading the table: the fast share is 29/30 because every 30 s the full poll (which reads "
    "the fast tags too) replaces one fast poll, so each device still gets one snapshot a "
    "second. Publish lag at 10+ devices is mostly the spool's group commit (one fsync per "
    "group, every commit_interval_s=0.1 s) plus the publish round trip; with one device each "
    "append finds the interval elapsed and commits at once.",
    "",
)
HISTORY = (
    "Fixes found by this bench (figures from earlier runs of it on 2026-11-27, same machine):",
    "",
    "- `SafetyGuard.request_stop` now cuts its wait for the next snapshot short (commit "
    "dcfa704). Before, each site waited out the guard's 0.5 s grace and the gateway stops sites "
    "one after another: 100 devices took ~50 s to stop (past SHUTDOWN_DEADLINE_S=20 s; the "
    "bench SIGKILLed it at 30-40 s). After: 0.5-2.3 s.",
    "- `Spool.lease` answers [] without a thread hop and a query when a lease already read to "
    "the end of the outbox and nothing became leasable since (commit 840e94e). The idle uplink "
    "leased 3 times per snapshot. One device: 1.07 % and 1.07 % of a core before (two 60 s "
    "runs), 0.92 % and 0.95 % after; 100 devices: 15.8-15.9 % before (30 s windows).",
)
IDLE_CODE = ("import bessai.gateway, bessai.cli.run, trio; "
             "trio.run(trio.sleep, 3600)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parse_rfc3339(text: str) -> float:
    """Epoch seconds from ``2026-01-01T00:00:00.123456789Z`` (any number of fraction digits)."""
    head, _, frac = text.rstrip("Z").partition(".")
    base = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


@attrs.define
class Proc:
    """A child process in its own group, killed (group-wide) on exit."""

    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout_s: float = 30.0) -> float:
        """SIGTERM, wait; SIGKILL the group if it does not exit. Returns seconds to exit."""
        started = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return time.monotonic() - started


def start_sim_farm(count: int, log_path: Path) -> tuple[Proc, list[int]]:
    with open(log_path, "wb") as log:
        popen = subprocess.Popen([PYTHON, "-m", "bench.sim_farm", str(count)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    proc = Proc(popen)
    assert popen.stdout is not None
    line = popen.stdout.readline().decode()
    if not line.startswith("PORTS "):
        proc.stop()
        raise RuntimeError(f"sim_farm did not report its ports (got {line!r}); see {log_path}")
    return proc, [int(p) for p in line.split()[1].split(",")]


def start_gateway(ports: list[int], emulator_host: str, topic: str, workdir: Path,
                  status_port: int, extra_env: dict[str, str]) -> Proc:
    devices = ",".join(f"inv{i + 1:03d}@127.0.0.1:{port}/1" for i, port in enumerate(ports))
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TZ") if key in os.environ}
    env.update({
        "SITE_ID": SITE, "DEVICES": devices, "GCP_PROJECT_ID": PROJECT, "PUBSUB_TOPIC": topic,
        "PUBSUB_EMULATOR_HOST": emulator_host, "SPOOL_PATH": str(workdir / "outbox.sqlite"),
        "STATUS_BIND": f"127.0.0.1:{status_port}", "LOG_LEVEL": "WARNING",
        "POLL_INTERVAL_S": "1.0", "SLOW_POLL_INTERVAL_S": "30", "SHUTDOWN_DEADLINE_S": "20",
        **extra_env,
    })
    log = open(workdir / "gateway.log", "wb")  # noqa: SIM115 - handed to the child
    popen = subprocess.Popen(
        [PYTHON, "-m", "bessai.cli.run", "--no-screen", "--env-file", str(workdir / "none.env")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return Proc(popen)


def wait_links_up(proc: Proc, status_port: int, count: int, timeout_s: float) -> float:
    """Seconds until /status shows every device link up."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.popen.returncode} at start")
        try:
            doc = httpx.get(f"http://127.0.0.1:{status_port}/status", timeout=2).json()
            links = doc.get("links", {})
            up = sum(1 for k, v in links.items() if k.startswith("device:")
                     and v.get("state") == "up")
            if up == count:
                return time.monotonic() - started
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"not every device link came up within {timeout_s:.0f} s")


@attrs.define
class Puller:
    """Drains the subscription; keeps (device, ts, publish time, fast?) per telemetry message."""

    base_url: str
    subscription: str
    client: httpx.Client = attrs.field(factory=lambda: httpx.Client(timeout=30))
    rows: list[tuple[str, float, float, bool]] = attrs.field(factory=list)

    def drain(self) -> None:
        url = f"{self.base_url}/v1/projects/{PROJECT}/subscriptions/{self.subscription}"
        while True:
            answer = self.client.post(f"{url}:pull", json={"maxMessages": 1000,
                                                            "returnImmediately": True})
            answer.raise_for_status()
            received = answer.json().get("receivedMessages", [])
            if not received:
                return
            self.client.post(f"{url}:acknowledge",
                             json={"ackIds": [m["ackId"] for m in received]}).raise_for_status()
            for item in received:
                message = item["message"]
                if message.get("attributes", {}).get("kind") != "telemetry":
                    continue
                data = json.loads(base64.b64decode(message["data"]))
                self.rows.append((data["device_id"], float(data["ts"]),
                                  _parse_rfc3339(message["publishTime"]),
                                  SLOW_ONLY_TAG not in data["values"]))


@attrs.frozen
class Sample:
    wall: float
    cpu_s: float
    rss: int


def _sample(process: psutil.Process) -> Sample:
    with process.oneshot():
        times = process.cpu_times()
        return Sample(time.time(), times.user + times.system, process.memory_info().rss)


def _cpu_pct(a: Sample, b: Sample) -> float:
    return 100.0 * (b.cpu_s - a.cpu_s) / (b.wall - a.wall)


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_size(count: int, admin: EmulatorAdmin, emulator: PubSubEmulator, window_s: float,
             warmup_s: float, extra_env: dict[str, str]) -> dict[str, Any]:
    topic, subscription = f"load-{count}-{int(time.time())}", f"load-{count}-{int(time.time())}-sub"
    admin.create_topic(topic)
    admin.create_subscription(subscription, topic)
    puller = Puller(emulator.base_url, subscription)
    with tempfile.TemporaryDirectory(prefix=f"bessai-load-{count}-") as tmp:
        workdir = Path(tmp)
        sims, ports = start_sim_farm(count, workdir / "sim_farm.log")
        idle = Proc(subprocess.Popen([PYTHON, "-c", IDLE_CODE], cwd=ROOT,
                                     start_new_session=True))
        gateway = None
        try:
            status_port = _free_port()
            gateway = start_gateway(ports, emulator.host, topic, workdir, status_port, extra_env)
            up_s = wait_links_up(gateway, status_port, count, timeout_s=60)
            time.sleep(warmup_s)
            puller.drain()
            proc, idle_proc = psutil.Process(gateway.pid), psutil.Process(idle.pid)
            samples = [_sample(proc)]
            idle_first = _sample(idle_proc)
            window_start = samples[0].wall
            while samples[-1].wall - window_start < window_s:
                time.sleep(max(0.0, window_start + len(samples) - time.time()))
                samples.append(_sample(proc))
                puller.drain()
            idle_last = _sample(idle_proc)
            window_end = samples[-1].wall
            time.sleep(2.0)  # let the last readings of the window arrive
            puller.drain()
            stop_s = gateway.stop()
            status = gateway.popen.returncode
        finally:
            if gateway is not None:
                gateway.stop()
            idle.stop()
            sims.stop()
        log_tail = (workdir / "gateway.log").read_text(errors="replace").splitlines()[-5:]

    inside = [r for r in puller.rows if window_start <= r[1] <= window_end]
    fast = [r for r in inside if r[3]]
    per_device: dict[str, list[float]] = defaultdict(list)
    for device, ts, _pub, _is_fast in inside:
        per_device[device].append(ts)
    span = window_end - window_start
    ids = [f"inv{i + 1:03d}" for i in range(count)]
    rates = [len(per_device.get(d, [])) / span for d in ids]
    fast_rates = [sum(1 for r in fast if r[0] == d) / span for d in ids]
    gaps = [b - a for tss in per_device.values()
            for a, b in itertools.pairwise(sorted(tss))]
    lags = [pub - ts for _d, ts, pub, _f in inside]
    first = [pub - ts for _d, ts, pub, _f in inside if ts < window_start + 10]
    last = [pub - ts for _d, ts, pub, _f in inside if ts > window_end - 10]
    ten = next(i for i, s in enumerate(samples) if s.wall - window_start >= 10)
    tail_from = next(i for i, s in enumerate(samples) if s.wall >= window_end - 10)
    return {
        "count": count, "links_up_s": up_s, "window_s": window_end - window_start,
        "cpu_pct": _cpu_pct(samples[0], samples[-1]),
        "cpu_first10_pct": _cpu_pct(samples[0], samples[ten]),
        "cpu_last10_pct": _cpu_pct(samples[tail_from], samples[-1]),
        "rss_max_mb": max(s.rss for s in samples) / 2**20,
        "rss_first_mb": samples[0].rss / 2**20, "rss_last_mb": samples[-1].rss / 2**20,
        "idle_cpu_pct": _cpu_pct(idle_first, idle_last), "idle_rss_mb": idle_last.rss / 2**20,
        "messages": len(inside), "fast_snapshots": len(fast),
        "rate_min": min(rates), "rate_median": statistics.median(rates),
        "fast_rate_median": statistics.median(fast_rates),
        "gap_max_s": max(gaps) if gaps else float("nan"),
        "lag_p50_ms": _q(lags, 0.5) * 1e3, "lag_p95_ms": _q(lags, 0.95) * 1e3,
        "lag_max_ms": max(lags, default=float("nan")) * 1e3,
        "first10_p50_ms": _q(first, 0.5) * 1e3, "first10_p95_ms": _q(first, 0.95) * 1e3,
        "last10_p50_ms": _q(last, 0.5) * 1e3, "last10_p95_ms": _q(last, 0.95) * 1e3,
        "stop_s": stop_s, "exit": status, "log_tail": log_tail,
    }


def _ratio(value: float, base: float | None) -> str:
    return "—" if not base else f"{value / base:.2f}"


def render(results: list[dict[str, Any]], args: argparse.Namespace, emulator_s: float,
           total_s: float) -> str:
    lines = [
        "# Load: one gateway process, N simulated inverters polled at 1 Hz",
        "",
        f"Date: {utc_now()}. Machine: {machine_description()} "
        "(shared with other jobs: expect noise).",
        f"Python {platform.python_version()}. Gateway: `python -m bessai.cli.run --no-screen` "
        "(real clock, one process) with POLL_INTERVAL_S=1, SLOW_POLL_INTERVAL_S=30, the Huawei "
        "profile unchanged (post-connect delay 1 s, cooldown 0.05 s; fast poll 5 requests, "
        "every 30 s a full poll of 8 requests instead), LOG_LEVEL=WARNING, no OTLP endpoint, "
        "uplink to Google's Pub/Sub emulator. "
        "Peers: `bench.sim_farm`, one separate process with N simulators on N loopback ports "
        "(not counted).",
        f"Window: {args.window:g} s per size after every device link was up and a "
        f"{args.warmup:g} s warm-up; CPU and RSS of the gateway process by psutil, sampled every "
        "second. Publish lag = emulator `publishTime` - reading `ts` (end of the snapshot's "
        f"reads). Emulator start-up {emulator_s:.1f} s; whole run {total_s:.0f} s.",
        "",
        "Baselines (same run): the issue's targets (ratio = result / target, ≤ 1.00 passes), "
        "and an idle Trio process that imported `bessai.gateway` and `bessai.cli.run`, sampled "
        "over the same window (ratio = gateway / idle).",
        "",
        "| devices | snapshots/s per device (min / median) | of which fast (median) "
        "| max gap s | CPU % of a core "
        "| target | ratio | idle CPU % | RSS max MB | target | ratio | idle RSS MB "
        "| gateway / idle RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu_t, rss_t = TARGETS_CPU.get(r["count"]), TARGET_RSS_MB.get(r["count"])
        lines.append(
            f"| {r['count']} | {r['rate_min']:.3f} / {r['rate_median']:.3f} "
            f"| {r['fast_rate_median']:.3f} | {r['gap_max_s']:.2f} | {r['cpu_pct']:.2f} "
            f"| {cpu_t if cpu_t else '—'} "
            f"| {_ratio(r['cpu_pct'], cpu_t)} | {r['idle_cpu_pct']:.2f} "
            f"| {r['rss_max_mb']:.1f} | {rss_t if rss_t else '—'} "
            f"| {_ratio(r['rss_max_mb'], rss_t)} | {r['idle_rss_mb']:.1f} "
            f"| {_ratio(r['rss_max_mb'], r['idle_rss_mb'])} |")
    lines += [
        "",
        "Trend (first 10 s vs last 10 s of the window) and publish lag (ms):",
        "",
        "| devices | telemetry msgs in window | CPU % first 10 s | CPU % last 10 s "
        "| RSS MB first | RSS MB last | lag p50 | lag p95 | lag max "
        "| first 10 s p50 / p95 | last 10 s p50 / p95 | links up after s | stop s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['count']} | {r['messages']} | {r['cpu_first10_pct']:.2f} "
            f"| {r['cpu_last10_pct']:.2f} | {r['rss_first_mb']:.1f} | {r['rss_last_mb']:.1f} "
            f"| {r['lag_p50_ms']:.0f} | {r['lag_p95_ms']:.0f} | {r['lag_max_ms']:.0f} "
            f"| {r['first10_p50_ms']:.0f} / {r['first10_p95_ms']:.0f} "
            f"| {r['last10_p50_ms']:.0f} / {r['last10_p95_ms']:.0f} "
            f"| {r['links_up_s']:.1f} | {r['stop_s']:.1f} |")
    lines += ["", *NOTES, *HISTORY, "", "Run: `/work/venv/bin/python -m bench.load`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50,100", help="device counts (comma-separated)")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds per size")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after links are up")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra gateway setting (repeatable), e.g. POLL_INTERVAL_S=2")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    started = time.monotonic()
    results = []
    with PubSubEmulator() as emulator:
        emulator_s = time.monotonic() - started
        admin = EmulatorAdmin(emulator.base_url, PROJECT)
        for count in (int(c) for c in args.sizes.split(",")):
            result = run_size(count, admin, emulator, args.window, args.warmup, extra_env)
            results.append(result)
            print(f"N={count}: cpu {result['cpu_pct']:.2f} % rss {result['rss_max_mb']:.1f} MB "
                  f"rate {result['rate_median']:.3f}/s lag p50 {result['lag_p50_ms']:.0f} ms "
                  f"p95 {result['lag_p95_ms']:.0f} ms exit {result['exit']}", flush=True)
            if result["exit"] != 0:
                print("  gateway log tail:\n  " + "\n  ".join(result["log_tail"]), flush=True)
    text = render(results, args, emulator_s, time.monotonic() - started)
    print(text)
    if not args.no_write:
        write_results(RESULTS, text)


if __name__ == "__main__":
    main()
