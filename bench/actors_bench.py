"""Benchmarks for the actors runtime, each against a bare-Trio baseline measured in the same run.

* restart latency: from a child's crash to its new instance reporting ready, with backoff 0, on
  the real Trio clock. Baseline: a hand-rolled restart loop (the crashed task tells a manager over
  a ``trio.open_memory_channel``; the manager ``nursery.start``s a new task), i.e. the least
  work any restart needs.
* cost per message through each mailbox kind (one producer, one consumer, capacity 64).
  Baseline: ``trio.open_memory_channel(64)``.

Run: ``python -m bench.actors_bench`` (writes nothing; copy the table to
bench/results/actors.md). The supervisor's crash warnings are silenced while measuring.
Wall-clock timing uses ``time.perf_counter`` on purpose: this is a measurement harness, not
scheduling code.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import statistics
import time

import trio

from actors import Backoff, ChildSpec, DropOldestRing, LatestCell, Supervisor, open_mailbox
from bench._machine import machine_description

RESTARTS = 2000
MESSAGES = 50_000
CAPACITY = 64
ROUNDS = 5


# ---------------------------------------------------------------- restart latency


class _Crasher:
    def __init__(self, lab: dict) -> None:
        self.lab = lab

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        lab = self.lab
        if lab["crashed_at"] is not None:
            lab["latencies"].append(time.perf_counter() - lab["crashed_at"])
        task_status.started()
        lab["ready"].set()
        await lab["go"].wait()
        lab["crashed_at"] = time.perf_counter()
        raise RuntimeError("crash on purpose")


async def _supervisor_restart_latency(n: int) -> list[float]:
    lab = {"crashed_at": None, "latencies": [], "ready": trio.Event(), "go": trio.Event()}
    sup = Supervisor(children=[ChildSpec("c", lambda: _Crasher(lab), grace_s=0)],
                     intensity=n + 10, period_s=1e-9, backoff=Backoff.none(), name="bench")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(n):
            await lab["ready"].wait()
            lab["ready"] = trio.Event()
            go, lab["go"] = lab["go"], trio.Event()
            go.set()
        await lab["ready"].wait()
        await sup.stop()
    return lab["latencies"]


async def _baseline_restart_latency(n: int) -> list[float]:
    """The floor: report the crash over a memory channel, start a fresh task, wait for ready."""
    lab = {"crashed_at": None, "latencies": [], "ready": trio.Event(), "go": trio.Event()}
    send, receive = trio.open_memory_channel(math.inf)

    async def child(task_status=trio.TASK_STATUS_IGNORED):
        try:
            await _Crasher(lab).run(task_status=task_status)
        except RuntimeError as exc:
            send.send_nowait(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(child)
        for _ in range(n):
            await lab["ready"].wait()
            lab["ready"] = trio.Event()
            go, lab["go"] = lab["go"], trio.Event()
            go.set()
            await receive.receive()
            await nursery.start(child)
        await lab["ready"].wait()
        nursery.cancel_scope.cancel()
    return lab["latencies"]


# ---------------------------------------------------------------- mailboxes


async def _per_message_s(producer, consumer) -> float:
    """Seconds per message while ``producer`` and ``consumer`` run together to the end."""
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        nursery.start_soon(consumer)
    return (time.perf_counter() - start) / MESSAGES


async def _channel(make) -> float:
    send, receive = make()

    async def producer():
        async with send:
            for i in range(MESSAGES):
                await send.send(i)

    async def consumer():
        async with receive:
            async for _ in receive:
                pass

    return await _per_message_s(producer, consumer)


async def _cell() -> tuple[float, int]:
    cell: LatestCell[int] = LatestCell()
    delivered = 0

    async def producer():
        for i in range(MESSAGES):
            cell.set(i)
            await trio.lowlevel.checkpoint()  # as often as a channel send yields

    async def consumer():
        nonlocal delivered
        seen = 0
        while seen < MESSAGES:
            seen = (await cell.wait_newer(seen)).version
            delivered += 1

    return await _per_message_s(producer, consumer), delivered


async def _ring() -> tuple[float, int]:
    ring: DropOldestRing[int] = DropOldestRing(CAPACITY)

    async def producer():
        for i in range(MESSAGES):
            ring.push(i)
            await trio.lowlevel.checkpoint()
        ring.close()

    async def consumer():
        async for _ in ring:
            pass

    return await _per_message_s(producer, consumer), ring.dropped


# ---------------------------------------------------------------- report


def _row(name: str, baseline: float, result: float, unit: str, note: str = "") -> str:
    return (f"| {name} | {baseline:.2f} {unit} | {result:.2f} {unit} | "
            f"{result / baseline:.2f}x | {note} |")


async def _main() -> list[str]:
    base_lat: list[float] = []
    sup_lat: list[float] = []
    for _ in range(ROUNDS):
        base_lat += await _baseline_restart_latency(RESTARTS // ROUNDS)
        sup_lat += await _supervisor_restart_latency(RESTARTS // ROUNDS)

    def p(values, q):
        return statistics.quantiles(values, n=100)[q - 1] * 1e6

    rows = [
        _row("restart latency, median", p(base_lat, 50), p(sup_lat, 50), "µs",
             f"{len(sup_lat)} restarts, backoff 0"),
        _row("restart latency, p90", p(base_lat, 90), p(sup_lat, 90), "µs",
             "p99 is dominated by the shared CPU's scheduling noise"),
    ]

    def best(values):
        return min(values) * 1e6

    base, mailbox, cells, rings = [], [], [], []
    for _ in range(ROUNDS):  # interleaved, so a noisy neighbour hurts every kind alike
        base.append(await _channel(lambda: trio.open_memory_channel(CAPACITY)))
        mailbox.append(await _channel(lambda: open_mailbox(CAPACITY)))
        cells.append(await _cell())
        rings.append(await _ring())
    rows += [
        _row("open_mailbox(64), per message", best(base), best(mailbox), "µs",
             f"{MESSAGES} messages, all delivered"),
        _row("LatestCell, per set", best(base), best(c for c, _ in cells), "µs",
             f"reader saw {min(d for _, d in cells)} of {MESSAGES} versions"),
        _row("DropOldestRing(64), per push", best(base), best(r for r, _ in rings), "µs",
             f"dropped {max(d for _, d in rings)} of {MESSAGES}"),
    ]
    return rows


def main() -> None:
    # Each crash is logged as a warning; a log handler's I/O is not the supervisor's cost.
    logging.getLogger("actors").setLevel(logging.CRITICAL)
    rows = trio.run(_main)
    header = ["| measurement | baseline (bare Trio) | actors | ratio | notes |",
              "|---|---|---|---|---|"]
    print(f"actors bench — python {platform.python_version()}, trio {trio.__version__}, "
          f"{machine_description()}, load {os.getloadavg()[0]:.1f}")
    print("\n".join(header + rows))


if __name__ == "__main__":
    main()
