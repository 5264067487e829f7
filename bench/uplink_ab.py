"""The durable uplink benchmark, this tree against a baseline tree, interleaved in one run.

    python -m bench.uplink_ab --baseline-tree PATH [--rounds 6]

PATH is another source tree of the gateway (``git worktree add /tmp/main main``, or ``git
archive main | tar -x -C /tmp/main``). Each round runs, in a fresh process per measure and
tree (alternating which tree goes first): durable throughput (50,000 messages appended,
published and deleted; `bench.uplink_bench.durable_pipeline`), the drain of an 18,000-row
backlog (`drain_backlog`) against ONE Pub/Sub emulator shared by both trees, and the append
measures (``bench.uplink_bench --only appends --runs 1``). Prints per-round figures, then the
median of each measure per tree and the ratio (this tree / baseline; for the drain, baseline /
this tree, so > 1 is better everywhere). For a refactor, the ratios should be 1 within noise.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._machine import machine_description, utc_now
from tests.pubsub_emulator import create_topic, running_emulator

HERE = Path(__file__).resolve().parent.parent
_ONE = """
import pathlib, sys, tempfile, trio
from bench.uplink_bench import drain_backlog, durable_pipeline, make_records
host, topic, what = sys.argv[1:4]
with tempfile.TemporaryDirectory() as tmp:
    if what == "durable":
        print(50_000 / trio.run(durable_pipeline, host, topic, make_records(50_000),
                                pathlib.Path(tmp)))
    else:
        print(trio.run(drain_backlog, host, topic, make_records(18_000), pathlib.Path(tmp)))
"""
_APPENDS = re.compile(r"commit-per-row ([\d,]+)/s, grouped single ([\d,]+)/s, "
                      r"grouped batches ([\d,]+)/s, via recorder ([\d,]+)/s")
MEASURES = ("durable msg/s", "drain s", "appends 1,000 x append()/s",
            "appends 4 x append_many(1,000)/s", "appends via Recorder/s")


def _run(tree: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=tree, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
    return out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    trees = {"baseline": args.baseline_tree.resolve(), "this tree": HERE}
    got: dict[tuple[str, str], list[float]] = {(t, m): [] for t in trees for m in MEASURES}
    load_before = os.getloadavg()
    n = 0
    with tempfile.TemporaryDirectory() as tmp, running_emulator(Path(tmp) / "emu") as emu:
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
            for tree in order:
                for what, measure in (("durable", MEASURES[0]), ("drain", MEASURES[1])):
                    n += 1
                    create_topic(emu, "bessai-bench", f"ab{n}")
                    value = float(_run(trees[tree], "-c", _ONE, emu.host, f"ab{n}", what)
                                  .split()[-1])
                    got[(tree, measure)].append(value)
                found = _APPENDS.search(_run(trees[tree], "-m", "bench.uplink_bench", "--only",
                                             "appends", "--runs", "1"))
                assert found is not None
                for measure, text in zip(MEASURES[2:], found.groups()[1:], strict=True):
                    got[(tree, measure)].append(float(text.replace(",", "")))
                print(f"round {rnd + 1} {tree}: "
                      + ", ".join(f"{m} {got[(tree, m)][-1]:,.3g}" for m in MEASURES),
                      flush=True)
    load_after = os.getloadavg()
    print(f"\n{utc_now()}; {machine_description()}; load average {load_before[0]:.2f} / "
          f"{load_before[1]:.2f} / {load_before[2]:.2f} before, {load_after[0]:.2f} / "
          f"{load_after[1]:.2f} / {load_after[2]:.2f} after; {args.rounds} rounds, "
          f"baseline {trees['baseline']}\n")
    print("| measure (median) | baseline | this tree | ratio (> 1 better) |")
    print("|---|---:|---:|---:|")
    for m in MEASURES:
        base, this = (statistics.median(got[(t, m)]) for t in trees)
        ratio = base / this if m == "drain s" else this / base
        fmt = "{:.3f}" if m == "drain s" else "{:,.0f}"
        print(f"| {m} | {fmt.format(base)} | {fmt.format(this)} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
