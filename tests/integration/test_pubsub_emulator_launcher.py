"""The emulator launcher leaves no JVM behind when its caller is stopped while it starts.

gcloud starts the Java emulator as a child in its own process group; a harness stopped by
SIGTERM or Ctrl-C during the few seconds the JVM takes to answer must still end that group
(chaos-net found an emulator that outlived the network namespace it was started in).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from bessai.sim.pubsub_emulator import free_port
from tests.e2e.procs import ROOT

pytestmark = [pytest.mark.emulator, pytest.mark.skipif(
    shutil.which("gcloud") is None, reason="gcloud (Pub/Sub emulator) not on PATH")]

SCRIPT = """
import signal, sys
from pathlib import Path
from bessai.sim.pubsub_emulator import PubSubEmulator

def stop(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, stop)
PubSubEmulator(port=int(sys.argv[1]), log_path=Path(sys.argv[2])).start()
print("READY", flush=True)  # the signal came too late to test anything
"""


def _emulator_procs(port: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if f"127.0.0.1:{port}" in cmdline or f"--port={port}" in cmdline:
            found.append(p)
    return found


def test_sigterm_while_the_emulator_starts_ends_gcloud_and_the_jvm(tmp_path):
    port = free_port()
    caller = subprocess.Popen([sys.executable, "-c", SCRIPT, str(port), str(tmp_path / "e.log")],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _emulator_procs(port):
            assert time.monotonic() < deadline, "gcloud never started"
            assert caller.poll() is None, "the caller exited before starting gcloud"
            time.sleep(0.05)
        caller.send_signal(signal.SIGTERM)
        out, _ = caller.communicate(timeout=60)
        assert "READY" not in out, "the emulator was ready before the signal: nothing tested"
        deadline = time.monotonic() + 30
        while (left := [p for p in _emulator_procs(port) if p.is_running()
                        and p.status() != psutil.STATUS_ZOMBIE]):
            assert time.monotonic() < deadline, f"left running: {[p.cmdline() for p in left]}"
            time.sleep(0.2)
    finally:
        caller.kill()
        for p in _emulator_procs(port):
            p.kill()
