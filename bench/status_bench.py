"""The status endpoint under idle and slow-loris connections: does a real client still get in?

Real `StatusServer`, real sockets on 127.0.0.1, real clock. For each case, ``hostile`` clients
connect first (half send nothing, half send a partial request head and never finish it), then a
real client sends ``GET /healthz`` ``ROUNDS`` times, one after another, while they hang on. We
record each real request's latency and answer.

Baseline: the same server with no hostile connections. The last case runs today's shedding
with the budget the endpoint shipped with until issue 19 (``max_connections=32``,
``request_timeout_s=5``); the code before issue 19 (no shedding) cannot be run from here: on it,
about 33 hostile connections turned every real request into a 503 (see
tests/integration/test_status_starvation.py, which fails on that code).

Run: ``python -m bench.status_bench`` (writes bench/results/status.md).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import trio

from bench._machine import machine_description, publish_table, utc_now
from bessai.observe.status import StatusServer
from tests.status_clients import ALL_UP, get_healthz, hostile_connections

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "status.md"
ROUNDS = 50
async def case(hostile: int, **server_options: Any) -> dict[str, Any]:
    server = StatusServer(lambda: ALL_UP, port=0, **server_options)
    latencies: list[float] = []
    statuses: list[int] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run)
        streams = await hostile_connections(port, hostile)
        await trio.sleep(0.2)
        for _ in range(ROUNDS):
            started = time.perf_counter()
            with trio.fail_after(10):
                statuses.append((await get_healthz(port))[0])
            latencies.append(time.perf_counter() - started)
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    latencies.sort()
    return {"hostile": hostile, "median_ms": statistics.median(latencies) * 1000,
            "p90_ms": latencies[int(0.9 * len(latencies)) - 1] * 1000,
            "max_ms": latencies[-1] * 1000,
            "ok": sum(1 for s in statuses if s == 200), "evicted": server.evicted,
            "budget": server.max_connections}


async def run() -> list[dict[str, Any]]:
    rows = [await case(0)]
    for hostile in (100, 600):
        rows.append(await case(hostile))
    rows.append(await case(100, max_connections=32, request_timeout_s=5.0))
    return rows


def main() -> int:
    load_before = os.getloadavg()[0]
    rows = trio.run(run)
    base = rows[0]
    lines = [
        "# Status endpoint under idle and slow-loris connections",
        "",
        f"`python -m bench.status_bench` — {utc_now()}; machine: {machine_description()}; load "
        f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (shared machine). "
        f"Real StatusServer, sockets and clock; {ROUNDS} sequential real `GET /healthz` per "
        "case while the hostile connections (half idle, half a never-finished request head) "
        "hang on. Baseline: no hostile connections.",
        "",
        "| hostile connections | budget | real requests answered 200 | median | p90 | max | "
        "median ratio to baseline | shed (408) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['hostile']} | {row['budget']} | {row['ok']}/{ROUNDS} | "
            f"{row['median_ms']:.2f} ms | {row['p90_ms']:.2f} ms | {row['max_ms']:.2f} ms | "
            f"{row['median_ms'] / base['median_ms']:.2f}x | {row['evicted']} |")
    lines += [
        "",
        "Before issue 19 (budget 32, no shedding) about 33 such connections made every real "
        "request answer 503 (`tests/integration/test_status_starvation.py` fails on that code: "
        "`bessai health` exited 1, \"unhealthy\"). The last row runs today's shedding with the "
        "old 32-slot budget: the oldest hostile connection is dropped for each newcomer.",
    ]
    publish_table(RESULTS, lines)
    return 0 if all(row["ok"] == ROUNDS for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
