"""Nothing from outside stops the control loop (DESIGN rule 6), for the whole gateway tree.

The gateway runs in-process against the simulator under virtual time. A data branch whose
``events`` child always crashes, and a spool whose filesystem (a real tmpfs) is full while a
critical event arrives: in both the device site keeps polling, the safety guard keeps deciding,
the heartbeat keeps its interval, the process does not end, and there is one clear event.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.gateway import Gateway
from bessai.model import Event
from bessai.settings import BindAddress, DeviceSpec, Settings
from bessai.sim import Simulator
from tests.disk_faults import (
    DiskFiller,
    make_writable,
    read_only_view,
    require_root,
    small_tmpfs,
)
from tests.pubsub_faults import FreezingLimiter
from tests.waits import wait_for


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


def gateway(spool_path: Path, sim: Simulator) -> Gateway:
    settings = Settings(site_id="iso-site", devices=(DeviceSpec("inv1", "127.0.0.1"),),
                        spool_path=spool_path, status_bind=BindAddress("127.0.0.1", 0),
                        shutdown_deadline_s=5.0)
    gw = Gateway(settings, wall_clock=trio_wall_clock(),
                 stream_factories={"inv1": sim.stream_factory()}, status_server=False,
                 env_file=None)
    gw.spool.limiter = FreezingLimiter()
    return gw


def heartbeats(sim: Simulator) -> list[float]:
    tag = sim.profile.watchdog.heartbeat_tag
    return [w.at for w in sim.write_log if w.tag == tag]


def max_gap(times: list[float], since: float, until: float = float("inf")) -> float:
    times = [t for t in times if since <= t <= until]
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


class AlwaysCrashes:
    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep(0.5)
        raise RuntimeError("events path broken")


async def test_a_data_branch_that_always_crashes_never_stops_the_device_site(tmp_path, clock):
    sim = Simulator(soc_pct=50.0)
    gw = gateway(tmp_path / "spool.sqlite", sim)
    gw.data_children = tuple(attrs.evolve(s, factory=AlwaysCrashes) if s.id == "events" else s
                             for s in gw.data_children)
    site = gw.sites["inv1"]
    interval = site.config.heartbeat.interval_s
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            await n.start(gw.run)
            started = trio.current_time()
            await trio.sleep(240)  # four minutes of an events child crashing every half second
            assert gw.supervisor.running, "the gateway tree ended"
            status = gw.status()
            assert status["actors"]["site_inv1"]["restarts"] == 0
            assert status["links"]["device:inv1"]["state"] == "up"
            snapshot = site.ctx.latest()
            assert snapshot is not None
            assert snapshot.ts >= gw.wall_clock() - 2 * 1.0
            # the guard still decides: a device gone silent is blocked within its staleness
            silent_at = trio.current_time()
            sim.faults.silent = True
            await wait_for(lambda: site.ctx.safety.blocked_charge, "the guard blocks stale data")
            sim.faults.silent = False
            await wait_for(lambda: not site.ctx.safety.blocked_charge, "and clears it")
            ok, reasons = gw.health()
            assert not ok
            assert any("data branch degraded" in r for r in reasons), reasons
            gw.request_stop()
            await gw.supervisor_done.wait()
            n.cancel_scope.cancel()
    assert max_gap(heartbeats(sim), started, silent_at) <= interval + 1.0
    degraded = [e for e in logs if e["event"] == "DATA_BRANCH_DEGRADED"]
    assert len(degraded) == 1
    assert degraded[0]["child"] == "events"
    assert not [e for e in logs if e["event"] == "supervisor_escalated"
                and e.get("supervisor") == "gateway"]


async def test_a_full_disk_and_a_critical_event_keep_the_gateway_running_and_the_event_is_kept(
        tmp_path, clock):
    require_root()
    with small_tmpfs(tmp_path / "disk", "3m") as disk, capture_logs() as logs:
        sim = Simulator(soc_pct=50.0)
        gw = gateway(disk / "spool.sqlite", sim)
        interval = gw.sites["inv1"].config.heartbeat.interval_s
        filler = DiskFiller(disk)
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            await n.start(gw.run)
            await trio.sleep(10)
            filler.fill()
            full_at = trio.current_time()
            gw.events.emit(Event(name="COMMAND_ACCEPTED", site_id="iso-site", device_id="inv1",
                                 ts=gw.wall_clock(), body={"command_id": "c-full-disk"}))
            await trio.sleep(120)  # two minutes on a full disk
            assert gw.supervisor.running
            status = gw.status()
            assert status["spool"]["condition"] == "disk_full"
            assert status["spool"]["held"] + status["events_held"] >= 1
            ok, reasons = gw.health()
            assert not ok
            assert any("disk_full" in r for r in reasons), reasons
            assert status["actors"]["site_inv1"]["restarts"] == 0
            assert all(a["restarts"] == 0 for a in status["actors"].values())
            filler.free()
            await wait_for(lambda: gw.status()["spool"]["condition"] == "ok"
                           and not gw.events.pending, "the held event written")
            await trio.sleep(5)
            gw.request_stop()
            await gw.supervisor_done.wait()
            n.cancel_scope.cancel()
        conn = sqlite3.connect(disk / "spool.sqlite")
        stored = [(kind, json.loads(data)) for kind, data in
                  conn.execute("SELECT kind, data FROM outbox ORDER BY seq")]
        conn.close()
    assert max_gap(heartbeats(sim), full_at) <= interval + 1.0
    assert any(kind == "event" and body.get("body", {}).get("command_id") == "c-full-disk"
               for kind, body in stored)
    gaps = [body for kind, body in stored if kind == "gap"]
    assert gaps
    assert all(g["reason"] == "disk_fault" for g in gaps)
    assert [e["condition"] for e in logs if e["event"] == "SPOOL_DISK_FAULT"] == ["disk_full"]
    assert len([e for e in logs if e["event"] == "SPOOL_DISK_RECOVERED"]) == 1
    assert not [e for e in logs if e["event"] in ("SPOOL_WRITE_FAILED", "DATA_BRANCH_DEGRADED")]


async def test_a_read_only_spool_at_start_never_stops_the_site_from_starting(tmp_path, clock):
    """Why 4: on a read-only filesystem the gateway used to log SPOOL_CORRUPT over and over,
    never start the device site, and exit 1. Now the site starts and runs, the spool names
    the condition, the file is never moved aside, and its rows are there after a remount."""
    require_root()
    source = tmp_path / "data"
    source.mkdir()
    conn = sqlite3.connect(source / "spool.sqlite")
    conn.execute("CREATE TABLE kept (x)")  # a file that exists, with content to keep
    conn.close()
    with read_only_view(source, tmp_path / "ro") as ro, capture_logs() as logs:
        sim = Simulator(soc_pct=50.0)
        gw = gateway(ro / "spool.sqlite", sim)
        async with trio.open_nursery() as n:
            await n.start(sim.run)
            with trio.fail_after(60):
                await n.start(gw.run)  # ready although the spool cannot be opened
            await wait_for(lambda: gw.status()["links"]["device:inv1"]["state"] == "up",
                           "the device link up")
            await trio.sleep(30)
            status = gw.status()
            assert status["spool"]["condition"] == "read_only"
            assert status["actors"]["site_inv1"]["state"] == "running"
            assert gw.sites["inv1"].ctx.latest() is not None
            ok, reasons = gw.health()
            assert not ok
            assert any("read_only" in r for r in reasons), reasons
            make_writable(ro)
            await wait_for(lambda: gw.status()["spool"]["condition"] == "ok", "recovered")
            gw.request_stop()
            await gw.supervisor_done.wait()
            n.cancel_scope.cancel()
        tables = {r[0] for r in sqlite3.connect(source / "spool.sqlite").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "kept" in tables
    assert "outbox" in tables
    assert not [e for e in logs if e["event"] == "SPOOL_CORRUPT"]
    assert not list(source.glob("*.corrupt-*"))
    assert [e["condition"] for e in logs if e["event"] == "SPOOL_DISK_FAULT"] == ["read_only"]
    assert gw.status()["actors"]["site_inv1"]["restarts"] == 0
