"""``python -m bench.chaos_net`` (``make chaos-net``): the gateway, the simulator and the Pub/Sub
emulator as real processes in network namespaces of their own, links cut in the kernel for
minutes, figures and verdicts merged into bench/CHAOS.md (its chaos-net section).

Options: ``--only NAME`` (repeatable), ``--ci`` (the short CI share), ``--scale F`` (every cut
and load duration times F, to try the harness out; the rows say so), ``--lanes N`` (that many
runs side by side, each in its own namespaces; CPU starvation runs alone afterwards),
``--seed N``, ``--no-write``, ``--list``. Needs root (namespaces, veths, nftables): without
it, or where ``ip netns`` is not allowed, it says why and exits 0 having run nothing (exit 3
with ``--require``). Exit 1 if a scenario failed.

Bounded: every scenario has a fixed span, every wait a deadline, ``bessai-run`` a --duration
backstop. Namespaces, veths, nft rules and every process it started are removed on exit, also on
failure, SIGTERM or Ctrl-C; a lane left behind by a SIGKILLed run is removed by the next run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench.chaos.__main__ import machine
from bench.chaos.rig import Result
from bench.chaos_net import report
from bench.chaos_net.netns import Lane, unavailable_reason
from bench.chaos_net.scenarios import (
    EMULATOR_PORT,
    SCENARIOS,
    NetFigures,
    NetResult,
    get,
    load_average,
    run_net_scenario,
)
from bessai.sim.pubsub_emulator import PubSubEmulator

DEFAULT_SEED = 20261127
OUT = Path(__file__).resolve().parents[1] / "CHAOS.md"
EXIT_UNAVAILABLE = 3


class _Stop(Exception):
    """SIGTERM: unwind through every ``finally`` (processes, namespaces)."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop(f"signal {signum}")


def start_emulator(lane: Lane, workdir: Path) -> PubSubEmulator:
    """The cloud: Google's emulator inside the lane's cloud namespace, on every address there."""
    return PubSubEmulator(port=EMULATOR_PORT, listen="0.0.0.0", address=lane.cloud_admin_ip,
                          command_prefix=lane.exec_prefix("cloud"),
                          log_path=workdir / "emulator.log", startup_timeout_s=120).start()


def run(names: list[str], *, scale: float = 1.0, seed: int = DEFAULT_SEED,
        workdir: Path | None = None) -> list[NetResult]:
    """Run the named scenarios one after the other in one lane; always cleans up."""
    chosen = [next(s for s in SCENARIOS if s.name == n).scaled(scale) for n in names]
    with tempfile.TemporaryDirectory(prefix="bessai-chaos-net-") as tmp:
        work = workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        lane = Lane.open()
        try:
            print(f"lane {lane.k}: namespaces {lane.ns('gw')}, {lane.ns('inv')}, "
                  f"{lane.ns('cloud')}; work dir {work}", flush=True)
            emulator = start_emulator(lane, work)
            try:
                results = []
                for s in chosen:
                    print(f"{s.name}: {s.what} (scale {scale:g}, span {s.span_s:.0f} s) ...",
                          flush=True)
                    try:
                        nr = run_net_scenario(s, lane, emulator, work, seed)
                    except (Exception, _Stop) as exc:
                        if isinstance(exc, _Stop):
                            raise
                        r = Result(s.name, seed)
                        r.check("ran to the end", False, f"{type(exc).__name__}: {exc}"[:400])
                        nr = NetResult(s, r, NetFigures(cut="-"))
                    print(nr.result.summary(), flush=True)
                    print(f"  figures: {nr.figures}", flush=True)
                    for note in nr.result.notes:
                        print(f"  note: {note}", flush=True)
                    results.append(nr)
                return results
            finally:
                emulator.stop()
        finally:
            lane.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos_net", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--ci", action="store_true", help="only the short CI share")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every cut/load duration (default 1: the real figures)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep spools and logs here (default: a temporary directory)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--lanes", type=int, default=1,
                        help="run the scenarios in this many lanes side by side (child "
                             "processes); CPU starvation always runs alone, after them")
    parser.add_argument("--require", action="store_true",
                        help=f"exit {EXIT_UNAVAILABLE} (not 0) when namespaces are unavailable")
    args = parser.parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:32} {s.what}")
        return 0
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in args.only if n not in known]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(sorted(known))}")
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    names = [s.name for s in SCENARIOS if (not args.only or s.name in args.only)
             and (s.ci == args.ci or bool(args.only))]
    reason = unavailable_reason()
    if reason is not None:
        print(f"chaos-net skipped: {reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE if args.require else 0
    signal.signal(signal.SIGTERM, _on_term)
    lanes_rc = 0
    if args.lanes > 1:
        alone = [n for n in names if get(n).cpu_load_s]
        try:
            lanes_rc = _run_lanes([n for n in names if n not in alone], args)
        except (KeyboardInterrupt, _Stop) as exc:
            print(f"chaos-net interrupted ({exc or 'Ctrl-C'})", file=sys.stderr)
            return 130
        names = alone
        if not names:
            return lanes_rc
    started = time.monotonic()  # wall-clock
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")  # wall-clock: the run log
    load_start = load_average()
    try:
        results = run(names, scale=args.scale, seed=args.seed, workdir=args.workdir)
    except (KeyboardInterrupt, _Stop) as exc:
        print(f"chaos-net interrupted ({exc or 'Ctrl-C'}); namespaces and processes removed",
              file=sys.stderr)
        return 130
    passed = sum(nr.result.passed for nr in results)
    print(f"{passed}/{len(results)} passed in {time.monotonic() - started:.0f} s real",
          flush=True)  # wall-clock
    if not args.no_write:
        report.write(OUT, results, args.scale, report.run_line(
            names, args.scale, started_at, load_start, load_average(), machine()))
        print(f"merged into {OUT}")
    for nr in results:
        if not nr.result.passed:
            print(f"FAILED {nr.result.name} — re-run: python -m bench.chaos_net --only "
                  f"{nr.result.name}", file=sys.stderr)
    return 0 if passed == len(results) and lanes_rc == 0 else 1


def _run_lanes(names: list[str], args: argparse.Namespace) -> int:
    """Spread ``names`` over ``args.lanes`` child runs (longest first, to the least loaded
    lane), wait for all; each writes its own rows. SIGTERM/Ctrl-C reaches every child."""
    overhead_s = 90.0  # start-up, settling, drain, stop per scenario
    groups: list[list[str]] = [[] for _ in range(min(args.lanes, len(names)))]
    load = [0.0] * len(groups)
    for n in sorted(names, key=lambda n: -get(n).span_s):
        i = load.index(min(load))
        groups[i].append(n)
        load[i] += get(n).span_s * args.scale + overhead_s
    children = []
    try:
        for i, group in enumerate(groups):
            cmd = [sys.executable, "-m", "bench.chaos_net", "--scale", str(args.scale),
                   "--seed", str(args.seed)] + [a for n in group for a in ("--only", n)]
            if args.no_write:
                cmd.append("--no-write")
            if args.workdir is not None:
                cmd += ["--workdir", str(args.workdir / f"lane-run-{i}")]
            print(f"lane run {i}: {', '.join(group)} (about {load[i] / 60:.0f} min)", flush=True)
            children.append(subprocess.Popen(cmd))
            time.sleep(5)  # one emulator JVM starting at a time
        return max(child.wait() for child in children)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
