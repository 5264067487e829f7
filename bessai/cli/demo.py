"""``make demo``: the gateway's main job, end to end, on one machine, in under a minute.

1. Starts Google's Pub/Sub emulator (when gcloud has it) with a telemetry topic and a commands
   subscription: the stand-in for the cloud.
2. Runs ``bessai-run --simulator``: the real gateway tree against the built-in SUN2000 + LUNA2000
   simulator, polling at 1 Hz, spooling every reading and publishing it.
3. Part-way through, sends a dispatch command (discharge 2 kW, 2 minute expiry) the way the
   cloud would, through the commands topic; the safety gate accepts it and the device link
   writes it, with a device-side lease.
4. Stops the gateway with SIGTERM (graceful: spool committed, Modbus closed), pulls everything
   that reached the emulator, and prints what arrived.

It exits non-zero if the gateway did not deliver, so the demo cannot "pass" while broken.
Without gcloud it runs the gateway with the uplink off and shows the readings kept in the spool.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bessai.cli.run import simulator_spool
from bessai.sim.pubsub_emulator import EmulatorAdmin, PubSubEmulator, free_port

PROJECT = "demo-project"
TOPIC = "bessai-telemetry"
SUBSCRIPTION = "bessai-telemetry-demo"
COMMANDS_TOPIC = "bessai-commands"
COMMANDS_SUBSCRIPTION = "bessai-commands-gateway"


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _summarise(messages: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = Counter(m["attributes"].get("kind") for m in messages)
    telemetry = sorted((m for m in messages if m["attributes"].get("kind") == "telemetry"),
                       key=lambda m: int(m["attributes"]["seq"]))
    seqs = sorted(int(m["attributes"]["seq"]) for m in messages)
    socs = [json.loads(m["data"])["values"].get("soc") for m in telemetry]
    powers = [json.loads(m["data"])["values"].get("battery_power") for m in telemetry]
    events = [json.loads(m["data"]).get("name") for m in messages
              if m["attributes"].get("kind") != "telemetry"]
    return {"kinds": dict(kinds), "seq_first": seqs[0] if seqs else None,
            "seq_last": seqs[-1] if seqs else None,
            "seq_contiguous": seqs == list(range(seqs[0], seqs[-1] + 1)) if seqs else False,
            "soc_first": socs[0] if socs else None, "soc_last": socs[-1] if socs else None,
            "power_min_w": min((p for p in powers if p is not None), default=None),
            "events": events}


def _send_discharge(emulator_host: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bessai.cli.main", "command", "discharge", "--power-w", "2000",
         "--ttl-s", "120"], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
    else:
        print("    " + result.stdout.strip().splitlines()[0], flush=True)


def run_demo(duration_s: float, screen: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bessai-demo-"))
    status_port = free_port()
    env = dict(os.environ, SITE_ID="demo-site", INVERTER_IP="127.0.0.1",
               SPOOL_PATH=str(workdir / "outbox.sqlite"),
               STATUS_BIND=f"127.0.0.1:{status_port}", POLL_INTERVAL_S="1",
               SHUTDOWN_DEADLINE_S="10")
    emulator: PubSubEmulator | None = None
    if PubSubEmulator.available():
        _say("Starting Google's Pub/Sub emulator (the stand-in for the cloud)...")
        emulator = PubSubEmulator().start()
        admin = EmulatorAdmin(emulator.base_url, PROJECT)
        admin.create_topic(TOPIC)
        admin.create_subscription(SUBSCRIPTION, TOPIC)
        admin.create_topic(COMMANDS_TOPIC)
        admin.create_subscription(COMMANDS_SUBSCRIPTION, COMMANDS_TOPIC)
        env.update(PUBSUB_EMULATOR_HOST=emulator.host, GCP_PROJECT_ID=PROJECT,
                   PUBSUB_TOPIC=TOPIC, PUBSUB_COMMANDS_TOPIC=COMMANDS_TOPIC,
                   PUBSUB_COMMANDS_SUBSCRIPTION=COMMANDS_SUBSCRIPTION)
        print(f"    emulator on {emulator.host}; topic {TOPIC}, commands {COMMANDS_TOPIC}")
    else:
        _say("gcloud is not installed: running with the uplink off (readings stay in the spool)")
    try:
        _say(f"Running the gateway against the built-in simulator for {duration_s:.0f} s "
             f"(status on http://127.0.0.1:{status_port}/status)...")
        command = [sys.executable, "-m", "bessai.cli.run", "--simulator",
                   "--screen" if screen else "--no-screen"]
        gateway = subprocess.Popen(command, env=env)
        started = time.monotonic()  # wall-clock: a demo script driving real processes
        time.sleep(min(10.0, duration_s / 3))  # wall-clock
        status = _get_json(f"http://127.0.0.1:{status_port}/status")
        if emulator is not None:
            _say("Sending a dispatch command through Pub/Sub: discharge 2000 W for 2 minutes")
            _send_discharge(emulator.host, env)
        time.sleep(max(0.0, duration_s - (time.monotonic() - started)))  # wall-clock
        _say("Stopping the gateway with SIGTERM (graceful shutdown)...")
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(timeout=60)
        print(f"    bessai-run exited with {code}")
        return _report(emulator, env, status, code)
    finally:
        if emulator is not None:
            emulator.stop()


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        document = httpx.get(url, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _report(emulator: PubSubEmulator | None, env: dict[str, str],
            status: dict[str, Any] | None, exit_code: int) -> int:
    ok = exit_code == 0
    if status is not None:
        link = status["links"].get("device:inv1", {})
        print(f"    mid-run /status: device link {link.get('state')}, "
              f"cloud {status['links'].get('cloud', {}).get('state', 'off')}, "
              f"spool depth {(status.get('spool') or {}).get('depth')}")
    if emulator is None:
        spool = simulator_spool(Path(env["SPOOL_PATH"]))  # a --simulator run's own spool
        result = subprocess.run([sys.executable, "-m", "bessai.cli.main", "spool", "stats",
                                 "--path", str(spool)],
                                env=env, capture_output=True, text=True, timeout=60)
        _say("What the spool holds (would be published once an uplink is configured):")
        print(result.stdout or result.stderr)
        return 0 if ok and result.returncode == 0 else 1
    admin = EmulatorAdmin(emulator.base_url, PROJECT)
    messages = admin.pull_all(SUBSCRIPTION)
    summary = _summarise(messages)
    _say(f"{len(messages)} messages reached Pub/Sub (the emulator):")
    print(f"    by kind:            {summary['kinds']}")
    print(f"    seq:                {summary['seq_first']}..{summary['seq_last']} "
          f"({'no holes' if summary['seq_contiguous'] else 'HOLES'})")
    print(f"    SOC:                {summary['soc_first']} % -> {summary['soc_last']} %")
    print(f"    lowest battery W:   {summary['power_min_w']} (negative = discharging)")
    print(f"    events:             {', '.join(e for e in summary['events'] if e) or 'none'}")
    delivered = summary["kinds"].get("telemetry", 0) > 0 and summary["seq_contiguous"]
    accepted = "COMMAND_ACCEPTED" in summary["events"]
    if not delivered:
        print("\nFAIL: no contiguous telemetry reached Pub/Sub", file=sys.stderr)
    if not accepted:
        print("\nFAIL: the dispatch command was not accepted", file=sys.stderr)
    if ok and delivered and accepted:
        _say("Demo OK: polled, guarded, spooled, published, commanded, stopped cleanly.")
        return 0
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bessai.cli.demo",
                                     description="Run the gateway demo (see README).")
    parser.add_argument("--duration", type=float, default=30.0, metavar="S",
                        help="seconds the gateway runs (default %(default)s)")
    parser.add_argument("--no-screen", action="store_true",
                        help="log lines instead of the live status screen")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_demo(args.duration, screen=sys.stdout.isatty() and not args.no_screen)


if __name__ == "__main__":
    sys.exit(main())
