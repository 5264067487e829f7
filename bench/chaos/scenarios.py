"""The chaos scenarios: one fault script and one set of pass criteria each, shared by
``python -m bench.chaos`` (all of them, table in bench/CHAOS.md) and tests/chaos (the CI share).

Every scenario is seeded: the gateway's jitter, the simulator's curves, topic names and the
fault script's random choices all come from the seed, and a failure prints it
(`Result.summary`). Re-run one with ``python -m bench.chaos --only NAME --seed N``.

Common criteria (`Rig.standard_checks`): zero loss (every accepted seq delivered, dropped with
a gap record, or still on disk at stop), nothing lost before the spool, no drops unless the
scenario documents them, duplicates only from re-sends, the largest heartbeat gap as the
device saw it <= heartbeat interval + one request timeout, the device never in comm loss,
restart counts exactly as the fault implies, the backlog drained after recovery.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from bench.chaos.rig import DEVICE, Result, Rig, Script, request_timeout_s, run_rig


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
    crash: tuple[str, float] | None = None
    """(actor path, seconds after its start): that actor raises once."""
    long_reason: str = ""
    note: str = ""


async def run_scenario(scenario: Scenario, emulator_host: str, workdir: Path,
                       seed: int) -> Result:
    """Run one scenario inside the current Trio run (its clock: MockClock, autojump 0)."""
    rig = Rig(scenario.name, seed, workdir, emulator_host,
              poll_interval_s=scenario.poll_interval_s,
              spool_max_bytes=scenario.spool_max_bytes, sim_soc_pct=scenario.sim_soc_pct,
              crash=scenario.crash)
    result = await run_rig(rig, scenario.script, scenario.checks)
    if scenario.note:
        result.notes.append(scenario.note)
    return result


# ---- helpers --------------------------------------------------------------------------------


def _telemetry_gap_s(rig: Rig) -> float:
    """Largest gap between consecutive delivered telemetry timestamps (the poll's continuity)."""
    ts = sorted(rig.telemetry_ts)
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


async def _steady(rig: Rig, seconds: float) -> None:
    await trio.sleep(seconds)


# ---- cloud cuts -----------------------------------------------------------------------------


def cloud_cut(minutes: float) -> Script:
    async def script(rig: Rig) -> None:
        await _steady(rig, 30)
        _, end = rig.cut_cloud(minutes * 60)
        await trio.sleep_until(end)
        rig.mark_recovered(end)
        await rig.wait_drained()
        await _steady(rig, 30)

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


# ---- SOC crossing its limit during a cut ------------------------------------------------------


async def soc_high_during_cut(rig: Rig) -> None:
    """Forced charge (sent through Pub/Sub) from 97 %; the cloud is cut; SOC crosses 98 %."""
    await _steady(rig, 10)
    await rig.publish_command("charge", 5000.0, ttl_s=3600)
    with trio.fail_after(60):
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
    mode_tag = rig.sim.inverter.roles.mode_tag
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


# ---- a crash of each actor -------------------------------------------------------------------

CRASH_TARGETS = ("telemetry", "spool", "recorder", "events", "uplink", "commands",
                 f"site_{DEVICE}", f"site_{DEVICE}/device_link", f"site_{DEVICE}/safety_guard",
                 f"site_{DEVICE}/watchdog")


def expected_restarts(target: str) -> dict[str, int]:
    """one_for_one at the top; rest_for_one (link → guard → watchdog) inside a site."""
    if "/" not in target:
        return {target: 1}
    site, child = target.split("/")
    order = ["device_link", "safety_guard", "watchdog"]
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
    slug = target.replace(f"site_{DEVICE}/", "").replace(f"site_{DEVICE}", "site")

    async def script(rig: Rig) -> None:
        await _steady(rig, 150)

    return Scenario(f"crash-{slug}", f"crash of `{target}` 30 s after it started",
                    script, crash_checks(target), crash=(target, 30.0))


# ---- registry -------------------------------------------------------------------------------


def _scenarios() -> list[Scenario]:
    out = [
        Scenario("cut-5min", "cloud cut for 5 minutes at 1 Hz", cloud_cut(5), cut_checks(5)),
        Scenario("cut-30min", "cloud cut for 30 minutes at 1 Hz", cloud_cut(30),
                 cut_checks(30)),
        Scenario("soc-high-during-cut", "forced charge from 97 %, cloud cut, SOC crosses 98 %",
                 soc_high_during_cut, soc_checks, sim_soc_pct=97.0),
    ]
    out += [crash_scenario(t) for t in CRASH_TARGETS]
    return out


SCENARIOS: list[Scenario] = _scenarios()


def get(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no scenario {name!r}; known: {', '.join(s.name for s in SCENARIOS)}")
