"""The chaos-net section of bench/CHAOS.md: one row per scenario, merged by name.

Runs can be partial (``--only``), parallel (several lanes) or short (``--scale``): each writes
only its own rows, under an exclusive lock, and keeps every other row. `make chaos` rewrites the
file above the section's marker and keeps the section (bench/chaos/__main__.py).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import re
from pathlib import Path

from bench._machine import cell
from bench.chaos_net import MARKER
from bench.chaos_net.netns import LOCK_DIR
from bench.chaos_net.scenarios import SCENARIOS, NetResult

HEAD = ("| scenario | cut | real s | produced | delivered | dup | on disk at stop | lost "
        "| max HB gap s, link up (over the cut) | safety reaction | link down reported s "
        "| resumed s | drain s | peak spool rows / KiB | peak RSS MiB (+growth) "
        "| /status worst s | finished (UTC), load avg at the cut 1/5/15 min | verdict |")

METHOD = """## Real network stack (`make chaos-net`)

Produced by `make chaos-net` (`python -m bench.chaos_net`, root needed); the CI share
(`net-ci-*`) runs in `make test` as `tests/chaos_net` where namespaces are allowed. Three real
processes on the real clock, each in a network namespace of its own, joined by veth pairs
(10.231.k.0/24, nothing routed outside them): the simulator (`python -m bessai.sim`, the
inverter, Modbus TCP), Google's Pub/Sub emulator (the cloud) and `bessai-run` (the gateway,
1 Hz polling, Huawei profile: heartbeat every 10 s, request timeout 10 s, lease 60 s). The
harness cuts links in the kernel: *down* = the gateway's interface set down (sends fail at
once); *black-holed* = an nftables drop rule on the link's input in both namespaces (packets
vanish, the sender sees nothing: no RST, no ICMP). It reads /status over a management link that
is never cut and pulls the topic back over another. Rows from separate runs are merged by name;
a scenario runs alone in its lane, lanes may run side by side. Baseline: the virtual-time rows
`cut-5min` and `cut-30min` above (the same cloud cut through the in-process fault transport).

Columns as above, and: *max HB gap* = largest interval between heartbeat writes as the
simulator logged them, counting only gaps while the inverter link was up (limit: interval 10 s
+ one request timeout 10 s); in brackets the gap spanning an inverter cut; *safety reaction* =
after an inverter cut with a discharge forced: when the gateway's guard blocked (stale data,
3 s), what ended the forcing on the device (its lease, its comm-loss watchdog, or the gateway's
stop once the link was back) and how long after the last write the device heard (must be within
the 60 s lease); *link down reported* = cut → DEVICE_LINK_DOWN (inverter)
or LINK_DOWN link=pubsub (cloud: after 3 failed publishes; "-" = not within the cut, the link
stayed *degraded*) in the gateway's log; *resumed* = inverter link back → first heartbeat the
device saw (limit: one backoff cap 60 s + connect timeout 10 s + post-connect delay 1 s, + 5 s);
cloud link back → next successful publish, and *commands* = a `bessai command stop` sent after
the drain → COMMAND_ACCEPTED; *drain* = cloud back → oldest
pending row younger than 3 polls; *peak RSS* = the gateway process, *growth* = peak minus RSS
just before the cut; */status worst* = slowest /status answer during the run (a hang would show
here: probes time out at 5 s). The machine is shared with other engineers' test runs while these
rows are measured: the load average at the cut (1/5/15 min; for CPU starvation, at the end of
the load) is in each row; that load is itself CPU pressure on the gateway."""


def row(nr: NetResult, scale: float) -> str:
    r, f = nr.result, nr.figures
    verdict = "PASS" if r.passed else "**FAIL**: " + "; ".join(
        f"{c.name} ({c.detail})" for c in r.failures())
    hb = cell(r.max_heartbeat_gap_s) + (f" ({cell(f.hb_gap_over_cut_s)})"
                                        if f.hb_gap_over_cut_s is not None else "")
    safety = "-"
    if f.forced_end:
        safety = (f"{f.forced_end}, {cell(f.forced_after_last_write_s)} s after the last write "
                  "the device heard")
    cut = f.cut + (f" (scale {scale:g})" if scale != 1 else "")
    down, back = [], []
    if "cloud" in f.cut:
        down.append(f"cloud {cell(f.cloud_down_reported_s)}")
        back.append(f"cloud {cell(f.cloud_up_s)}, commands {cell(f.commands_resumed_s)}")
    if "inverter" in f.cut:
        down.append(f"inverter {cell(f.link_down_reported_s)}")
        back.append(f"inverter {cell(f.resumed_s)}")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")  # wall-clock: the run's date
    return (f"| {r.name} | {cut} | {cell(r.real_s)} | {r.produced} | {r.delivered} "
            f"| {r.duplicates} | {r.pending_at_stop} | {r.lost} | {hb} | {safety} "
            f"| {'; '.join(down) or '-'} | {'; '.join(back) or '-'} | {cell(r.drain_s)} "
            f"| {r.peak_spool_rows} / {r.peak_spool_bytes // 1024} "
            f"| {cell(r.peak_rss_mb)} (+{cell(r.rss_growth_mb)}) | {cell(f.status_worst_s)} "
            f"| {now}, {f.load_avg or '-'} | {verdict} |")


def note(nr: NetResult) -> str:
    s, r = nr.scenario, nr.result
    extra = "; ".join(r.notes)
    return f"- **{s.name}** — {s.what}." + (f" {extra}." if extra else "")


def _name(line: str) -> str | None:
    m = re.match(r"^\| (net-[\w-]+) \|", line) or re.match(r"^- \*\*(net-[\w-]+)\*\*", line)
    return None if m is None else m.group(1)


RUNS_KEPT = 12


def run_line(names: list[str], scale: float, started: str, load_start: str, load_end: str,
             machine: str) -> str:
    """One line of the section's run log: what ran, when, where, under which load."""
    return (f"- run {started} UTC on {machine}: {', '.join(names)}"
            + (f" (scale {scale:g})" if scale != 1 else "")
            + f"; load average 1/5/15 min at the start {load_start}, at the end {load_end}")


def merge(text: str, results: list[NetResult], scale: float,
          runs: list[str] | None = None) -> str:
    """``text`` (CHAOS.md) with this run's rows and notes in the chaos-net section, and
    ``runs`` appended to its run log (the last `RUNS_KEPT` are kept)."""
    head, _, section = text.partition(MARKER)
    run_log = [line for line in section.splitlines() if line.startswith("- run ")]
    run_log = (run_log + list(runs or []))[-RUNS_KEPT:]
    rows = {n: line for line in section.splitlines()
            if line.startswith("| net-") and (n := _name(line))}
    notes = {n: line for line in section.splitlines()
             if line.startswith("- **net-") and (n := _name(line))}
    for nr in results:
        rows[nr.result.name] = row(nr, scale)
        notes[nr.result.name] = note(nr)
    order = [s.name for s in SCENARIOS]
    names = sorted(rows, key=lambda n: (order.index(n) if n in order else len(order), n))
    out = [head.rstrip("\n"), "", MARKER, "", METHOD, "", HEAD,
           "|" + "|".join("---" for _ in range(HEAD.count("|") - 1)) + "|"]
    out += [rows[n] for n in names]
    out += ["", "### Scenarios and notes", ""]
    out += [notes[n] for n in names if n in notes]
    if run_log:
        out += ["", "### Runs", ""]
        out += run_log
    return "\n".join(out) + "\n"


def write(path: Path, results: list[NetResult], scale: float, run: str | None = None) -> None:
    """Merge this run's rows into ``path`` under an exclusive lock (parallel lanes)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_DIR / "chaos-md.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else "# Chaos suite\n"
        path.write_text(merge(text, results, scale, [run] if run else None))

