"""What trusting a command costs: the gate with and without signature, replay store and clock.

Each case sends the same stream of dispatch commands (alternating stop and auto, so no device
is needed: the applier only records) through `CommandGate.handle_command_message` on the real
Trio clock, with a 10 ms ticker running beside it as a stand-in for the control loop.

Baseline: the gate without trust (parse, decide, apply). Result: with `bessai.trust.
CommandTrust` (Ed25519 verification, a claim in the SQLite replay store with
``synchronous=FULL`` on this machine's disk, the clock check). Figures: real time per command
(median, p99) and the ticker's largest lateness (the Trio thread must never block on SQLite:
its work runs in a worker thread).

Run: ``python -m bench.trust_bench`` (writes bench/results/trust.md).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench._machine import machine_description, utc_now, write_results
from bessai.control.gate import CommandGate
from bessai.control.limits import SafetyState
from bessai.model import Command
from bessai.trust import (
    CommandTrust,
    ReplayStore,
    SkewTracker,
    VerifyKeys,
    generate_key_pair,
    load_private_key,
    sign_data,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "trust.md"
COMMANDS = int(os.environ.get("BESSAI_BENCH_TRUST_COMMANDS", "300"))
TICK_S = 0.010


class _Recorder:
    applied = 0

    async def apply(self, command: Command, power_w: float | None) -> None:
        self.applied += 1


async def _run(trust: CommandTrust | None, messages: list[tuple[bytes, dict[str, str]]]
               ) -> dict[str, float]:
    now = time.time()  # wall-clock: the commands carry real expiry times
    gate = CommandGate("site1", "inv1", _Recorder(), safety=SafetyState,
                       emit=lambda event: None, wall_clock=lambda: now, trust=trust,
                       remember=len(messages) + 1)
    lateness: list[float] = []
    per_command: list[float] = []

    async def ticker() -> None:
        expected = trio.current_time() + TICK_S
        while True:
            await trio.sleep_until(expected)
            lateness.append(trio.current_time() - expected)
            expected += TICK_S

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        for data, attrs in messages:
            started = time.perf_counter()
            outcome = await gate.handle_command_message(data, attrs)
            per_command.append(time.perf_counter() - started)
            assert outcome.accepted, outcome.reason
        nursery.cancel_scope.cancel()
    per_command.sort()
    return {"median_ms": statistics.median(per_command) * 1000,
            "p99_ms": per_command[int(len(per_command) * 0.99) - 1] * 1000,
            "tick_late_max_ms": max(lateness) * 1000}


def _messages(key: Any) -> list[tuple[bytes, dict[str, str]]]:
    now = time.time()  # wall-clock
    out = []
    for i in range(COMMANDS):
        body = {"id": f"bench-{i}", "site_id": "site1", "device_id": "inv1",
                "action": "stop" if i % 2 else "auto", "issued_at": now,
                "expires_at": now + 600}
        data = json.dumps(body).encode()
        out.append((data, sign_data(data, key)))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bessai-trust-bench-", dir=ROOT / "bench") as tmp:
        pair = generate_key_pair(Path(tmp) / "keys", "bench")
        key = load_private_key(pair.private_path)
        messages = _messages(key)

        async def both() -> tuple[dict[str, float], dict[str, float]]:
            baseline = await _run(None, messages)
            trust = CommandTrust(keys=VerifyKeys.load(pair.public_path), clock=SkewTracker(),
                                 replay=ReplayStore(Path(tmp) / "outbox.commands.sqlite"))
            result = await _run(trust, messages)
            assert trust.replay is not None
            trust.replay.close()
            return baseline, result

        baseline, result = trio.run(both)
    load = os.getloadavg()
    rows = [("real time per command, median ms", "median_ms"),
            ("real time per command, p99 ms", "p99_ms"),
            ("10 ms ticker beside it, largest lateness ms", "tick_late_max_ms")]
    lines = [
        "# Command trust: what verifying a command costs",
        "",
        f"Date: {utc_now()}. Machine: {machine_description()}, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine: expect noise).",
        f"{COMMANDS} commands (stop/auto: no device writes) through "
        "`CommandGate.handle_command_message`, real clock, a 10 ms ticker task beside it.",
        "Baseline: the gate without trust. Result: with `CommandTrust` (Ed25519 verify, replay "
        "claim in SQLite WAL `synchronous=FULL` on local disk, in a worker thread; clock check).",
        "",
        "| metric | baseline: no trust | result: trust | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, key_name in rows:
        b, r = baseline[key_name], result[key_name]
        ratio = f"{r / b:.1f}" if b > 0 else "-"
        lines.append(f"| {label} | {b:.3f} | {r:.3f} | {ratio} |")
    lines += ["", "Run: `python -m bench.trust_bench`.", ""]
    text = "\n".join(lines)
    write_results(RESULTS, text)
    print(text)


if __name__ == "__main__":
    main()
