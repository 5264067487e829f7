"""Cost of one full Huawei snapshot: the read planner vs one request per tag (the old gateway).

Peer: pymodbus 3.16's own asyncio ``ModbusTcpServer`` in a subprocess on loopback, holding the
Huawei profile's register blocks (an independent implementation; its CPU is not counted here).
Client: ``UniversalDriver`` on Trio in this process.

- baseline: one request per readable tag (``read_reading`` for each of the 30 tags);
- result: ``read_all()`` — the planner's coalesced requests.

Measured per snapshot: requests, wall time and this process's CPU time (``time.process_time``),
median over the snapshots. Snapshots are separated by a pause of at least ``cooldown_s`` that is
not counted (the gateway polls on an interval, so the first request of a snapshot never waits
for the cooldown). Two settings: the Huawei profile's ``cooldown_s`` (0.05 s, what production
uses) and 0 (the raw cost of the protocol stack on loopback).

Run: ``/work/venv/bin/python -m bench.device_bench [--snapshots N]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import attrs
import structlog
import trio

from bench._machine import machine_description, publish_table, utc_now
from bessai.device import UniversalDriver, load_profile
from bessai.device.planner import plan
from bessai.device.profile import Profile
from tests.peers.pymodbus_server import PymodbusPeer, config_from_profile

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "device.md"
PROFILE = ROOT / "profiles" / "huawei_sun2000.json"

VALUES = {"soc": 65.3, "battery_power": -1500, "battery_temp": 24.7, "grid_frequency": 50.0,
          "device_status": 0x0200, "battery_status": 2, "rated_capacity": 10000}


async def _measure(profile: Profile, port: int, cooldown_s: float, snapshots: int,
                   per_tag: bool) -> tuple[float, list[float], list[float]]:
    """Requests per snapshot, and per-snapshot wall and CPU seconds."""
    names = [n for n, t in profile.tags.items() if t.readable]
    walls: list[float] = []
    cpus: list[float] = []
    async with UniversalDriver(profile, "127.0.0.1", port, post_connect_delay_s=0,
                               cooldown_s=cooldown_s, timeout_s=10) as driver:
        await driver.read_all()  # connect and warm up
        before = driver.client.stats.requests
        for _ in range(snapshots):
            await trio.sleep(cooldown_s)  # the poll interval, not counted
            w0, c0 = time.perf_counter(), time.process_time()
            if per_tag:
                readings = {name: await driver.read_reading(name) for name in names}
            else:
                readings = (await driver.read_all()).readings
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            assert len(readings) == len(names)
            assert readings["soc"].value == 65.3
        requests = (driver.client.stats.requests - before) / snapshots
    return requests, walls, cpus


def _summary(samples: list[tuple[float, list[float], list[float]]]) -> dict[str, float]:
    return {"requests": statistics.mean(s[0] for s in samples),
            "wall_ms": statistics.median(w for s in samples for w in s[1]) * 1e3,
            "cpu_ms": statistics.median(c for s in samples for c in s[2]) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=40,
                        help="snapshots per case and round with cooldown 0 (a fifth with it)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; the cases alternate within each round to share the noise")
    args = parser.parse_args()

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings+
    profile = load_profile(PROFILE)
    # What-if: the same blocks with max_gap=32 (reads span storage unit 1's 23 reserved/version
    # registers 37023-37045 instead of making a second request).
    wide = attrs.evolve(profile, connection=attrs.evolve(profile.connection, max_gap=32))
    planned = plan(profile)
    readable = sum(1 for t in profile.tags.values() if t.readable)
    from tests.unit.test_device_planner import _optimum  # brute-force set cover

    optimum = _optimum(profile, [n for n, t in profile.tags.items() if t.readable])
    rows = []
    with PymodbusPeer(config_from_profile(profile, VALUES)) as peer:
        for cooldown_s, n in ((profile.connection.cooldown_s, max(2, args.snapshots // 5)),
                              (0.0, args.snapshots)):
            samples: dict[str, list] = {"base": [], "res": [], "alt": []}
            for _ in range(args.rounds):
                for key, prof, per_tag in (("base", profile, True), ("res", profile, False),
                                           ("alt", wide, False)):
                    samples[key].append(trio.run(_measure, prof, peer.port, cooldown_s, n,
                                                 per_tag))
            rows.append((cooldown_s, n * args.rounds, _summary(samples["base"]),
                         _summary(samples["res"]), _summary(samples["alt"])))

    c = profile.connection
    lines = [
        "# Device I/O: full Huawei snapshot, read planner vs one request per tag",
        "",
        f"Date: {utc_now()}. Machine: {machine_description()} "
        "(shared with other jobs: expect noise).",
        f"Python {platform.python_version()}; peer: pymodbus ModbusTcpServer (asyncio, "
        "subprocess, loopback); client: UniversalDriver on Trio. Median per snapshot.",
        f"Profile limits: max_registers_per_read={c.max_registers_per_read}, "
        f"max_gap={c.max_gap}. {readable} readable tags; planner: {len(planned)} requests; "
        f"brute-force optimum: {optimum} requests. What-if column: same blocks, max_gap=32 "
        f"({len(plan(wide))} requests).",
        "",
        "| cooldown_s | snapshots | metric | baseline: one request per tag | planner "
        "(read_all) | ratio | what-if max_gap=32 | ratio |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for cooldown_s, n, base, res, alt in rows:
        for key, label in (("requests", "requests / snapshot"), ("wall_ms", "wall ms / snapshot"),
                           ("cpu_ms", "CPU ms / snapshot")):
            lines.append(f"| {cooldown_s:g} | {n} | {label} | {base[key]:.2f} | {res[key]:.2f} "
                         f"| {res[key] / base[key]:.3f} | {alt[key]:.2f} "
                         f"| {alt[key] / base[key]:.3f} |")
    publish_table(RESULTS, lines, run="bench.device_bench")


if __name__ == "__main__":
    main()
