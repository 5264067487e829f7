"""How long a safety or heartbeat write waits behind telemetry reads, and the local loop's CPU.

Peer: the in-process simulator (``bessai.sim.Simulator``) through the real `UniversalDriver`,
in virtual time (Trio's MockClock), with every reply delayed by ``delay_s`` (Huawei's SDongle
answers in 0.1-1 s, sometimes more). The site runs its three children (device link, safety
guard, watchdog) for one simulated hour with a forced discharge held (lease renewals); the fast
poll reads every second, the slow poll every 30 s.

- baseline: ``write_path="queue"`` — writes wait in the link's own priority queue, drained
  between two polls (how the link worked before it used the client's priority lock);
- result: ``write_path="direct"`` — writes go through the Modbus client's priority lock, ahead
  of the next request even in the middle of a poll.

Measured: heartbeat write latency (submit → acknowledged, virtual seconds; median, p99, max),
the largest gap between two heartbeats, and this process's CPU time per simulated hour (real).

Run: ``/work/venv/bin/python -m bench.control_bench [--hours H]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import attrs
import structlog
import trio
import trio.testing

from bench._machine import machine_description, publish_table, utc_now
from bessai.clock import trio_wall_clock
from bessai.control.gate import CommandPolicy
from bessai.model import Action, Command
from bessai.observe.sink import RecordingSink
from bessai.sim import Simulator
from tests.sites import make_site, running_site

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "control.md"


@attrs.frozen
class Run:
    latencies: list[float]
    max_gap_s: float
    cpu_s: float
    comm_lost: bool


async def _run(write_path: str, delay_s: float, hours: float) -> Run:
    sim = Simulator(soc_pct=80)
    wall = trio_wall_clock()
    sink = RecordingSink()
    async with sim:
        sim.faults.delay_s = delay_s
        # one forced command held for the whole run (renewed by the watchdog): allow its TTL
        site = make_site(sim, config={
            "write_path": write_path,
            "command_policy": CommandPolicy(max_ttl_s=hours * 3600 + 600)}, metrics=sink)

        cpu0 = time.process_time()
        async with running_site(site, settle_s=5):
            now = wall()
            await site.gate.submit(Command("bench", "site1", "inv1", Action.DISCHARGE, 1000.0,
                                           now, now + hours * 3600 + 600))
            await trio.sleep(hours * 3600)
        cpu = time.process_time() - cpu0
    key = ("bessai.device.write_latency_s", (("device", "inv1"), ("priority", "heartbeat")))
    return Run(sink.samples[key], site.ctx.heartbeat.max_gap_s, cpu / hours,
               sim.state().comm_lost)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours per case")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))  # quiet

    rows = []
    for delay_s in (0.0, 0.2, 1.0):
        runs = {}
        for path in ("queue", "direct"):
            runs[path] = trio.run(_run, path, delay_s, args.hours,
                                  clock=trio.testing.MockClock(autojump_threshold=0))
        rows.append((delay_s, runs["queue"], runs["direct"]))

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.3f}" if a else "-"

    lines = [
        "# Control loop: heartbeat write latency behind telemetry reads",
        "",
        f"Date: {utc_now()}. Machine: {machine_description()} "
        "(shared with other jobs: expect CPU noise).",
        f"Simulator in process, real UniversalDriver, virtual time; {args.hours:g} simulated "
        "hour(s) per case; fast poll 1 s, slow poll 30 s, heartbeat every 10 s, forced "
        "discharge held (lease renewed every 20 s). Latencies are virtual seconds, from "
        "`DeviceLink.write()` to the device's acknowledgement; CPU is real and includes the "
        "in-process simulator's own work.",
        "Baseline: writes queued in the link between polls (`write_path=\"queue\"`). Result: "
        "writes through the client's priority lock (`write_path=\"direct\"`, the default with "
        "UniversalDriver).",
        "",
        "| reply delay s | metric | baseline: queue | result: direct | ratio |",
        "|---:|---|---:|---:|---:|",
    ]
    for delay_s, base, res in rows:
        for name, b, r in (
            ("heartbeat write latency median s", statistics.median(base.latencies),
             statistics.median(res.latencies)),
            ("heartbeat write latency p99 s", _p(base.latencies, 0.99),
             _p(res.latencies, 0.99)),
            ("heartbeat write latency max s", max(base.latencies), max(res.latencies)),
            ("largest heartbeat gap s", base.max_gap_s, res.max_gap_s),
            ("CPU s per simulated hour", base.cpu_s, res.cpu_s),
        ):
            lines.append(f"| {delay_s:g} | {name} | {b:.3f} | {r:.3f} | {ratio(b, r)} |")
        assert not base.comm_lost
        assert not res.comm_lost
    publish_table(RESULTS, lines, run="bench.control_bench")


if __name__ == "__main__":
    main()
