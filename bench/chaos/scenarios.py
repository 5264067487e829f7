"""The chaos scenarios: one fault script and one set of pass criteria each, shared by
``python -m bench.chaos`` (all of them, table in bench/CHAOS.md) and tests/chaos (the CI share).

Every scenario is seeded: the gateway's jitter, the simulator's curves, topic names and the
fault script's random choices all come from the seed, and a failure prints it
(`Result.summary`). Re-run one with ``python -m bench.chaos --only NAME --seed N``.

Common criteria (`Rig.standard_checks`): zero loss (every accepted seq delivered, dropped with
a gap record, or still on disk at stop), nothing lost before the spool, every critical event
delivered, no drops unless the scenario documents them, duplicates identical to the first copy
and none unless the fault implies re-sends, the largest heartbeat gap as the device saw it <=
heartbeat interval + one request timeout, the device never in comm loss, restart counts exactly
as the fault implies, the backlog drained after recovery.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

from bench.chaos.rig import DEVICE, SITE, Result, Rig, Script, request_timeout_s, run_rig
from tests.disk_faults import DiskFiller, small_tmpfs


@attrs.frozen
class Scenario:
    name: str
    what: str
    script: Script
    checks: Callable[[Rig], None]
    ci: bool = True
    """Runs in CI (tests/chaos); the others are marked chaos_long."""
    poll_interval_s: float = 1.0
    spool_max_bytes: int | None = None
    sim_soc_pct: float = 50.0
    crash: tuple[str, float | None] | None = None
    """(actor path, seconds after its start or None for a seeded random point): that actor
    raises once."""
    crash_times: int = 1
    long_reason: str = ""
    note: str = ""
    standalone: Callable[[str, Path, int], Result] | None = None
    """A real-clock scenario run outside virtual time: (emulator host, workdir, seed) → Result."""
    tmpfs_size: str | None = None
    """Put the spool on a tmpfs of this size (e.g. "16m"), so the script can fill it for real.
    Needs root (mount); tests/chaos skips such a scenario otherwise."""


async def run_scenario(scenario: Scenario, emulator_host: str, workdir: Path,
                       seed: int) -> Result:
    """Run one scenario inside the current Trio run (its clock: MockClock, autojump 0)."""
    if scenario.standalone is not None:
        raise ValueError(f"{scenario.name} runs on the real clock: use run_standalone")
    with contextlib.ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if scenario.tmpfs_size is not None:
            disk = stack.enter_context(small_tmpfs(workdir / f"disk-{scenario.name}",
                                                   scenario.tmpfs_size))
            overrides["spool_path"] = disk / f"{scenario.name}-{seed}.sqlite"
        rig = Rig(scenario.name, seed, workdir, emulator_host,
                  poll_interval_s=scenario.poll_interval_s,
                  spool_max_bytes=scenario.spool_max_bytes, sim_soc_pct=scenario.sim_soc_pct,
                  crash=scenario.crash, crash_times=scenario.crash_times,
                  settings_overrides=overrides)
        result = await run_rig(rig, scenario.script, scenario.checks)
    if scenario.note:
        result.notes.append(scenario.note)
    return result


def run_standalone(scenario: Scenario, emulator_host: str, workdir: Path, seed: int) -> Result:
    """Run a real-clock scenario (synchronous, outside any Trio run)."""
    assert scenario.standalone is not None
    result = scenario.standalone(emulator_host, workdir, seed)
    if scenario.note:
        result.notes.append(scenario.note)
    return result


async def _no_script(rig: Rig) -> None:
    raise AssertionError("a standalone scenario has no virtual-time script")


def _no_checks(rig: Rig) -> None:
    raise AssertionError("a standalone scenario checks its own result")


# ---- helpers --------------------------------------------------------------------------------


def _telemetry_gap_s(rig: Rig) -> float:
    """Largest gap between consecutive delivered telemetry timestamps (the poll's continuity)."""
    ts = sorted(rig.telemetry_ts)
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


async def _steady(rig: Rig, seconds: float) -> None:
    await trio.sleep(seconds)


async def _recovered(rig: Rig, end: float, steady_s: float) -> None:
    """The fault ends at ``end``: mark the recovery, wait for the spool to drain, then run
    ``steady_s`` more seconds undisturbed (what the checks judge the aftermath on)."""
    await trio.sleep_until(end)
    rig.mark_recovered(end)
    await rig.wait_drained()
    await _steady(rig, steady_s)


# ---- cloud cuts -----------------------------------------------------------------------------


def cloud_cut(minutes: float) -> Script:
    async def script(rig: Rig) -> None:
        await _steady(rig, 30)
        _, end = rig.cut_cloud(minutes * 60)
        await _recovered(rig, end, steady_s=30)

    return script


def cut_checks(minutes: float, *, expect_drops: bool = False) -> Callable[[Rig], None]:
    def checks(rig: Rig) -> None:
        r = rig.result
        rig.standard_checks(expect_drops=expect_drops,
                            drain_within_s=90 + 0.1 * minutes * 60)
        backlog = minutes * 60 / rig.poll_interval_s
        r.check("the cut held the backlog on disk",
                r.peak_spool_rows >= 0.9 * backlog or expect_drops,
                f"peak spool {r.peak_spool_rows} rows < 90 % of {backlog:.0f}")
        r.check("the cut was felt", rig.faults.failed > 0, "no request failed")
        r.check("polling went on", _telemetry_gap_s(rig) <= 2 * rig.poll_interval_s + 1,
                f"telemetry gap {_telemetry_gap_s(rig):.1f} s")

    return checks


def flapping(up_s: float, down_s: float, hours: float) -> Script:
    async def script(rig: Rig) -> None:
        await _steady(rig, 30)
        start = trio.current_time()
        end = start + hours * 3600
        t = start
        while t < end:
            rig.faults.cut(t, min(t + down_s, end))
            t += down_s + up_s
        await _recovered(rig, end, steady_s=60)

    return script


def flapping_checks(rig: Rig) -> None:
    r = rig.result
    rig.standard_checks(drain_within_s=120)
    r.check("polling went on", _telemetry_gap_s(rig) <= 2 * rig.poll_interval_s + 1,
            f"telemetry gap {_telemetry_gap_s(rig):.1f} s")
    r.notes.append(f"{rig.faults.failed} requests failed, {rig.faults.forwarded} forwarded")


async def storm_503(rig: Rig) -> None:
    """A burst of 503 answers (with Retry-After) to every request, publishes and pulls alike."""
    await _steady(rig, 30)
    count = rig.rng.randint(150, 250)
    rig.storm_count = count
    rig.faults.storm(503, count, "2")
    while rig.faults.storms:
        await trio.sleep(1)
    rig.mark_recovered()
    await rig.wait_drained()
    await _steady(rig, 30)


def storm_checks(rig: Rig) -> None:
    r = rig.result
    rig.standard_checks(drain_within_s=120)
    got = rig.faults.status_counts.get(503, 0)
    r.check("every 503 was answered", got == rig.storm_count, f"{got} of {rig.storm_count}")
    r.notes.append(f"{rig.storm_count} consecutive 503 answers with Retry-After: 2")


async def device_lost_during_cut(rig: Rig) -> None:
    """Cloud cut for 10 min; inside it the device drops the connection three times and then
    stops answering for 25 s."""
    await _steady(rig, 30)
    _, end = rig.cut_cloud(10 * 60)
    for _ in range(3):
        await trio.sleep(rig.rng.uniform(30, 90))
        rig.sim.drop_connections()
    await trio.sleep(rig.rng.uniform(10, 30))
    rig.sim.faults.silent = True
    rig.hb_allowance_s = 25.0
    await trio.sleep(rig.hb_allowance_s)
    rig.sim.faults.silent = False
    await _recovered(rig, end, steady_s=30)


def device_lost_checks(rig: Rig) -> None:
    r = rig.result
    wd = rig.site.config.heartbeat
    rig.standard_checks(hb_limit_s=rig.hb_allowance_s + wd.interval_s + request_timeout_s(rig),
                        drain_within_s=150)
    names = [e["name"] for e in rig.delivered_events]
    r.check("stale data blocked and cleared, events delivered after the cut",
            names.count("SAFETY_BLOCK") >= 1
            and names.count("SAFETY_BLOCK") == names.count("SAFETY_CLEAR"),
            f"events: {names}")
    r.notes.append(f"device silent {rig.hb_allowance_s:g} s: heartbeat limit raised by that; "
                   f"events delivered: {', '.join(names) or 'none'}")


async def device_busy_then_slow(rig: Rig) -> None:
    """Busy (exception 0x06) for 15 s, then replies delayed 3 s for 2 min, then 8 s for 1 min
    (Huawei documents replies up to 10 s)."""
    await _steady(rig, 30)
    rig.sim.faults.busy = True
    rig.hb_allowance_s = 15.0
    await trio.sleep(rig.hb_allowance_s)
    rig.sim.faults.busy = False
    await _steady(rig, 30)
    for delay_s, seconds in ((3.0, 120), (8.0, 60)):
        start = trio.current_time()
        rig.sim.faults.delay_s = delay_s
        await trio.sleep(seconds)
        rig.slow_phases.append((start, trio.current_time() + 2 * delay_s, delay_s))
    rig.sim.faults.delay_s = 0.0
    await _steady(rig, 60)


def busy_checks(rig: Rig) -> None:
    r = rig.result
    wd = rig.site.config.heartbeat
    rig.standard_checks(hb_limit_s=rig.hb_allowance_s + wd.interval_s + request_timeout_s(rig))
    beats = rig.heartbeat_times()
    worst_by_delay = []
    for start, end, delay_s in rig.slow_phases:
        gaps = [b - a for a, b in itertools.pairwise(beats) if start <= b <= end]
        worst = max(gaps, default=0.0)
        worst_by_delay.append(f"{worst:.1f} s at {delay_s:g} s replies")
        # one serialized connection: a beat may wait for the reply in flight, then its own
        limit = wd.interval_s + 2 * delay_s
        r.check(f"replies {delay_s:g} s late: heartbeat gap <= interval + 2 replies",
                worst <= limit, f"{worst:.1f} s > {limit:g} s")
    names = [e["name"] for e in rig.delivered_events]
    r.notes.append("busy 15 s (heartbeat limit raised by that); worst heartbeat gap "
                   + ", ".join(worst_by_delay) + f"; events: {Counter(names)}")


async def command_expires_during_cut(rig: Rig) -> None:
    """The operator publishes a 2-minute discharge command while the site's link is cut for
    10 minutes: when the link returns the command is pulled, expired."""
    await _steady(rig, 20)
    _, end = rig.cut_cloud(10 * 60)
    await trio.sleep(rig.rng.uniform(5, 60))
    rig.command_id = await rig.publish_command("discharge", 3000.0, ttl_s=120)
    await _recovered(rig, end, steady_s=60)


def expired_checks(rig: Rig) -> None:
    r = rig.result
    rig.standard_checks(drain_within_s=150)
    results = [e for e in rig.delivered_events
               if e.get("body", {}).get("command_id") == rig.command_id]
    names = [e["name"] for e in results]
    r.check("the expired command was rejected, and that was reported",
            names == ["COMMAND_REJECTED"] and "expired" in results[0]["body"]["reason"],
            f"events for the command: {names}")
    mode_tag = rig.sim.profile.dispatch.mode_tag
    forced = [w for w in rig.sim.write_log if w.tag == mode_tag and int(w.value) != 0]
    r.check("never applied late", not forced, f"forcing writes: {forced[:3]}")
    if results:
        r.notes.append(f"rejected: {results[0]['body']['reason']}")


def budget_checks(rig: Rig) -> None:
    r = rig.result
    rig.standard_checks(expect_drops=True, drain_within_s=300)
    r.check("the budget dropped telemetry, with gap records", r.dropped > 0 and r.gap_records > 0,
            f"dropped {r.dropped}, gap records {r.gap_records}")
    r.check("the spool stayed near its budget", r.peak_spool_bytes <= 1.05 * 1_000_000,
            f"peak {r.peak_spool_bytes} bytes")
    blocks = [e for e in rig.delivered_events if e["name"] == "SAFETY_BLOCK"]
    r.check("safety events survived the budget", len(blocks) >= 1,
            "no SAFETY_BLOCK delivered (SOC should cross 98 % during the cut)")


# ---- SOC crossing its limit during a cut ------------------------------------------------------


async def soc_high_during_cut(rig: Rig) -> None:
    """Forced charge (sent through Pub/Sub) from 97 %; the cloud is cut; SOC crosses 98 %."""
    await _steady(rig, 10)
    await rig.publish_command("charge", 5000.0, ttl_s=3600)
    with trio.fail_after(150):  # a pull lost in flight is redelivered after its 60 s deadline
        while rig.sim.state().forced_mode != 1:
            await trio.sleep(0.5)
    cut_start, cut_end = rig.cut_cloud(15 * 60)
    limit = rig.site.config.limits.soc_max_pct
    last_below = trio.current_time()
    while True:  # sample the register the gateway reads, 20 times per poll period
        soc = rig.sim.values()["soc"]
        now = trio.current_time()
        if soc is not None and soc > limit:
            break
        last_below = now
        await trio.sleep(rig.poll_interval_s / 20)
    rig.soc_crossed_at = last_below  # conservative: latency measured from the last sample below
    await trio.sleep_until(cut_end)
    rig.mark_recovered(cut_end)
    await rig.wait_drained()
    await _steady(rig, 30)
    rig.cut_window = (cut_start, cut_end)


def soc_checks(rig: Rig) -> None:
    r = rig.result
    rig.standard_checks()
    blocks = [e for e in rig.delivered_events
              if e["name"] == "SAFETY_BLOCK" and e["body"].get("rule") == "soc_max"]
    stops = [e for e in rig.delivered_events if e["name"] == "SAFETY_STOP"]
    r.check("SAFETY_BLOCK delivered after the cut", len(blocks) == 1,
            f"{len(blocks)} soc_max SAFETY_BLOCK events delivered")
    r.check("SAFETY_STOP delivered", len(stops) >= 1, "no SAFETY_STOP event")
    mode_tag = rig.sim.profile.dispatch.mode_tag
    stop_writes = [w.at for w in rig.sim.write_log
                   if w.tag == mode_tag and int(w.value) == 0 and w.at >= rig.soc_crossed_at]
    crossed = rig.soc_crossed_at
    if blocks:
        block_at = blocks[0]["ts"] - rig.wall_offset
        r.safety_latency_s = round(block_at - crossed, 3)
        cut0, cut1 = rig.cut_window
        r.check("the block happened during the cut", cut0 <= block_at < cut1,
                f"block at {block_at:.1f}, cut {cut0:.1f}..{cut1:.1f}")
    r.check("safety latency <= one poll period",
            r.safety_latency_s is not None and r.safety_latency_s <= rig.poll_interval_s,
            f"latency {r.safety_latency_s} s")
    stop_latency = None if not stop_writes else stop_writes[0] - crossed
    r.notes.append(f"forced charge stopped on the device {stop_latency:.3f} s after the crossing"
                   if stop_latency is not None else "no stop write seen")
    r.check("forced command stopped on the device",
            stop_latency is not None and stop_latency <= rig.poll_interval_s
            + request_timeout_s(rig) and rig.sim.state().forced_mode == 0,
            f"stop latency {stop_latency}, forced_mode {rig.sim.state().forced_mode}")


# ---- disk faults ----------------------------------------------------------------------------


def disk_full() -> Scenario:
    """The spool's filesystem (a 16 MiB tmpfs) fills up for 5 minutes. Inside it a charge
    command is accepted from 97 % SOC and SOC crosses 98 %: COMMAND / SAFETY events are emitted
    while nothing can be written. Then the space is freed."""
    seen: dict[str, Any] = {"events": []}
    fault_s = 300.0

    def capture(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") in ("SPOOL_DISK_FAULT", "SPOOL_DISK_RECOVERED",
                                  "DATA_BRANCH_DEGRADED", "SPOOL_WRITE_FAILED"):
            seen["events"].append((event["event"], event.get("condition")))
        return event

    async def script(rig: Rig) -> None:
        config = structlog.get_config()
        structlog.configure(processors=[capture, *config["processors"]])
        try:
            await _script(rig)
        finally:
            structlog.configure(processors=config["processors"])

    async def _script(rig: Rig) -> None:
        await _steady(rig, 20)
        filler = DiskFiller(rig.gw.spool.path.parent)
        filler.fill()
        full_at = trio.current_time()
        await rig.publish_command("charge", 5000.0, ttl_s=3600)
        with trio.fail_after(150):
            while rig.sim.state().forced_mode != 1:
                await trio.sleep(0.5)
        limit = rig.site.config.limits.soc_max_pct
        held_max = running_min = 0
        running_min = 1
        while trio.current_time() < full_at + fault_s:
            status = rig.gw.status()
            held_max = max(held_max, status["spool"]["held"] + status["events_held"])
            running_min = min(running_min, int(status["tree_running"]))
            await trio.sleep(1.0)
        soc = rig.sim.values()["soc"]
        seen.update(held_max=held_max, tree_running=running_min,
                    condition=rig.gw.status()["spool"]["condition"], soc=soc,
                    crossed=soc is not None and soc > limit)
        filler.free()
        rig.mark_recovered()
        await rig.wait_drained()
        await _steady(rig, 30)
        seen["drops"] = rig.gw.spool.stats().drops.get("disk_fault", 0)

    def checks(rig: Rig) -> None:
        r = rig.result
        rig.standard_checks(expect_drops=True)
        names = [e["name"] for e in rig.delivered_events]
        r.check("the gateway never exited", seen.get("tree_running") == 1, "tree stopped")
        r.check("the spool named the condition", seen.get("condition") == "disk_full",
                f"condition {seen.get('condition')}")
        r.check("critical events held during the fault", seen.get("held_max", 0) >= 1,
                f"held at most {seen.get('held_max')}")
        r.check("SOC crossed the limit during the fault", bool(seen.get("crossed")),
                f"soc {seen.get('soc')}")
        r.check("the command's result and the guard's events delivered",
                {"COMMAND_ACCEPTED", "SAFETY_BLOCK", "SAFETY_STOP"} <= set(names),
                f"events delivered: {dict(Counter(names))}")
        r.check("telemetry drops counted with gap records",
                r.dropped > 0 and r.gap_records >= 1 and seen.get("drops") == r.dropped,
                f"dropped {r.dropped} in {r.gap_records} gap records, counted "
                f"{seen.get('drops')}")
        faults = [e for e in seen["events"] if e[0] == "SPOOL_DISK_FAULT"]
        recovered = [e for e in seen["events"] if e[0] == "SPOOL_DISK_RECOVERED"]
        r.check("one SPOOL_DISK_FAULT and one SPOOL_DISK_RECOVERED",
                faults == [("SPOOL_DISK_FAULT", "disk_full")] and len(recovered) == 1,
                f"{seen['events']}")
        r.notes.append(f"disk full for {fault_s:.0f} s; at most {seen.get('held_max')} critical "
                       f"records held; {r.dropped} readings dropped in {r.gap_records} gap "
                       f"record(s); events delivered: {dict(Counter(names))}")

    return Scenario("disk-full", "the spool's filesystem is full for 5 min while a charge "
                    "command is accepted and SOC crosses 98 %, then space is freed", script,
                    checks, sim_soc_pct=97.0, tmpfs_size="16m")


# ---- a crash of each actor -------------------------------------------------------------------

CRASH_TARGETS = ("telemetry", "data/spool", "data/recorder", "data/events", "data/uplink",
                 "data/commands", "status", f"site_{DEVICE}", f"site_{DEVICE}/device_link",
                 f"site_{DEVICE}/safety_guard", f"site_{DEVICE}/watchdog",
                 f"site_{DEVICE}/schedule")


def expected_restarts(target: str) -> dict[str, int]:
    """one_for_one at the top and in the data branch; rest_for_one (link → guard → watchdog →
    schedule) inside a site."""
    if "/" not in target or target.startswith("data/"):
        return {target: 1}
    site, child = target.split("/")
    order = ["device_link", "safety_guard", "watchdog", "schedule"]
    return {f"{site}/{c}": 1 for c in order[order.index(child):]}


def crash_checks(target: str) -> Callable[[Rig], None]:
    def checks(rig: Rig) -> None:
        r = rig.result
        # a site restart reconnects: Huawei's quiet second after connect plus the backoff
        local = "site" in target
        rig.standard_checks(expected_restarts=expected_restarts(target))
        gap = _telemetry_gap_s(rig)
        limit = 2 * rig.poll_interval_s + (5.0 if local else 1.0)
        r.check("polling went on", gap <= limit, f"telemetry gap {gap:.1f} s > {limit:.1f} s")
        r.check("the crash fired", bool(rig.crashed_at), "no crash")

    return checks


def crash_scenario(target: str) -> Scenario:
    slug = (target.replace(f"site_{DEVICE}/", "").replace(f"site_{DEVICE}", "site")
            .removeprefix("data/"))

    async def script(rig: Rig) -> None:
        await _steady(rig, 150)

    return Scenario(f"crash-{slug}", f"crash of `{target}` at a seeded random point 10-60 s "
                    "after it started", script, crash_checks(target), crash=(target, None))


def crash_during_drain(target: str, when: str) -> Scenario:
    """Crash ``target`` while the backlog of a 5-minute cut is being published: the crash fires
    as the first batch after the probe goes out (``when="sending"``) or once Pub/Sub took it but
    before the uplink saw the answer (``"answered"``)."""

    async def script(rig: Rig) -> None:
        await _steady(rig, 30)
        _, end = rig.cut_cloud(5 * 60)
        await trio.sleep_until(end)

        def on_publish(n: int, phase: str) -> None:
            if n == rig.transport.publishes_at_recovery + 2 and phase == when:
                rig.fire_crash()

        rig.transport.publishes_at_recovery = rig.transport.publishes
        rig.transport.on_publish = on_publish
        rig.mark_recovered(end)
        await rig.wait_drained()
        await _steady(rig, 60)

    def checks(rig: Rig) -> None:
        # an uplink that dies after Pub/Sub took its batch never acked it: the batch is sent
        # again (same msg_ids). A spool restart must not cause any re-send.
        rig.standard_checks(expected_restarts=expected_restarts(target), drain_within_s=150,
                            max_duplicates=1000 if target == "data/uplink" else 0)
        rig.result.check("the crash fired mid-drain", bool(rig.crashed_at), "no crash")

    name = target.replace(f"site_{DEVICE}/", "").removeprefix("data/")
    moment = ("while the batch is in flight" if when == "sending"
              else "after Pub/Sub took the batch, before the answer was seen")
    return Scenario(f"crash-{name}-mid-drain", f"crash of `{target}` while the backlog of a "
                    f"5-min cut is published, {moment}", script, checks,
                    crash=(target, math.inf))


def crash_loop_escalates() -> Scenario:
    """The safety guard crashes 4 times in a row, 5 s after each start: past the site
    supervisor's intensity (3 in 60 s) it escalates, and the gateway restarts the whole site."""
    target = f"site_{DEVICE}/safety_guard"

    async def script(rig: Rig) -> None:
        await _steady(rig, 180)

    def checks(rig: Rig) -> None:
        r = rig.result
        # the new site supervisor's children start fresh: their counts are 0 again
        rig.standard_checks(expected_restarts={f"site_{DEVICE}": 1})
        r.check("four crashes fired", len(rig.crashed_at) == 4, f"{len(rig.crashed_at)}")
        gap = _telemetry_gap_s(rig)
        r.check("polling went on", gap <= 2 * rig.poll_interval_s + 5,
                f"telemetry gap {gap:.1f} s")
        r.notes.append(f"crashes at {[round(t, 1) for t in rig.crashed_at]} s")

    return Scenario("crash-loop-escalates", f"`{target}` crashes 4 times in a row, 5 s after "
                    "each start: the site supervisor escalates, the gateway restarts the site",
                    script, checks, crash=(target, 5.0), crash_times=4)


# ---- hostile commands --------------------------------------------------------------------------


def _command_json(rig: Rig, command_id: str, **fields: object) -> str:
    """A command's JSON text with ``fields`` spliced in as raw JSON text (so a 400-digit
    integer or NaN goes on the wire as written)."""
    now = rig.wall()
    values: dict[str, object] = {"id": json.dumps(command_id), "site_id": json.dumps(SITE),
                                 "device_id": json.dumps(DEVICE), "action": '"discharge"',
                                 "power_w": "2000", "issued_at": f"{now:.3f}",
                                 "expires_at": f"{now + 600:.3f}"}
    values.update(fields)
    return "{" + ",".join(f'"{k}":{v}' for k, v in values.items()) + "}"


HOSTILE_COMMANDS: dict[str, tuple[str, Callable[[Rig, str], bytes]]] = {
    # name: (the rejection code expected, a builder of the message data from (rig, id))
    "power-6MB-string": ("too_large", lambda rig, i: _command_json(
        rig, i, power_w='"' + "9" * 6_000_000 + '"').encode()),
    "nested-30000-deep": ("too_deep", lambda rig, i: (
        '{"id":"' + i + '","x":' + "[" * 30_000 + "]" * 30_000 + "}").encode()),
    "nested-1M-deep": ("too_large", lambda rig, i: b"[" * 1_000_000 + b"]" * 1_000_000),
    "power-400-digits": ("malformed", lambda rig, i: _command_json(
        rig, i, power_w="9" * 400).encode()),
    "expiry-400-digits": ("malformed", lambda rig, i: _command_json(
        rig, i, expires_at="9" * 400).encode()),
    "power-5000-digits": ("malformed", lambda rig, i: _command_json(
        rig, i, power_w="9" * 5000).encode()),
    "power-nan": ("malformed", lambda rig, i: _command_json(rig, i, power_w="NaN").encode()),
    "not-utf8": ("malformed", lambda rig, i: b"\xff\xfe" + _command_json(rig, i).encode()),
    "lone-surrogate-id": ("malformed", lambda rig, i: _command_json(
        rig, i, device_id='"\\ud800"').encode()),
    "id-60000-chars": ("malformed", lambda rig, i: _command_json(
        rig, "x" * 60_000).encode()),
    "not-an-object": ("malformed", lambda rig, i: b"[1, 2, 3]"),
    "expires-year-9999": ("ttl_too_long", lambda rig, i: _command_json(
        rig, i, expires_at='"9999-12-31T00:00:00Z"').encode()),
    "power-0.0001-W": ("below_min_power", lambda rig, i: _command_json(
        rig, i, power_w="0.0001").encode()),
}


@attrs.define
class _Hostile:
    expected: Counter[str] = attrs.field(factory=Counter)
    published: int = 0
    burst: list[str] = attrs.field(factory=list)
    burst_window: tuple[float, float] = (0.0, 0.0)
    stop_id: str = ""
    handler_failures: int = -1
    """As the running commands source published it at the end of the script (-1: none ran)."""


def oversized_command_scenario() -> Scenario:
    """A flood of hostile commands (6 MB fields, 30,000-deep and 1,000,000-deep nesting,
    400- and 5,000-digit integers, NaN, bad UTF-8, lone surrogates, 60,000-character ids,
    expiry in the year 9999, 0.0001 W) — every kind twice, in a seeded order — then 20
    alternating charge/discharge commands 0.5 s apart and a stop, all while the gateway runs
    normally with a discharge applied."""
    state = _Hostile()

    async def script(rig: Rig) -> None:
        await _steady(rig, 20)
        await rig.publish_command("discharge", 2000.0, ttl_s=900)
        with trio.fail_after(150):
            while rig.sim.state().forced_mode != 2:
                await trio.sleep(0.5)
        kinds = list(HOSTILE_COMMANDS) * 2
        rig.rng.shuffle(kinds)
        for n, kind in enumerate(kinds):
            code, build = HOSTILE_COMMANDS[kind]
            await rig.publish_raw(build(rig, f"hostile-{n}"))
            state.expected[code] += 1
            state.published += 1
            await trio.sleep(rig.rng.uniform(0.2, 2.0))
        await _steady(rig, 20)
        start = trio.current_time()
        for n in range(20):  # a sender that flips direction every half second
            action = "charge" if n % 2 else "discharge"
            state.burst.append(await rig.publish_command(action, 1500.0, ttl_s=300))
            await trio.sleep(0.5)
        state.stop_id = await rig.publish_command("stop", 0.0, ttl_s=300)
        await _steady(rig, 30)
        state.burst_window = (start, trio.current_time())
        await _steady(rig, 30)
        source = rig.gw.commands_status.value  # what the running commands source published
        state.handler_failures = -1 if source is None else source.failed

    def checks(rig: Rig) -> None:
        r = rig.result
        rig.standard_checks()
        events = rig.delivered_events
        results = [e for e in events if e["name"] in ("COMMAND_REJECTED", "COMMAND_ACCEPTED")]
        hostile = Counter(e["body"].get("code") for e in results
                          if str(e["body"].get("command_id") or "").startswith("hostile-")
                          or e["body"].get("command_id") is None)
        r.check("every hostile command rejected once, with its reason",
                hostile == state.expected, f"got {dict(hostile)}, expected {dict(state.expected)}")
        failures = state.handler_failures
        r.check("every message acked, none failed the handler", failures == 0,
                f"{failures} handler failures (redelivered)")
        biggest = max((len(json.dumps(e, separators=(",", ":"))) for e in events), default=0)
        r.check("every event bounded (<= 64 KiB)", biggest <= 65_536 + 1024,
                f"largest event {biggest} bytes")
        burst = [e for e in results if e["body"].get("command_id") in state.burst]
        limited = [e for e in burst if e["body"].get("code") == "rate_limited"]
        applied = [e for e in burst if e["name"] == "COMMAND_ACCEPTED"]
        mode_tag = rig.sim.profile.dispatch.mode_tag
        t0, t1 = state.burst_window
        flips = [w for w in rig.sim.write_log
                 if w.tag == mode_tag and int(w.value) != 0 and t0 <= w.at <= t1]
        allowed = math.ceil((t1 - t0) / rig.gw.settings.command_min_interval_s) + 1
        r.check("the direction flood was rate-limited",
                len(burst) == 20 and len(limited) >= 10 and len(flips) <= allowed,
                f"{len(burst)} results, {len(limited)} rate_limited, {len(flips)} forcing "
                f"writes (allowed {allowed})")
        stops = [e for e in results if e["body"].get("command_id") == state.stop_id]
        r.check("stop is never rate-limited",
                [e["name"] for e in stops] == ["COMMAND_ACCEPTED"]
                and rig.sim.state().forced_mode == 0,
                f"stop results {[e['body'].get('code') for e in stops]}, forced_mode "
                f"{rig.sim.state().forced_mode}")
        r.notes.append(f"{state.published} hostile messages ({dict(state.expected)}); burst of "
                       f"20: {len(applied)} applied, {len(limited)} rate_limited; largest event "
                       f"{biggest} bytes")

    return Scenario("oversized-command", "a flood of hostile commands (6 MB fields, deep "
                    "nesting, 400/5,000-digit integers, bad encodings, year-9999 expiry, "
                    "0.0001 W) and a direction flip every 0.5 s, during normal operation",
                    script, checks)


# ---- registry -------------------------------------------------------------------------------


# ---- a local schedule through a day-long cut (issue 15) -----------------------------------------

_SCHEDULE_SLOTS: tuple[tuple[float, float, str, float | None, float | None], ...] = (
    # hours after the schedule arrives; the simulator's day starts at 12:00, so +6 h is 18:00
    (0.5, 1.5, "charge", 2000.0, None),
    (3.0, 5.0, "discharge", 1500.0, None),
    (5.5, 6.0, "stop", None, None),
    (6.0, 8.5, "peak_shave", None, 2000.0),  # 18:00-20:30, the simulated evening peak
    (10.0, 12.0, "charge", 1500.0, None),
    (14.0, 16.0, "discharge", 1500.0, None),
    (20.0, 23.5, "export_limit", None, 1500.0),  # 08:00-11:30, morning PV
)
_SCHEDULE_HOURS = 24.0
_CONTROL_STEP_S = 10.0


def schedule_through_cut() -> Scenario:
    """A 24-hour schedule (charge, discharge, stop, peak_shave, export_limit slots) arrives on
    the commands subscription; at once the cloud is cut for 24 hours. The device follows every
    boundary from the stored plan; peak_shave holds the import limit; at the end the device
    returns to auto and everything reaches Pub/Sub after the cut."""
    seen: dict[str, object] = {}

    async def sample(rig: Rig, samples: list[tuple[float, float, float]]) -> None:
        while True:
            state = rig.sim.state()
            samples.append((trio.current_time(), state.meter_power_w,
                            state.load_power_w - state.pv_power_w))
            await trio.sleep(rig.poll_interval_s)

    async def script(rig: Rig) -> None:
        rig.sim.inverter.settings["working_mode"] = 1  # the battery moves only when forced
        await _steady(rig, 20)
        t0, w0 = trio.current_time(), rig.wall()
        h = 3600.0
        body = {"type": "schedule", "schedule_id": f"sched-{rig.seed}", "site_id": SITE,
                "device_id": DEVICE, "valid_until": w0 + _SCHEDULE_HOURS * h,
                "slots": [{"start": w0 + a * h, "end": w0 + b * h, "action": act,
                           **({"power_w": p} if p is not None else {}),
                           **({"limit_w": lim} if lim is not None else {})}
                          for a, b, act, p, lim in _SCHEDULE_SLOTS]}
        await rig.publish_raw(json.dumps(body).encode(), {"site_id": SITE, "device_id": DEVICE})
        with trio.move_on_after(120):
            while rig.gw.schedule_book.get(DEVICE) is None:
                await trio.sleep(1)
        seen["t0"] = t0
        seen["accepted_at"] = trio.current_time()
        _, end = rig.cut_cloud(_SCHEDULE_HOURS * h + 600)
        samples: list[tuple[float, float, float]] = []
        seen["samples"] = samples
        assert rig._nursery is not None
        rig._nursery.start_soon(sample, rig, samples)
        await _recovered(rig, end, steady_s=60)

    def checks(rig: Rig) -> None:
        r = rig.result
        poll = rig.poll_interval_s
        rig.standard_checks(drain_within_s=900)
        names = [e["name"] for e in rig.delivered_events]
        r.check("the schedule was accepted (schedule_result) before the cut",
                "SCHEDULE_ACCEPTED" in names and "t0" in seen,
                f"schedule events: {[n for n in names if n.startswith('SCHEDULE_')][:5]}")
        if "t0" not in seen:
            return
        t0 = float(seen["t0"])  # type: ignore[arg-type]
        mode_tag = rig.sim.profile.dispatch.mode_tag
        writes = [(w.at, int(w.value)) for w in rig.sim.write_log if w.tag == mode_tag]
        expect = {"charge": 1, "discharge": 2, "stop": 0}
        late: list[str] = []
        boundaries = 0
        previous_end = None
        for a, b, act, _, _ in _SCHEDULE_SLOTS:
            starts = [] if act not in expect else [(t0 + a * 3600, expect[act], act)]
            if previous_end is not None and previous_end < a * 3600 + t0:
                starts.append((previous_end, 0, "gap (auto)"))
            previous_end = t0 + b * 3600
            for at, value, what in starts:
                boundaries += 1
                first = next((t for t, v in writes if t >= at - 1e-3 and v == value), None)
                if first is None or first - at > poll:
                    late.append(f"{what} at +{(at - t0) / 3600:g} h: "
                                f"{'never' if first is None else f'{first - at:.1f} s'}")
        expiry = t0 + _SCHEDULE_HOURS * 3600
        first = next((t for t, v in writes if t >= expiry - 1e-3 and v == 0), None)
        if first is None or first - expiry > poll:
            late.append("valid_until (auto)")
        r.check(f"every boundary on the device within one poll ({poll:g} s) through the cut",
                not late and boundaries >= 7, "; ".join(late[:4]))
        r.check("SCHEDULE_EXPIRED delivered after the cut", "SCHEDULE_EXPIRED" in names,
                "not delivered")
        samples = seen.get("samples") or []
        a, b, _, _, limit = _SCHEDULE_SLOTS[3]
        assert limit is not None
        step_response_s = _CONTROL_STEP_S + 2 * poll
        in_slot = [(t, m, n) for t, m, n in samples  # type: ignore[misc]
                   if t0 + a * 3600 + step_response_s <= t < t0 + b * 3600]
        longest = 0.0
        since = None
        for t, meter, _ in in_slot:
            if -meter > limit + 1:
                since = t if since is None else since
                longest = max(longest, t - since + poll)
            else:
                since = None
        peak = max((n for _, _, n in in_slot), default=0.0)
        r.check("peak_shave kept grid import under its limit but for the step response",
                peak > limit + 500 and longest <= step_response_s,
                f"unshaved peak {peak:.0f} W over limit {limit:g} W; longest over "
                f"{longest:.0f} s (step response {step_response_s:g} s)")
        r.notes.append(f"{boundaries + 1} boundaries checked; unshaved evening peak "
                       f"{peak:.0f} W against limit {limit:g} W; longest time over the limit "
                       f"{longest:.0f} s")

    return Scenario("schedule-through-24h-cut", "a 24-hour schedule (charge, discharge, stop, "
                    "peak_shave, export_limit) arrives, then the cloud is cut for 24 hours",
                    script, checks, ci=False, poll_interval_s=10.0,
                    long_reason="8,640 polls, a controller step every 10 s",
                    note="poll interval 10 s to keep the run to minutes: 'within one poll' "
                         "means within 10 s; the battery moves only when forced (working mode "
                         "fixed) so every change on the device is the gateway's")


def schedule_rejected_scenario() -> Scenario:
    """A schedule with overlapping slots and a valid_until in the past comes down the commands
    subscription: one SCHEDULE_REJECTED naming both, nothing stored, nothing forced."""

    async def script(rig: Rig) -> None:
        await _steady(rig, 10)
        now = rig.wall()
        body = {"type": "schedule", "schedule_id": "bad-plan", "site_id": SITE,
                "device_id": DEVICE, "valid_until": now - 60,
                "slots": [{"start": now - 600, "end": now + 600, "action": "charge",
                           "power_w": 2000},
                          {"start": now + 300, "end": now + 900, "action": "discharge",
                           "power_w": 2000}]}
        await rig.publish_raw(json.dumps(body).encode(), {"site_id": SITE, "device_id": DEVICE})
        await _steady(rig, 30)

    def checks(rig: Rig) -> None:
        r = rig.result
        rig.standard_checks()
        results = [e for e in rig.delivered_events
                   if e.get("body", {}).get("schedule_id") == "bad-plan"]
        names = [e["name"] for e in results]
        errors = results[0]["body"].get("errors", {}) if results else {}
        r.check("rejected once, with every reason",
                names == ["SCHEDULE_REJECTED"] and "past" in errors.get("valid_until", "")
                and "overlaps" in errors.get("slots[1].start", ""),
                f"events {names}, errors {errors}")
        r.check("nothing stored", rig.gw.schedule_book.get(DEVICE) is None, "stored")
        mode_tag = rig.sim.profile.dispatch.mode_tag
        forced = [w for w in rig.sim.write_log if w.tag == mode_tag and int(w.value) != 0]
        r.check("nothing forced", not forced, f"forcing writes: {forced[:3]}")

    return Scenario("schedule-rejected", "a schedule with overlapping slots and a past "
                    "valid_until arrives on the commands subscription", script, checks)


def _scenarios() -> list[Scenario]:
    out = [
        Scenario("cut-5min", "cloud cut for 5 minutes at 1 Hz", cloud_cut(5), cut_checks(5)),
        Scenario("cut-30min", "cloud cut for 30 minutes at 1 Hz", cloud_cut(30),
                 cut_checks(30)),
        Scenario("soc-high-during-cut", "forced charge from 97 %, cloud cut, SOC crosses 98 %",
                 soc_high_during_cut, soc_checks, sim_soc_pct=97.0),
    ]
    out += [crash_scenario(t) for t in CRASH_TARGETS]
    out += [crash_loop_escalates(), crash_during_drain("data/spool", "sending"),
            crash_during_drain("data/uplink", "answered")]
    out += [
        disk_full(),
        Scenario("command-expires-during-cut", "a 2-min discharge command published while the "
                 "site is cut off for 10 min", command_expires_during_cut, expired_checks),
        oversized_command_scenario(),
        schedule_rejected_scenario(),
        Scenario("pubsub-503-storm", "150-250 consecutive 503 answers with Retry-After",
                 storm_503, storm_checks),
        Scenario("device-lost-during-cut", "10-min cloud cut; inside it the device drops the "
                 "connection 3 times, then is silent for 25 s", device_lost_during_cut,
                 device_lost_checks),
        Scenario("device-busy-slow", "device busy (0x06) for 15 s, then replies 3 s late for "
                 "2 min and 8 s late for 1 min", device_busy_then_slow, busy_checks),
        Scenario("flapping-2h", "link flapping 30 s up / 30 s down for 2 hours at 1 Hz",
                 flapping(30, 30, 2), flapping_checks, ci=False,
                 long_reason="7,200 polls: about 2 minutes of real time"),
        Scenario("cut-72h", "cloud cut for 72 hours with the default disk budget (1 GiB)",
                 cloud_cut(72 * 60), cut_checks(72 * 60), ci=False, poll_interval_s=10.0,
                 long_reason="26,000 polls and 26,000 heartbeats",
                 note="poll interval 10 s instead of 1 s to keep the run to minutes; the "
                      "heartbeat still every 10 s"),
        Scenario("cut-24h-small-budget", "cloud cut for 24 hours with SPOOL_MAX_BYTES=1 MB: "
                 "the oldest telemetry is dropped with gap records, events never",
                 cloud_cut(24 * 60), budget_checks, ci=False, poll_interval_s=10.0,
                 spool_max_bytes=1_000_000, sim_soc_pct=90.0,
                 long_reason="8,600 polls and a 1 MB budget overflowing",
                 note="poll interval 10 s; SOC starts at 90 % so that PV charging crosses the "
                      "98 % limit during the cut (critical events that must survive the budget)"),
        schedule_through_cut(),
        Scenario("sigkill-restart", "SIGKILL of the real `bessai-run --simulator` process at "
                 "random points, 6 times, then restart and drain (real clock, real processes)",
                 _no_script, _no_checks, ci=False, standalone=_sigkill,
                 long_reason="real processes on the real clock: about a minute"),
    ]
    return out


def _sigkill(emulator_host: str, workdir: Path, seed: int) -> Result:
    from bench.chaos.sigkill import run_sigkill

    return run_sigkill(emulator_host, workdir, seed)


SCENARIOS: list[Scenario] = _scenarios()


def get(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no scenario {name!r}; known: {', '.join(s.name for s in SCENARIOS)}")
