"""The gateway tree in-process under virtual time: Gateway + the in-process Simulator.

Start order and reverse stop order as the supervisors' event hook reports them, the status
document, health (true with the link up, false with a reason when the simulator falls silent),
and a stop that leaves nothing running. The spool runs SQLite in a worker thread, so the clock
autojumps only after 50 ms of real idleness (not 0, which would jump while the thread works).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import EventKind, SupervisorEvent
from bessai.clock import trio_wall_clock
from bessai.gateway import Gateway
from bessai.settings import BindAddress, DeviceSpec, Settings
from bessai.sim import Simulator
from tests.waits import wait_for

GATEWAY_ORDER = ["telemetry", "data", "connection_127.0.0.1:502", "site_inv1"]
DATA_ORDER = ["spool", "recorder", "events"]
SITE_ORDER = ["device_link", "safety_guard", "watchdog", "schedule"]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


def settings(tmp_path: Path, **extra) -> Settings:
    values = {"site_id": "tree-site", "devices": (DeviceSpec("inv1", "127.0.0.1"),),
              "spool_path": tmp_path / "spool.sqlite",
              "status_bind": BindAddress("127.0.0.1", 0), "shutdown_deadline_s": 5.0}
    return Settings(**{**values, **extra})


def gateway(tmp_path: Path, sim: Simulator, events: list[SupervisorEvent], **kwargs) -> Gateway:
    return Gateway(settings(tmp_path), wall_clock=trio_wall_clock(),
                   stream_factories={"inv1": sim.stream_factory()}, status_server=False,
                   event_hook=events.append, env_file=None, **kwargs)


async def started_gateway(nursery: trio.Nursery, tmp_path: Path, events: list[SupervisorEvent],
                          **sim_options: Any) -> tuple[Simulator, Gateway]:
    """A simulator (``sim_options``) and a gateway polling it, both started in ``nursery``."""
    sim = Simulator(**sim_options)
    await nursery.start(sim.run)
    gw = gateway(tmp_path, sim, events)
    await nursery.start(gw.run)
    return sim, gw


def kinds(events: list[SupervisorEvent], kind: EventKind, supervisor: str) -> list[str]:
    return [e.child_id for e in events if e.kind is kind and e.supervisor == supervisor]


def link_state(gw: Gateway) -> str:
    return gw.status()["links"]["device:inv1"]["state"]


async def test_tree_starts_in_order_and_stops_in_reverse_order(tmp_path):
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        _, gw = await started_gateway(nursery, tmp_path, events)
        assert kinds(events, EventKind.STARTED, "gateway") == GATEWAY_ORDER
        assert kinds(events, EventKind.STARTED, "data") == DATA_ORDER
        assert kinds(events, EventKind.STARTED, "site:inv1") == SITE_ORDER
        # the site's children all started before the gateway reported the site started
        site_started = next(i for i, e in enumerate(events) if e.child_id == "site_inv1")
        assert all(events.index(e) < site_started for e in events if e.supervisor == "site:inv1")
        gw.request_stop()
        await gw.supervisor_done.wait()
        nursery.cancel_scope.cancel()
    assert kinds(events, EventKind.EXITED, "gateway") == GATEWAY_ORDER[::-1]
    assert kinds(events, EventKind.EXITED, "data") == DATA_ORDER[::-1]
    assert kinds(events, EventKind.EXITED, "site:inv1") == SITE_ORDER[::-1]
    site_exit = next(i for i, e in enumerate(events)
                     if e.kind is EventKind.EXITED and e.child_id == "site_inv1")
    assert all(events.index(e) < site_exit for e in events
               if e.kind is EventKind.EXITED and e.supervisor == "site:inv1")


async def test_status_document_and_health_follow_the_device_link(tmp_path):
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sim, gw = await started_gateway(nursery, tmp_path, events, soc_pct=61.0)
        await wait_for(lambda: link_state(gw) == "up", timeout_s=10, what="link up")
        await wait_for(lambda: gw.status()["sites"]["inv1"]["values"] is not None,
                       timeout_s=5, what="a reading")

        status = gw.status()
        assert status["site"] == "tree-site"
        assert status["tree_running"] is True
        assert status["uplink_mode"] == "off"
        assert set(status["actors"]) == {*GATEWAY_ORDER, *(f"data/{c}" for c in DATA_ORDER),
                                         *(f"site_inv1/{c}" for c in SITE_ORDER)}
        assert all(a["state"] == "running" for a in status["actors"].values())
        assert all(a["restarts"] == 0 for a in status["actors"].values())
        assert status["sites"]["inv1"]["values"]["soc"] == pytest.approx(61.0, abs=0.5)
        assert "depth" in status["spool"]
        assert status["snapshots_dropped"] == 0
        assert status["spool"]["condition"] == "ok"
        assert status["data_branch"]["state"] == "ok"
        assert "cloud" not in status["links"]  # uplink off: no cloud link to report
        assert gw.health() == (True, [])

        sim.faults.silent = True
        await wait_for(lambda: link_state(gw) != "up", timeout_s=60, what="link down")
        ok, reasons = gw.health()
        assert ok is False
        assert any("device:inv1" in r and "down" in r for r in reasons), reasons
        assert gw.status()["tree_running"] is True  # a silent device is a state, not a crash

        sim.faults.silent = False
        await wait_for(lambda: gw.health()[0], timeout_s=120, what="healthy again")
        gw.request_stop()
        await gw.supervisor_done.wait()
        nursery.cancel_scope.cancel()


async def test_stop_leaves_nothing_running(tmp_path):
    events: list[SupervisorEvent] = []
    sim = Simulator()
    gw = gateway(tmp_path, sim, events)
    async with trio.open_nursery() as outer:
        await outer.start(sim.run)
        async with trio.open_nursery() as nursery:
            await nursery.start(gw.run)
            await wait_for(lambda: link_state(gw) == "up", timeout_s=10, what="link up")
            gw.request_stop()
        # the gateway's nursery closed by itself: every task of the tree has returned
        outer.cancel_scope.cancel()
    assert gw.supervisor_done.is_set()
    assert gw.supervisor.running is False
    assert all(info.state.value == "stopped" for info in gw.supervisor.which_children())
    assert gw.status()["tree_running"] is False
    assert gw.health()[0] is False
    started = [e.child_id for e in events if e.kind is EventKind.STARTED]
    exited = [e.child_id for e in events if e.kind is EventKind.EXITED]
    assert sorted(started) == sorted(exited)


async def test_an_event_json_cannot_carry_does_not_block_the_critical_events_behind_it(tmp_path):
    from bessai.model import Event

    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        _, gw = await started_gateway(nursery, tmp_path, events)
        depth = gw.spool.stats().depth
        gw.events.emit(Event(name="SAFETY_BLOCK", site_id="tree-site", device_id="inv1",
                             ts=1.0, body={"rule": "soc_min", "value": float("nan"),
                                           "source": object()}))
        gw.events.emit(Event(name="SAFETY_BLOCK", site_id="tree-site", device_id="inv1",
                             ts=2.0, body={"rule": "temp_max", "value": 46.0}))
        await wait_for(lambda: gw.events.delivered >= 2 and not gw.events.pending, timeout_s=5,
                       what="both events on disk")
        rows = await gw.spool.lease(limit=1000)
        bodies = [json.loads(r.data)["body"] for r in rows if r.kind == "event"]
        assert {"rule": "temp_max", "value": 46.0} in bodies
        poisoned = next(b for b in bodies if b["rule"] == "soc_min")
        assert poisoned["value"] == "nan"
        assert poisoned["source"].startswith("<object")
        assert gw.spool.stats().depth >= depth + 2
        assert gw.status()["actors"]["data/events"]["restarts"] == 0
        gw.request_stop()
        await gw.supervisor_done.wait()
        nursery.cancel_scope.cancel()


async def test_a_stop_while_a_child_cannot_start_ends_the_run_cleanly(tmp_path):
    """The status port is taken, so the tree never becomes ready; a stop must still end
    `run` normally (it used to raise "child exited without calling task_status.started()")."""
    events: list[SupervisorEvent] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        sim = Simulator()
        gw = Gateway(settings(tmp_path, status_bind=BindAddress("127.0.0.1", port)),
                     wall_clock=trio_wall_clock(), stream_factories={"inv1": sim.stream_factory()},
                     event_hook=events.append, env_file=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)

            async def stop_soon() -> None:
                await wait_for(lambda: gw.status()["actors"]["status"]["restarts"] >= 2,
                               timeout_s=30, what="the status child failing to start")
                gw.request_stop()

            nursery.start_soon(stop_soon)
            await nursery.start(gw.run)  # returns once the stop has ended the tree
            assert gw.supervisor_done.is_set()
            nursery.cancel_scope.cancel()
    assert any(e.child_id == "status" and e.exception_repr and "in use" in e.exception_repr
               for e in events)


async def test_two_units_on_one_endpoint_run_on_one_connection_actor_with_one_state(tmp_path,
                                                                                    clock):
    """DEVICES=inv1@127.0.0.1:502/1,inv2@127.0.0.1:502/2 (two inverters behind one SDongle):
    the tree runs one connection actor for the endpoint, the status shows one connection state
    and one state per unit, and the single-client device sees one client."""
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sim = Simulator(units=(1, 2), single_client=True, soc_pct=61.0)
        await nursery.start(sim.run)
        devices = (DeviceSpec("inv1", "127.0.0.1", 502, 1), DeviceSpec("inv2", "127.0.0.1", 502, 2))
        gw = Gateway(settings(tmp_path, devices=devices), wall_clock=trio_wall_clock(),
                     stream_factories={"inv1": sim.stream_factory()}, status_server=False,
                     event_hook=events.append, env_file=None)
        await nursery.start(gw.run)
        await wait_for(lambda: all(gw.status()["links"][f"device:{d}"]["state"] == "up"
                                   for d in ("inv1", "inv2")), timeout_s=10, what="units up")
        await trio.sleep(20)  # twenty fast polls of each unit, two heartbeats each
        status = gw.status()
        state = sim.state()
        health = gw.health()
        gw.request_stop()
        await gw.supervisor_done.wait()
        nursery.cancel_scope.cancel()
    assert kinds(events, EventKind.STARTED, "gateway").count("connection_127.0.0.1:502") == 1
    connection = status["links"]["connection:127.0.0.1:502"]
    assert connection["state"] == "up"
    assert connection["units"] == {"1": "inv1", "2": "inv2"}
    assert status["sites"]["inv2"]["connection"] == "127.0.0.1:502"
    assert state.connections_total == 1
    assert health == (True, [])
