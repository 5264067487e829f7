"""Several units on one connection vs one connection each; RTU wire time at 9600 baud.

Part 1 — throughput. Peer: ``bessai-sim --units 1..N --multi-client`` in a subprocess on
loopback (its CPU is not counted; multi-client so that the baseline can open one connection
per unit). Client, in this process on Trio: N ``UniversalDriver`` s polling the Huawei fast plan
back to back (cooldown 0, no post-connect delay) for ``--seconds``:

- baseline: one ``ModbusConnection`` per unit (what the gateway did before: a connection per
  device — which a real SDongle would not even allow);
- result: ONE shared ``ModbusConnection`` for the N units (what it does now).

Measured: snapshots per second (all units together) and this process's CPU per snapshot
(``time.process_time``). Rounds alternate the cases to share the machine's noise.

Part 2 — RTU at 9600 baud, in virtual time: the client's `RtuFraming` and connection against the
simulator's RTU endpoint over an in-memory line that takes ``bytes * 11 / 9600`` s to carry each
frame (the UART), the device answering after the minimum 3.5-character silence. The planned
full snapshot's wire time is compared with the theoretical minimum
``sum(frame bytes) * 11 / baud + a 3.5-character gap between frames``; once with the Huawei
profile's ``cooldown_s`` (0.05 s between requests) and once with 0.

Run: ``/work/venv/bin/python -m bench.connection_bench [--seconds S] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import attrs
import structlog
import trio
import trio.testing

from bench._machine import machine_description, publish_table, utc_now
from bessai.clock import trio_wall_clock
from bessai.device import ModbusConnection, UniversalDriver, load_profile, tcp_stream_factory
from bessai.device.framing import RtuFraming, frame_gap_s
from bessai.device.planner import plan

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "connection.md"
PROFILE = load_profile(ROOT / "profiles" / "huawei_sun2000.json")
BAUD = 9600


def sim_port(units: int) -> tuple[subprocess.Popen[str], int]:
    """bessai-sim on a free port (it logs SIM_LISTENING at INFO: read it, then quiet)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bessai.sim", "--port", "0", "--multi-client",
         "--units", ",".join(str(u) for u in range(1, units + 1))],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "SIM_LISTENING" in line:
            port = int(line.split("port=")[1].split()[0])
            break
    else:
        raise RuntimeError("bessai-sim did not start")
    # Keep draining its log so the pipe never blocks it.
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, port


async def throughput(port: int, units: int, shared: bool, seconds: float) -> tuple[float, float]:
    """(snapshots per second, CPU ms per snapshot) over ``seconds``."""
    def connection() -> ModbusConnection:
        return ModbusConnection(tcp_stream_factory("127.0.0.1", port), peer="bench",
                                timeout_s=10, post_connect_delay_s=0, cooldown_s=0)

    one = connection()
    drivers = [UniversalDriver(PROFILE, unit_id=u, connection=one if shared else connection(),
                               device_id=f"inv{u}", wall_clock=trio_wall_clock())
               for u in range(1, units + 1)]
    for driver in drivers:
        await driver.read_all("fast")  # connect and warm up
    count = 0

    async def poll(driver: UniversalDriver, until: float) -> None:
        nonlocal count
        while time.perf_counter() < until:
            snapshot = await driver.read_all("fast")
            assert snapshot.readings["soc"].valid
            count += 1

    w0, c0 = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for driver in drivers:
            nursery.start_soon(poll, driver, w0 + seconds)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    for c in {id(d.connection): d.connection for d in drivers}.values():
        await c.aclose()
    return count / wall, cpu / count * 1e3


@attrs.define(eq=False)
class PacedStream(trio.abc.Stream):
    """One end of an in-memory line that takes ``len * 11 / baud`` s to send each chunk, after
    ``turnaround_s`` (the device side: the spec's 3.5-character silence before its reply)."""

    inner: trio.abc.Stream
    baud: int
    turnaround_s: float = 0.0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep(self.turnaround_s + len(data) * 11 / self.baud)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def rtu_snapshot(cooldown_s: float) -> tuple[float, float, int, int]:
    """(measured s, theoretical minimum s, frames, bytes) of one planned full snapshot."""
    from bessai.sim import Simulator

    async with Simulator(PROFILE, framer="rtu") as sim:
        async def connect() -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            device_side = PacedStream(server, BAUD, turnaround_s=frame_gap_s(BAUD))
            sim._nursery.start_soon(sim.endpoint.serve_stream, device_side)
            return PacedStream(client, BAUD)

        connection = ModbusConnection(connect, peer="rtu", framing=RtuFraming(BAUD),
                                      timeout_s=10, post_connect_delay_s=0,
                                      cooldown_s=cooldown_s)
        driver = UniversalDriver(PROFILE, connection=connection, wall_clock=trio_wall_clock())
        await driver.read_all()  # connect, warm up
        await trio.sleep(1)
        sent, received = connection.stats.bytes_sent, connection.stats.bytes_received
        t0 = trio.current_time()
        snapshot = await driver.read_all()
        measured = trio.current_time() - t0
        assert snapshot.readings["soc"].valid
        wire_bytes = (connection.stats.bytes_sent - sent) + (connection.stats.bytes_received
                                                             - received)
        frames = 2 * len(plan(PROFILE))
        # the first request goes out on a line quiet for long: a gap between frames, not before
        minimum = wire_bytes * 11 / BAUD + (frames - 1) * frame_gap_s(BAUD)
        await connection.aclose()
    return measured, minimum, frames, wire_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per case and round (4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, cases alternating (2)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    rows = []
    for units in (1, 2, 8):
        proc, port = sim_port(units)
        try:
            results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(args.rounds):
                for shared in (False, True):
                    results[shared].append(trio.run(throughput, port, units, shared,
                                                    args.seconds))
        finally:
            proc.kill()
            proc.wait(timeout=10)
        rows.append((units, results))

    rtu = [(cooldown, *trio.run(rtu_snapshot, cooldown,
                                clock=trio.testing.MockClock(autojump_threshold=0)))
           for cooldown in (PROFILE.connection.cooldown_s, 0.0)]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    lines = [
        "# Device connections: units sharing one connection vs one connection each; RTU wire "
        "time",
        "",
        f"Date: {utc_now()}. Machine: {machine_description()}; load average before the run "
        f"{os.getloadavg()[0]:.2f} (shared with other jobs: expect noise).",
        f"Python {platform.python_version()}; peer: bessai-sim --units 1..N --multi-client "
        "(subprocess, loopback); client: UniversalDriver(s) on Trio polling the Huawei fast "
        f"plan ({len(plan(PROFILE, poll='fast'))} requests) back to back, cooldown 0; "
        f"{args.rounds} rounds x {args.seconds:g} s per case, mean.",
        "",
        "| units | metric | baseline: a connection per unit | result: one shared connection "
        "| ratio |",
        "|---:|---|---:|---:|---:|",
    ]
    for units, results in rows:
        for index, label in ((0, "snapshots / s (all units)"), (1, "CPU ms / snapshot")):
            base = mean([r[index] for r in results[False]])
            res = mean([r[index] for r in results[True]])
            lines.append(f"| {units} | {label} | {base:.1f} | {res:.1f} | {res / base:.3f} |")
    lines += [
        "",
        f"RTU at {BAUD} baud (virtual time, a line that carries 11 bits per byte, a device that "
        "answers after the minimum 3.5-character silence): one planned full snapshot "
        f"({len(plan(PROFILE))} requests).",
        "",
        "| cooldown_s | frames | bytes on the wire | theoretical minimum s | planned snapshot s "
        "| ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for cooldown, measured, minimum, frames, wire_bytes in rtu:
        lines.append(f"| {cooldown:g} | {frames} | {wire_bytes} | {minimum:.3f} | "
                     f"{measured:.3f} | {measured / minimum:.3f} |")
    publish_table(RESULTS, lines, run="bench.connection_bench")


if __name__ == "__main__":
    main()
