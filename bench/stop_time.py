"""How long `bessai-run` takes to stop (SIGTERM to exit) with the cloud black-holed and the
collector refusing — the on-call case the runbook promises "under one second" for.

    python -m bench.stop_time [--baseline-tree PATH] [--runs N]

Each run: the simulator process, a listening socket that never answers as PUBSUB_EMULATOR_HOST
(a black-holed cloud: the uplink's request hangs), a closed port as the OTel collector, the
gateway for 20 s (past the first metric export, so the collector is known to fail), then
SIGTERM. ``--baseline-tree`` runs the same against another source tree (e.g. a `git worktree`
of the previous release) in the same session, for the ratio. Writes bench/results/stop.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._machine import machine_description, utc_now, write_results

ROOT = Path(__file__).resolve().parents[1]


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_once(tree: Path, warm_s: float = 20.0) -> float:
    env0 = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "PUBSUB_", "BESSAI_"))}
    env0.update(PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
    sim = subprocess.Popen([sys.executable, "-m", "bessai.sim", "--port", "0"], cwd=tree,
                           env=env0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hole = socket.socket()
    try:
        assert sim.stdout is not None
        port = next(line.split("port=")[1].split()[0] for line in sim.stdout
                    if "SIM_LISTENING" in line)
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        tmp = Path(tempfile.mkdtemp(prefix="bessai-stop-"))
        (tmp / "empty.env").touch()
        env = dict(env0, SITE_ID="stop-bench", INVERTER_IP="127.0.0.1", INVERTER_PORT=port,
                   SPOOL_PATH=str(tmp / "spool.sqlite"), STATUS_BIND=f"127.0.0.1:{_free()}",
                   GCP_PROJECT_ID="bessai-stop", PUBSUB_TOPIC="bessai-telemetry",
                   PUBSUB_EMULATOR_HOST=f"127.0.0.1:{hole.getsockname()[1]}",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_free()}")
        gateway = subprocess.Popen(
            [sys.executable, "-m", "bessai.cli.run", "--no-screen", "--env-file",
             str(tmp / "empty.env")], cwd=tree, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        assert gateway.stdout is not None
        next(line for line in gateway.stdout if "DEVICE_LINK_UP" in line)
        time.sleep(warm_s)  # wall-clock: a benchmark of real processes
        started = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        gateway.communicate(timeout=60)
        return time.monotonic() - started
    finally:
        hole.close()
        sim.kill()
        sim.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stop_time")
    parser.add_argument("--baseline-tree", type=Path, help="source tree of the baseline")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    trees = [("this branch", ROOT)]
    if args.baseline_tree:
        trees.insert(0, ("baseline", args.baseline_tree.resolve()))
    results = {name: [stop_once(tree) for _ in range(args.runs)] for name, tree in trees}
    for name, times in results.items():
        rows.append(f"| {name} | {statistics.median(times):.2f} s | "
                    f"{', '.join(f'{t:.2f}' for t in times)} |")
    ratio = ""
    if "baseline" in results:
        base, this = (statistics.median(results[k]) for k in ("baseline", "this branch"))
        ratio = f"\nRatio (median baseline / median this branch): {base / this:.1f}x\n"
    text = (f"# stop time with the cloud black-holed and the collector down\n\n"
            f"`python -m bench.stop_time` — {utc_now()}; {machine_description()}; load average "
            f"{os.getloadavg()[0]:.1f} (shared machine)\n\n"
            "| tree | median stop | runs |\n|---|---|---|\n" + "\n".join(rows) + "\n" + ratio)
    write_results(ROOT / "bench" / "results" / "stop.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
