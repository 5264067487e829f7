"""The real gateway process killed with SIGKILL at random points: nothing accepted is lost.

22 times: start tests/e2e/spool_writer.py (appending and publishing to the emulator), kill it
with SIGKILL at a random moment, restart. Then drain, pull everything back and check that every
row the process had reported as accepted arrived, and that seq continues per device without a
hole across all the restarts. Real clock, real processes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.emulator, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KILLS = 22


def start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.spool_writer", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def test_sigkill_at_random_points_loses_no_accepted_row_and_seq_has_no_hole(
        tmp_path, pubsub_topic):
    rng = random.Random(20260101)
    spool = str(tmp_path / "spool.sqlite")
    args = [spool, pubsub_topic.emulator.host, pubsub_topic.project, pubsub_topic.topic]
    accepted: dict[str, tuple[str, int]] = {}
    for _ in range(KILLS):
        proc = start([*args, "write"])
        time.sleep(rng.uniform(0.05, 0.8))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():
            if line.startswith("ACK "):
                _, device, seq, msg_id = line.split()
                accepted[msg_id] = (device, int(seq))
    proc = start([*args, "drain"])
    out, err = proc.communicate(timeout=60)
    assert "DRAINED" in out, err[-2000:]
    got = pubsub_topic.pull_all()
    by_id: dict[str, tuple[str, int]] = {}
    for m in got:
        a = m["attributes"]
        pair = (a["device_id"], int(a["seq"]))
        assert by_id.setdefault(a["msg_id"], pair) == pair  # a duplicate is the same row
    assert len(accepted) > 200
    missing = {k: v for k, v in accepted.items() if by_id.get(k) != v}
    assert not missing, f"{len(missing)} accepted rows never arrived"
    for device in ("inv0", "inv1"):
        seqs = sorted(seq for d, seq in by_id.values() if d == device)
        assert seqs == list(range(1, len(seqs) + 1)), device  # continuous across 22 kills
