"""Run every benchmark, then gather bench/results/*.md into bench/RESULTS.md.

Each module in `MODULES` that exists in bench/ runs as its own subprocess
(``python -m bench.<name>``, cwd = the repository), one after another, so that no benchmark
shares a process or the CPU with another. A failing benchmark is reported and the others still
run; the exit status is 1 if any failed. RESULTS.md starts with the date and the machine, then
every results file in name order.

Run: ``/work/venv/bin/python -m bench``.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

from bench._machine import machine_description, utc_now, write_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS_DIR = BENCH / "results"
RESULTS = BENCH / "RESULTS.md"
MODULES = ("actors_bench", "device_bench", "connection_bench", "sim_bench", "uplink_bench",
           "telemetry_sink", "control_bench", "load", "status_bench", "trust_bench")


def run_all() -> list[tuple[str, int, float]]:
    """Run each present module; returns (name, exit status, seconds) per module run."""
    outcomes = []
    for name in MODULES:
        if not (BENCH / f"{name}.py").exists():
            print(f"== bench.{name}: not present, skipped", flush=True)
            continue
        print(f"== bench.{name}", flush=True)
        started = time.monotonic()
        status = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT).returncode
        seconds = time.monotonic() - started
        print(f"== bench.{name}: exit {status} in {seconds:.0f} s", flush=True)
        outcomes.append((name, status, seconds))
    return outcomes


def assemble(outcomes: list[tuple[str, int, float]]) -> str:
    head = [
        "# BESSAI Edge Gateway: benchmark results",
        "",
        f"Assembled {utc_now()} on {machine_description()}, Python {platform.python_version()}, by "
        "`python -m bench` (each section below is one `bench/results/*.md`, written by its "
        "benchmark with its own date).",
        "",
    ]
    if outcomes:
        head.append("This run: " + ", ".join(
            f"`bench.{name}` {'ok' if status == 0 else f'FAILED (exit {status})'} "
            f"({seconds:.0f} s)" for name, status, seconds in outcomes) + ".")
        head.append("")
    sections = [path.read_text().strip() for path in sorted(RESULTS_DIR.glob("*.md"))]
    return "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"


def main() -> int:
    outcomes = run_all()
    write_results(RESULTS, assemble(outcomes))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 1 if any(status != 0 for _, status, _ in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
