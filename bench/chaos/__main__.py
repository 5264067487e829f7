"""``python -m bench.chaos`` (``make chaos``): every chaos scenario, figures and verdicts in
bench/CHAOS.md.

Options: ``--only NAME`` (repeatable), ``--seed N`` (default 20261127), ``--ci`` (only the CI
share), ``--no-write`` (print, do not touch bench/CHAOS.md). Exit status 1 if any scenario
failed; each failure prints its seed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import trio
from trio.testing import MockClock

from bench._machine import cell, machine_description
from bench.chaos.rig import Result
from bench.chaos.scenarios import SCENARIOS, Scenario, run_scenario, run_standalone
from bessai.observe.logs import configure_logging
from bessai.sim.pubsub_emulator import PubSubEmulator

DEFAULT_SEED = 20261127
OUT = Path(__file__).resolve().parents[1] / "CHAOS.md"


def machine() -> str:
    return f"{machine_description()}, Python {platform.python_version()}"


def table(results: list[tuple[Scenario, Result]]) -> str:
    head = ("| scenario | poll s | virtual s | real s | produced | delivered | dup | dropped "
            "(gaps) | on disk at stop | lost | max HB gap s | safety latency s | restarts "
            "| drain s | peak spool rows / KiB | peak RSS MiB (+growth) | verdict |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for s, r in results:
        restarts = ", ".join(f"{k}={v}" for k, v in sorted(r.restarts.items()) if v) or "0"
        verdict = "PASS" if r.passed else "**FAIL**: " + "; ".join(
            f"{c.name} ({c.detail})" for c in r.failures())
        lines.append(
            f"| {s.name} | {cell(r.poll_interval_s)} | {cell(r.virtual_s)} | {cell(r.real_s)} "
            f"| {r.produced} | {r.delivered} | {r.duplicates} | {r.dropped} ({r.gap_records}) "
            f"| {r.pending_at_stop} | {r.lost} | {cell(r.max_heartbeat_gap_s)} "
            f"| {cell(r.safety_latency_s)} | {restarts} | {cell(r.drain_s)} "
            f"| {r.peak_spool_rows} / {r.peak_spool_bytes // 1024} "
            f"| {cell(r.peak_rss_mb)} (+{cell(r.rss_growth_mb)}) "
            f"| {verdict} |")
    return "\n".join(lines)


def report(results: list[tuple[Scenario, Result]], seed: int,
           load_at_start: str = "-") -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")  # wall-clock: report date
    passed = sum(r.passed for _, r in results)
    out = [
        "# Chaos suite",
        "",
        f"{now} — {machine()} — load average {load_at_start} at the start — seed {seed} — "
        f"{passed}/{len(results)} scenarios passed.",
        "",
        "Produced by `make chaos` (`python -m bench.chaos`); the CI share runs as "
        "`pytest tests/chaos`. The whole gateway (`bessai.gateway.Gateway`, every actor), the "
        "in-process simulator and Google's Pub/Sub emulator behind a fault-injecting transport, "
        "in virtual time (MockClock, autojump 0; real I/O freezes the clock while in flight).",
        "",
        "Columns: *produced* = snapshots polled + events emitted; *delivered* = unique msg_id "
        "pulled back from the emulator; *dup* = extra copies (same msg_id); *dropped (gaps)* = "
        "rows dropped by the disk budget and the gap records naming them; *on disk at stop* = "
        "rows still spooled when the gateway was stopped (sent on the next start); *lost* = "
        "accepted seqs in none of those (must be 0); *max HB gap* = largest interval between "
        "heartbeat writes as the device saw them (limit: interval 10 s + one request timeout "
        "10 s; comm loss at 60 s); *safety latency* = SOC register crossing → SAFETY_BLOCK; "
        "*drain* = recovery → oldest pending row younger than 3 polls; *peak RSS* = the whole "
        "runner process (every scenario runs in it, one after the other), *growth* = peak minus "
        "RSS at the scenario's start; the SIGKILL row measures the gateway process itself.",
        "",
        table(results),
        "",
    ]
    notes = [(s, n) for s, r in results for n in [s.what, *r.notes] if n]
    if notes:
        out += ["## Scenarios and notes", ""]
        for s, r in results:
            extra = "; ".join(r.notes)
            out.append(f"- **{s.name}** — {s.what}." + (f" {extra}." if extra else ""))
        out.append("")
    return "\n".join(out)


async def _run_all(scenarios: list[Scenario], host: str, workdir: Path,
                   seed: int) -> list[tuple[Scenario, Result]]:
    results = []
    for s in scenarios:
        if s.standalone is not None:
            continue
        try:
            result = await run_scenario(s, host, workdir, seed)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            result = Result(s.name, seed)
            result.check("ran to the end", False, f"{type(exc).__name__}: {exc!r}"[:300])
        print(result.summary(), flush=True)
        results.append((s, result))
    return results


def write_report(text: str) -> None:
    """Write bench/CHAOS.md, keeping the real-network section `make chaos-net` merges into it
    (measured separately, in minutes to hours of real time)."""
    import fcntl

    from bench.chaos_net import MARKER
    from bench.chaos_net.netns import LOCK_DIR

    try:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        lock = open(LOCK_DIR / "chaos-md.lock", "w")  # noqa: SIM115 - held for the write
        fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError:  # not root: nobody else writes the net section there either
        lock = None
    try:
        old = OUT.read_text() if OUT.exists() else ""
        at = old.find(MARKER)
        if at >= 0:
            text = text.rstrip("\n") + "\n\n" + old[at:]
        OUT.write_text(text)
    finally:
        if lock is not None:
            lock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--ci", action="store_true", help="only the scenarios CI runs")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--log", default=str(Path(tempfile.gettempdir()) / "bessai-chaos.log"),
                        help="the gateway's log lines (WARNING and up) go here "
                             "(default %(default)s)")
    args = parser.parse_args(argv)
    log_file = open(args.log, "w")  # noqa: SIM115 - open for the whole run
    configure_logging("WARNING", stream=log_file)
    print(f"gateway log: {args.log}", flush=True)
    chosen = [s for s in SCENARIOS if (not args.only or s.name in args.only)
              and (s.ci or not args.ci)]
    if not chosen:
        parser.error(f"no scenario matches; known: {', '.join(s.name for s in SCENARIOS)}")
    started = time.monotonic()  # wall-clock: total real time for the log line
    load_at_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bessai-chaos-") as tmp, PubSubEmulator() as emu:
        virtual = trio.run(_run_all, chosen, emu.host, Path(tmp), args.seed,
                           clock=MockClock(autojump_threshold=0))
        real = []
        for s in chosen:
            if s.standalone is not None:
                result = run_standalone(s, emu.host, Path(tmp), args.seed)
                print(result.summary(), flush=True)
                real.append((s, result))
        order = {s.name: i for i, s in enumerate(chosen)}
        results = sorted(virtual + real, key=lambda sr: order[sr[0].name])
    print(f"{sum(r.passed for _, r in results)}/{len(results)} passed in "
          f"{time.monotonic() - started:.0f} s real", flush=True)  # wall-clock
    if not args.no_write:
        write_report(report(results, args.seed, load_at_start))
        print(f"wrote {OUT}")
    failed = [r for _, r in results if not r.passed]
    for r in failed:
        print(f"FAILED {r.name} — re-run: python -m bench.chaos --only {r.name} --seed {r.seed}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
