"""The chaos-net verdicts: figures read from the simulator's and the gateway's logs, and checks.

The simulator stamps each log line itself (logging's asctime): the heartbeat writes, the client
writes (lease, forced mode), FORCED_MODE_END and COMM_LOSS are what the *device* saw, when it saw
them. The gateway's logfmt lines carry ``ts=``. Cut and restore times are the harness's wall
clock; all three are the same machine's clock.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from bench.chaos.rig import Result
from tests.e2e.procs import Proc, logfmt_ts

if TYPE_CHECKING:
    from bench.chaos_net.scenarios import NetScenario

POLL_INTERVAL_S = 1.0
STATUS_TIMEOUT_S = 5.0
LINK_BACKOFF_CAP_S = 60.0
"""`bessai.control.device_link.RECONNECT_BACKOFF.max_s`: "resumed within one backoff"."""


# ---- figures beyond the virtual-time table --------------------------------------------------


@attrs.define
class NetFigures:
    """What a real-network row shows besides `Result`'s columns."""

    cut: str = ""
    hb_gap_over_cut_s: float | None = None
    """The heartbeat gap that spans an inverter cut (the cut itself)."""
    forced_after_last_write_s: float | None = None
    """Device stayed forced this long after the last write it heard (None: not measured)."""
    forced_end: str = ""
    link_down_reported_s: float | None = None
    """Inverter cut → DEVICE_LINK_DOWN."""
    resumed_s: float | None = None
    """Inverter link back → first heartbeat the device saw."""
    cloud_down_reported_s: float | None = None
    """Cloud cut → LINK_DOWN link=pubsub (None: never reported, e.g. a short black hole
    stays ``degraded``: LINK_DOWN needs 3 failed publishes, each up to the 30 s timeout)."""
    cloud_up_s: float | None = None
    """Cloud link back → the uplink's next successful publish (LINK_UP / link_recovered)."""
    commands_resumed_s: float | None = None
    """After the drain: a ``bessai command stop`` published → COMMAND_ACCEPTED (how long a
    commands long-poll that outlived the cut keeps commands waiting)."""
    status_worst_s: float = 0.0
    status_failures: int = 0
    polls_per_s: float | None = None
    worst_poll_gap_s: float | None = None
    load_avg: str = ""


# ---- log parsing ----------------------------------------------------------------------------

_SIM_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def sim_time(line: str) -> float | None:
    """The simulator's own stamp on a log line (logging's asctime, local time) as epoch s."""
    m = _SIM_TS.match(line)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _field(line: str, key: str) -> str | None:
    m = re.search(rf"\b{key}=(\S+)", line)
    return None if m is None else m.group(1)


@attrs.frozen
class SimEvent:
    at: float
    event: str
    tag: str | None = None
    value: str | None = None
    line: str = ""


def sim_events(lines: list[str]) -> list[SimEvent]:
    out = []
    for line in lines:
        at = sim_time(line)
        event = _field(line, "event")
        if at is None or event is None:
            continue
        out.append(SimEvent(at, event, _field(line, "tag"), _field(line, "value"), line))
    return out


# ---- verdicts -------------------------------------------------------------------------------


def judge(scenario: NetScenario, r: Result, fig: NetFigures, ledger: Any, sim: Proc, gw: Proc,
          windows: list[tuple[float, float]], cloud_windows: list[tuple[float, float]],
          forced_at: float | None, timeout_s: float, hb_interval_s: float, lease_s: float,
          received: list[dict[str, Any]]) -> None:
    """Every check of one scenario into ``r`` and its figures into ``fig``. ``windows`` /
    ``cloud_windows``: (cut, restored) wall times of the inverter / cloud cuts."""
    events = sim_events(sim.lines)
    beats = [e.at for e in events if e.event == "heartbeat"]
    # ---- heartbeat gaps, as the device saw them -------------------------------------------
    up_gaps, cut_gaps = [], []
    for a, b in itertools.pairwise(beats):
        (cut_gaps if any(a < end and b > start for start, end in windows) else up_gaps).append(
            b - a)
    limit = hb_interval_s + timeout_s
    r.max_heartbeat_gap_s = round(max(up_gaps), 3) if up_gaps else None
    fig.hb_gap_over_cut_s = round(max(cut_gaps), 1) if cut_gaps else None
    r.check("heartbeat gap while the inverter link is up", r.max_heartbeat_gap_s is not None
            and r.max_heartbeat_gap_s <= limit, f"{r.max_heartbeat_gap_s} s > {limit:g} s")
    comm_loss = [e for e in events if e.event == "COMM_LOSS"]
    r.comm_loss = bool(comm_loss)
    if not windows:
        r.check("no comm loss on the device", not comm_loss, f"{len(comm_loss)} COMM_LOSS")
    # ---- delivery --------------------------------------------------------------------------
    r.check("zero loss", r.lost == 0, f"{r.lost} seqs neither delivered, dropped with a gap "
            "record nor on disk")
    r.check("no seq reused", not ledger.reused, f"reused: {ledger.reused[:5]}")
    r.check("no drops", r.dropped == 0, f"{r.dropped} rows dropped")
    by_id: dict[str, list[dict[str, Any]]] = {}
    for m in received:
        by_id.setdefault(m["attributes"]["msg_id"], []).append(m)
    differ = sum(1 for copies in by_id.values() for c in copies[1:]
                 if c["data"] != copies[0]["data"] or c["attributes"] != copies[0]["attributes"])
    r.check("duplicates are identical re-sends", differ == 0, f"{differ} copies differ")
    if any(c.link == "cloud" for c in scenario.cuts):
        r.check("drained after the cloud link came back", r.drain_s is not None,
                "backlog not drained within the deadline")
    # ---- no hang ---------------------------------------------------------------------------
    r.check("/status answered every probe (no hang)", fig.status_failures == 0,
            f"{fig.status_failures} probes failed or took over {STATUS_TIMEOUT_S:g} s")
    # ---- inverter cuts ---------------------------------------------------------------------
    downs = [logfmt_ts(line) for line in gw.matching(r"DEVICE_LINK_DOWN")]
    for start, end in windows:
        after = [t - start for t in downs if t >= start]
        fig.link_down_reported_s = round(after[0], 1) if after else None
        bound = POLL_INTERVAL_S + timeout_s + 5
        if end - start > bound:  # a cut shorter than a request timeout need not be noticed
            r.check("gateway reported the inverter link down",
                    fig.link_down_reported_s is not None and fig.link_down_reported_s <= bound,
                    f"DEVICE_LINK_DOWN {fig.link_down_reported_s} s after the cut "
                    f"(bound {bound:g})")
        back = [b - end for b in beats if b > end]
        fig.resumed_s = round(back[0], 1) if back else None
        bound = LINK_BACKOFF_CAP_S + timeout_s + 1 + 5
        r.check("resumed within one backoff of the link's return",
                fig.resumed_s is not None and fig.resumed_s <= bound,
                f"first heartbeat {fig.resumed_s} s after the link came back (bound {bound:g})")
        if forced_at is not None:
            _judge_lease(r, fig, events, gw, start, end, lease_s)
    if scenario.cpu_load_s:
        _judge_polls(r, fig, received)
    _judge_cloud(r, fig, gw, cloud_windows)


def _judge_cloud(r: Result, fig: NetFigures, gw: Proc,
                 windows: list[tuple[float, float]]) -> None:
    for start, end in windows:
        downs = [logfmt_ts(x) - start for x in gw.matching(r"event=LINK_DOWN .*link=pubsub")]
        downs = [d for d in downs if 0 <= d <= end - start]
        fig.cloud_down_reported_s = round(downs[0], 1) if downs else None
        ups = [logfmt_ts(x) - end for x in gw.matching(
            r"event=(LINK_UP|link_recovered) .*link=pubsub")]
        ups = [u for u in ups if u >= 0]
        fig.cloud_up_s = round(ups[0], 1) if ups else None
        if fig.cloud_up_s is None:  # the drain check above says whether it came back
            r.notes.append("the uplink logged no failure for this cut (the publish in flight "
                           "outlived it)")
        r.check("commands handled again after the cut", fig.commands_resumed_s is not None,
                "the stop command sent after the drain was never handled")


_MODE_ON = re.compile(r"event=client_write .*tag=forcible_mode value=[12]\b")
_MODE_STOP = re.compile(r"event=client_write .*tag=forcible_mode value=0\b")
_RENEW = re.compile(r"event=client_write .*tag=forcible_period ")


def _judge_lease(r: Result, fig: NetFigures, events: list[SimEvent], gw: Proc, start: float,
                 end: float, lease_s: float) -> None:
    """The device must not stay forced longer than one lease after the last write it heard,
    whatever ends it: its lease, its comm-loss watchdog, or the gateway's stop on reconnect (a
    renewal after the link is back is fine if it came within the lease)."""
    heard = [e.at for e in events
             if (_MODE_ON.search(e.line) or _RENEW.search(e.line)) and e.at <= start]
    if not heard:
        r.check("lease write seen before the cut", False, "no forcible_period/mode write")
        return
    last = heard[-1]
    first: tuple[SimEvent, str] | None = None
    for e in events:
        if e.at <= last:
            continue
        if e.event == "FORCED_MODE_END":
            first = (e, "ended by the device lease")
        elif e.event == "COMM_LOSS" and "forced_mode_cancelled=True" in e.line:
            first = (e, "ended by the device comm-loss watchdog")
        elif _MODE_STOP.search(e.line):
            first = (e, "ended by the gateway's stop on reconnect")
        elif _MODE_ON.search(e.line) or _RENEW.search(e.line):
            first = (e, "kept: lease renewed on reconnect")
        else:
            continue
        break
    blocks = [logfmt_ts(x) - start for x in gw.matching(r"event=SAFETY_BLOCK ")]
    blocks = [b for b in blocks if b >= 0]
    gateway = f"gateway SAFETY_BLOCK at +{blocks[0]:.1f} s; " if blocks else ""
    if first is None:
        r.check("forced mode ended or renewed after the cut", False, "nothing in the log")
        return
    event, kind = first
    held = round(event.at - last, 1)
    fig.forced_end = f"{gateway}forcing {kind}"
    fig.forced_after_last_write_s = held
    r.safety_latency_s = held
    margin = 1.5  # the simulator's device clock advances in steps; a log line is not instant
    r.check("device forced no longer than one lease after the last write it heard",
            held <= lease_s + margin, f"{kind} {held} s after the last write (lease {lease_s:g} s)")
    if "device" in kind:
        again = [e for e in events if e.at > end and _MODE_ON.search(e.line)]
        r.check("a lapsed command is not re-applied after the outage", not again,
                f"forced again at +{again[0].at - end:.1f} s" if again else "")


def _judge_polls(r: Result, fig: NetFigures, received: list[dict[str, Any]]) -> None:
    ts = sorted({json.loads(m["data"])["ts"] for m in received
                 if m["attributes"].get("kind") == "telemetry"})
    if len(ts) < 2:
        r.check("telemetry under CPU load", False, f"{len(ts)} telemetry rows")
        return
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    fig.worst_poll_gap_s = round(max(gaps), 2)
    fig.polls_per_s = round((len(ts) - 1) / (ts[-1] - ts[0]), 3)
    r.notes.append(f"telemetry: {len(ts)} polls delivered, {fig.polls_per_s}/s, worst gap "
                   f"{fig.worst_poll_gap_s} s")
