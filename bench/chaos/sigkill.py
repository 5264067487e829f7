"""SIGKILL of the real ``bessai-run --simulator`` process at random points (real clock).

The one chaos scenario that is not in virtual time: the gateway process (with its in-process
simulator, publishing to Google's Pub/Sub emulator) is started, killed with SIGKILL at a random
moment, and started again, ``kills`` times; then it runs until the spool is empty and is stopped
with SIGTERM. Before each restart the spool file is read (read-only): every row committed there
is *accepted* and must be delivered. At the end the topic is pulled back:

* every accepted ``msg_id`` arrived (re-sends are allowed: same ``msg_id``, counted as dup);
* per device, the delivered seqs are exactly 1..last_seq — no hole, and no seq reused under a
  different ``msg_id`` (seq continues across restarts instead of starting again at 1).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from bench.chaos.accounting import account_spool
from bench.chaos.rig import PROJECT, Result
from bessai.cli.run import simulator_spool
from bessai.sim.pubsub_emulator import EmulatorAdmin, free_port

ROOT = Path(__file__).resolve().parents[2]
EVENT_DEADLINE_S = 120.0
"""How long a real-clock step waits for the event it checks (a new row, a drain) before the
check fails: generous, since the machine may be shared and loaded."""


def _committed(spool: Path) -> dict[str, tuple[str, int]]:
    if not spool.exists():
        return {}
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        return {m: (d, s) for m, d, s in conn.execute("SELECT msg_id, device_id, seq FROM outbox")}
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def _last_seqs(spool: Path) -> dict[str, int]:
    if not spool.exists():
        return {}
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT device_id, last_seq FROM seqs").fetchall())
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def _depth(spool: Path) -> int | None:
    try:
        conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def _grew(now: dict[str, int], before: dict[str, int]) -> bool:
    """Every device's last seq is past ``before`` (at least one device when ``before`` is
    empty)."""
    if not before:
        return any(v > 0 for v in now.values())
    return all(now.get(d, 0) > n for d, n in before.items())


def run_sigkill(emulator_host: str, workdir: Path, seed: int, *, kills: int = 6) -> Result:
    rng = random.Random(seed)
    result = Result("sigkill-restart", seed, poll_interval_s=0.2)
    real_start = time.monotonic()  # wall-clock: a real-clock scenario
    topic = f"chaos-kill-{rng.getrandbits(32):08x}"
    admin = EmulatorAdmin(f"http://{emulator_host}", PROJECT)
    admin.create_topic(topic)
    admin.create_subscription(f"{topic}-sub", topic)
    # A directory of its own (a schedule another scenario stored beside its spool must not reach
    # this gateway), and the file `bessai-run --simulator` really writes: its own spool beside
    # the configured one.
    run_dir = workdir / "sigkill"
    run_dir.mkdir(parents=True, exist_ok=True)
    configured = run_dir / f"sigkill-{seed}.sqlite"
    spool = simulator_spool(configured)
    env_file = workdir / "empty.env"
    env_file.write_text("")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), SITE_ID="chaos-site",
               INVERTER_IP="127.0.0.1", GCP_PROJECT_ID=PROJECT, PUBSUB_TOPIC=topic,
               PUBSUB_EMULATOR_HOST=emulator_host, SPOOL_PATH=str(configured),
               STATUS_BIND=f"127.0.0.1:{port}", LOG_LEVEL="WARNING", POLL_INTERVAL_S="0.2",
               SHUTDOWN_DEADLINE_S="10")
    for key in ("PUBSUB_COMMANDS_SUBSCRIPTION", "OTEL_EXPORTER_OTLP_ENDPOINT",
                "GOOGLE_APPLICATION_CREDENTIALS", "DEVICES"):
        env.pop(key, None)
    log = (workdir / "sigkill-gateway.log").open("ab")
    accepted: dict[str, tuple[str, int]] = {}
    accepted_seqs: dict[str, int] = {}
    peak_rss = 0
    peak_rows = 0

    def start(duration_s: float | None = None, *, ready: bool = True) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "bessai.cli.run", "--simulator", "--no-screen",
                "--env-file", str(env_file)]
        if duration_s is not None:
            args += ["--duration", str(duration_s)]
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)
        if not ready:
            return proc
        deadline = time.monotonic() + 60  # wall-clock
        while time.monotonic() < deadline:  # wall-clock
            if proc.poll() is not None:
                raise RuntimeError(f"bessai-run exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/status", timeout=1).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        proc.kill()
        raise RuntimeError(f"bessai-run did not serve /status within 60 s; see {log.name}")

    def watch(proc: subprocess.Popen[bytes], seconds: float) -> None:
        nonlocal peak_rss, peak_rows
        end = time.monotonic() + seconds  # wall-clock
        while time.monotonic() < end:  # wall-clock
            try:
                peak_rss = max(peak_rss, psutil.Process(proc.pid).memory_info().rss)
            except psutil.Error:
                pass
            peak_rows = max(peak_rows, _depth(spool) or 0)
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))  # wall-clock

    def wait_for(proc: subprocess.Popen[bytes], condition: Callable[[], bool], what: str,
                 *, on_tick: Callable[[], object] | None = None) -> bool:
        """Watch ``proc`` until ``condition`` holds (True) or ``EVENT_DEADLINE_S`` passed
        (False: the check that needs the event then fails with its figures)."""
        deadline = time.monotonic() + EVENT_DEADLINE_S  # wall-clock
        while time.monotonic() < deadline:  # wall-clock
            if on_tick is not None:
                on_tick()
            if condition():
                return True
            if proc.poll() is not None:
                result.notes.append(f"bessai-run exited ({proc.returncode}) waiting for {what}")
                return False
            watch(proc, 0.2)
        result.notes.append(f"no {what} within {EVENT_DEADLINE_S:.0f} s")
        return False

    try:
        early = 0
        for _ in range(kills):
            if rng.random() < 0.25:  # during start-up: imports, spool recovery, first polls
                early += 1
                proc = start(ready=False)
                watch(proc, rng.uniform(0.2, 3.0))
            else:
                before = _last_seqs(spool)
                proc = start()
                watch(proc, rng.uniform(0.5, 8.0))
                # the kill lands after this run committed a row of its own (on a slow machine
                # the random point can come before the first poll): wait for it, not race it
                wait_for(proc, lambda before=before: _grew(_last_seqs(spool), before),
                         "a new row committed before the kill")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            accepted.update(_committed(spool))
            for device, seq in _last_seqs(spool).items():
                accepted_seqs[device] = max(accepted_seqs.get(device, 0), seq)
        proc = start(duration_s=300)
        drained_from = time.monotonic()  # wall-clock
        # drained = every row accepted at the kills is gone AND this run has polled and
        # committed rows of its own (seq past every kill): an empty spool before the first new
        # poll is not a drain, it is the start racing the check
        wait_for(proc, lambda: (_grew(_last_seqs(spool), accepted_seqs)
                                and _depth(spool) == 0),
                 "seq past every kill and an empty spool",
                 on_tick=lambda: accepted.update(_committed(spool)))
        result.drain_s = round(time.monotonic() - drained_from, 1)  # wall-clock
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        accepted.update(_committed(spool))
    finally:
        log.close()
    received = admin.pull_all(f"{topic}-sub")
    r = result
    ledger = account_spool(r, received, spool, accepted)
    last, missing_accepted = ledger.last_seqs, ledger.missing_accepted
    holes, reused = ledger.holes, ledger.reused
    r.restarts = {"process (SIGKILL)": kills}
    r.peak_spool_rows = peak_rows
    r.peak_spool_bytes = spool.stat().st_size
    r.peak_rss_mb = round(peak_rss / 2**20, 1)
    r.real_s = round(time.monotonic() - real_start, 1)  # wall-clock
    r.virtual_s = r.real_s
    r.check("every accepted row delivered", not missing_accepted,
            f"{len(missing_accepted)} of {len(accepted)} accepted rows never arrived")
    r.check("seq continuous per device across restarts", holes == 0, f"{holes} seqs missing")
    r.check("no seq reused after a restart", not reused, f"reused: {reused[:5]}")
    r.check("seq grew past every kill", all(last.get(d, 0) > n for d, n in accepted_seqs.items()),
            f"at kills {accepted_seqs}, at the end {last}")
    r.check("rows were accepted before the kills",
            sum(accepted_seqs.values()) >= max(1, kills - early),
            f"only {sum(accepted_seqs.values())} seqs for {kills - early} kills after start-up")
    r.notes.append(f"{kills} SIGKILLs at random points ({early} during start-up, the rest "
                   f"0.5-8 s after /status answered); {len(accepted)} unsent rows seen "
                   f"committed at kill times; last seq per device "
                   f"{json.dumps(last)}; real clock, so heartbeat figures are not measured")
    return r
