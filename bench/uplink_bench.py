"""Durable uplink benchmark, one run against Google's Pub/Sub emulator.

    /work/venv/bin/python -m bench.uplink_bench [--messages 50000] [--only appends]

1. Durable throughput: 50,000 messages of about 300 B appended to the spool (group commit,
   fsync), published by the uplink and deleted after Pub/Sub's ids — against the baseline,
   google-cloud-pubsub's `PublisherClient` publishing the same messages from memory (gRPC,
   default batching, no durability). Target ratio >= 1.0.
2. Spool appends per second with group commit (each append returns only once on disk) —
   against a commit per append (the same SQLite settings, one transaction per row).
   Target >= 100,000/s. Measured three ways: 1,000 tasks each calling `append`; 4 tasks each
   calling `append_many` with 1,000 records already built; and the recorder's whole path
   (snapshots through a mailbox to `Recorder`, which builds, validates and appends them).
3. Drain time of a 30-minute backlog of 10 devices at 1 Hz (18,000 messages) once the link
   returns. Target <= 3 s. Baseline: `PublisherClient` publishing the same 18,000 from memory.

Each figure is the median of ``--runs`` runs (the machine is shared). Writes
bench/results/uplink.md; ``--only appends`` runs just the append measures (no emulator) and
prints them without writing the table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import trio

from bench._machine import machine_description, utc_now, write_results
from bessai.model import Snapshot, TagReading
from bessai.uplink.credentials import Endpoint
from bessai.uplink.message import Record, attributes_for, record_from_snapshot
from bessai.uplink.publisher import Publisher
from bessai.uplink.recorder import Recorder
from bessai.uplink.spool import Spool
from bessai.uplink.uplink import Uplink
from tests.pubsub_emulator import create_topic, running_emulator

PROJECT = "bessai-bench"
RESULTS = Path(__file__).parent / "results" / "uplink.md"


def fresh(workdir: Path, stem: str) -> Path:
    return workdir / f"{stem}-{uuid.uuid4().hex[:8]}.sqlite"


def make_snapshots(n: int, devices: int = 10) -> list[Snapshot]:
    """Telemetry of about 300 B per message, like a SUN2000 + LUNA2000 poll."""
    tags = {"soc": 55.5, "battery_power_w": -1234, "active_power_w": 4567,
            "meter_power_w": -89, "grid_frequency_hz": 50.01, "inverter_temp_c": 41.2,
            "battery_temp_c": 27.3, "device_status": 512, "battery_status": 2,
            "alarm_1": 0, "alarm_2": 0, "pv_power_w": 5801}
    out = []
    for i in range(n):
        snap = Snapshot(site_id="site-001", device_id=f"inv{i % devices}",
                        ts=1_767_225_600.0 + i // devices, taken_at=0.0,
                        readings={k: TagReading(v) for k, v in tags.items()})
        out.append(snap)
    return out


def make_records(n: int, devices: int = 10) -> list[Record]:
    return [record_from_snapshot(snap) for snap in make_snapshots(n, devices)]


def baseline_publisher_client(host: str, topic: str, records: list[Record]) -> float:
    """google-cloud-pubsub publishing from memory; returns seconds until every future resolved."""
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    path = client.topic_path(PROJECT, topic)
    messages = [(r.data, attributes_for(r, seq=i + 1, msg_id=str(uuid.uuid4())))
                for i, r in enumerate(records)]
    # warm the channel up, outside the timing
    client.publish(path, b"warm-up").result()
    started = time.perf_counter()
    futures = [client.publish(path, data, **attrs) for data, attrs in messages]
    for f in futures:
        f.result()
    elapsed = time.perf_counter() - started
    client.stop()
    return elapsed


def uplink_for(spool: Spool, client: httpx.AsyncClient, host: str, topic: str) -> Uplink:
    publisher = Publisher(client, PROJECT, topic, endpoint=Endpoint.for_emulator(host))
    return Uplink(spool, publisher, idle_poll_s=0.02)


async def durable_pipeline(host: str, topic: str, records: list[Record], workdir: Path) -> float:
    """Append (group commit) + publish + delete, concurrently; seconds until the spool is empty."""
    spool = Spool(fresh(workdir, "durable"))
    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        # warm the connection up, outside the timing
        await Publisher(client, PROJECT, topic, endpoint=Endpoint.for_emulator(host)).publish(
            await _one_row(spool, records[0]))
        uplink = uplink_for(spool, client, host, topic)
        await nursery.start(uplink.run)
        started = time.perf_counter()

        async def produce(chunk: list[Record]) -> None:
            for i in range(0, len(chunk), 500):
                await spool.append_many(chunk[i:i + 500])

        async with trio.open_nursery() as producers:
            quarter = len(records) // 4
            for k in range(4):
                producers.start_soon(produce, records[k * quarter:(k + 1) * quarter])
        while uplink.published < len(records) + 1 or spool.stats().depth:
            await trio.sleep(0.005)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return elapsed


async def _one_row(spool: Spool, record: Record) -> list:
    await spool.append(record)
    return await spool.lease(1)


async def appends_grouped(records: list[Record], workdir: Path, *, tasks: int,
                          batch: int) -> float:
    """``tasks`` concurrent appenders; each call returns once its group is on disk."""
    spool = Spool(fresh(workdir, "append"))
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        per_task = len(records) // tasks
        started = time.perf_counter()

        async def appender(chunk: list[Record]) -> None:
            if batch == 1:
                for r in chunk:
                    await spool.append(r)
            else:
                for i in range(0, len(chunk), batch):
                    await spool.append_many(chunk[i:i + batch])

        async with trio.open_nursery() as inner:
            for k in range(tasks):
                inner.start_soon(appender, records[k * per_task:(k + 1) * per_task])
        elapsed = time.perf_counter() - started
        assert spool.stats().depth == per_task * tasks
        nursery.cancel_scope.cancel()
    return per_task * tasks / elapsed


async def appends_via_recorder(snapshots: list[Snapshot], workdir: Path) -> float:
    """Snapshots sent 1,000 at a time to the recorder's mailbox; rows/s until all are on disk."""
    spool = Spool(fresh(workdir, "recorder"))
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        send, receive = trio.open_memory_channel[Snapshot](math.inf)
        recorder = Recorder(spool, snapshots=receive)
        started = time.perf_counter()
        async with trio.open_nursery() as inner:
            inner.start_soon(recorder.run)
            async with send:
                for i in range(0, len(snapshots), 1000):
                    for snap in snapshots[i:i + 1000]:
                        send.send_nowait(snap)
                    await trio.sleep(0)
        elapsed = time.perf_counter() - started
        assert recorder.recorded == len(snapshots) == spool.stats().depth
        nursery.cancel_scope.cancel()
    return len(snapshots) / elapsed


def append_measures(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """The three append figures (rows/s, medians of ``args.runs``) and the naive baseline."""
    runs = args.runs
    append_records = make_records(args.appends)
    snapshots = make_snapshots(args.appends)
    return {
        "naive": median_of(runs, appends_commit_per_row, append_records[:3000], work),
        "single": median_of(runs, lambda: trio.run(lambda: appends_grouped(
            append_records[:50_000], work, tasks=1000, batch=1))),
        "batched": median_of(runs, lambda: trio.run(lambda: appends_grouped(
            append_records, work, tasks=4, batch=1000))),
        "recorder": median_of(runs, trio.run, appends_via_recorder, snapshots, work),
    }


def print_appends(a: dict[str, float]) -> None:
    print(f"appends: commit-per-row {a['naive']:,.0f}/s, grouped single {a['single']:,.0f}/s, "
          f"grouped batches {a['batched']:,.0f}/s, via recorder {a['recorder']:,.0f}/s")


def appends_commit_per_row(records: list[Record], workdir: Path) -> float:
    conn = sqlite3.connect(fresh(workdir, "naive"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, msg_id TEXT, data BLOB)")
    started = time.perf_counter()
    for r in records:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO outbox (msg_id, data) VALUES (?, ?)",
                     (str(uuid.uuid4()), r.data))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(records) / elapsed


async def drain_backlog(host: str, topic: str, records: list[Record], workdir: Path) -> float:
    """An 18,000-row backlog already on disk; seconds from link-up until the spool is empty."""
    spool = Spool(fresh(workdir, "backlog"))
    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        await spool.append_many(records)
        await Publisher(client, PROJECT, topic, endpoint=Endpoint.for_emulator(host)).publish(
            await spool.lease(1))  # warm-up (that row is sent again by the uplink)
        spool.reset_leases()
        uplink = uplink_for(spool, client, host, topic)
        started = time.perf_counter()
        await nursery.start(uplink.run)
        while spool.stats().depth:
            await trio.sleep(0.005)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return elapsed


def median_of(runs: int, fn, *args) -> float:
    values = sorted(fn(*args) for _ in range(runs))
    return values[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--appends", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["appends"], default=None,
                        help="run only these measures; print them, write no table")
    args = parser.parse_args()
    if args.only == "appends":
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            print_appends(append_measures(args, Path(tmp)))
        print(f"load average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after")
        return
    records = make_records(args.messages)
    size = sum(len(r.data) for r in records) / len(records)
    backlog = make_records(18_000)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, running_emulator(Path(tmp) / "emu") as emu:
        work = Path(tmp)
        for name in ("baseline", "durable", "drain", "drainbase"):
            create_topic(emu, PROJECT, name)
        runs = args.runs

        base_s = median_of(runs, baseline_publisher_client, emu.host, "baseline", records)
        ours_s = median_of(runs, trio.run, durable_pipeline, emu.host, "durable", records, work)
        base_rate, ours_rate = len(records) / base_s, len(records) / ours_s
        rows.append(("Durable throughput, 50,000 msgs (append+publish+delete)",
                     "PublisherClient from memory", f"{base_rate:,.0f} msg/s",
                     f"{ours_rate:,.0f} msg/s", ours_rate / base_rate, ">= 1.0"))
        print(f"durable throughput: baseline {base_rate:,.0f}/s ({base_s:.2f} s), "
              f"ours {ours_rate:,.0f}/s ({ours_s:.2f} s), ratio {ours_rate / base_rate:.2f}")

        a = append_measures(args, work)
        naive, single, batched = a["naive"], a["single"], a["batched"]
        rows.append(("Spool appends/s, 1,000 tasks x append() (group commit)",
                     "commit per append", f"{naive:,.0f}/s", f"{single:,.0f}/s",
                     single / naive, ">= 100,000/s"))
        rows.append(("Spool appends/s, 4 tasks x append_many(1,000) (records built)",
                     "commit per append", f"{naive:,.0f}/s", f"{batched:,.0f}/s",
                     batched / naive, ">= 100,000/s"))
        rows.append(("Spool appends/s via Recorder (snapshot -> record -> append_many)",
                     "commit per append", f"{naive:,.0f}/s", f"{a['recorder']:,.0f}/s",
                     a["recorder"] / naive, ">= 100,000/s"))
        print_appends(a)

        drain_base = median_of(runs, baseline_publisher_client, emu.host, "drainbase", backlog)
        drain = median_of(runs, trio.run, drain_backlog, emu.host, "drain", backlog, work)
        rows.append(("Drain 30-min backlog, 10 devices at 1 Hz (18,000 msgs)",
                     "PublisherClient from memory", f"{drain_base:.2f} s", f"{drain:.2f} s",
                     drain_base / drain, "<= 3 s"))
        print(f"drain 18,000: baseline {drain_base:.2f} s, ours {drain:.2f} s")

    lines = [
        "# Durable uplink benchmark",
        "",
        f"Date: {utc_now()}. Machine: {machine_description()}. "
        f"Python {platform.python_version()}. Peer: Google's Pub/Sub emulator (gcloud), "
        f"same host. Messages: telemetry JSON, {size:.0f} B of data + 7 attributes. "
        f"Each figure: median of {args.runs} runs. The machine is shared: 1-minute load "
        f"average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after "
        f"({os.cpu_count()} CPUs).",
        "",
        "| measure | baseline | baseline figure | ours | ratio (ours/baseline, "
        "higher is better) | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, base_name, base, ours, ratio, target in rows:
        lines.append(f"| {name} | {base_name} | {base} | {ours} | {ratio:.2f} | {target} |")
    existing = RESULTS.read_text() if RESULTS.exists() else ""
    notes = existing.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in existing else "\n"
    write_results(RESULTS, "\n".join(lines) + "\n\n<!-- notes -->" + notes)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
