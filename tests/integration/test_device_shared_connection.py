"""Several units behind one endpoint share ONE connection (virtual time, in-process simulator).

The simulator here is an SDongle: it serves unit ids 1 and 2 on one port and keeps only its
newest client. The gateway's wiring is used as production uses it: one `ModbusConnection` per
endpoint run as its own actor, one site (device link, guard, watchdog) per unit on top.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.control.connections import connections_for, distinct, endpoint_key
from bessai.control.site import SiteConfig, build_site
from bessai.device import ModbusConnection, UniversalDriver, reconnect_cap_s
from bessai.settings import DeviceSpec
from bessai.sim import Simulator

SITE = "site1"


def unit_site(sim: Simulator, device_id: str, unit: int, connection: ModbusConnection | None):
    """One unit's site; with ``connection`` the tree owns it, without it the link makes its
    own (what the gateway did before: one connection per device)."""
    wall = trio_wall_clock()
    config = SiteConfig.from_profile(sim.profile, site_id=SITE, device_id=device_id,
                                     own_connection=connection is None)

    def driver() -> UniversalDriver:
        if connection is not None:
            return UniversalDriver(sim.profile, unit_id=unit, connection=connection,
                                   site_id=SITE, device_id=device_id, wall_clock=wall)
        return UniversalDriver(sim.profile, unit_id=unit, stream_factory=sim.stream_factory(),
                               site_id=SITE, device_id=device_id, wall_clock=wall)

    return build_site(config, driver, wall_clock=wall)


def shared_connection(sim: Simulator, units: dict[int, str], **kwargs) -> ModbusConnection:
    conn = sim.profile.connection
    connection = ModbusConnection(
        sim.stream_factory(), peer="sdongle:502", timeout_s=conn.timeout_s,
        post_connect_delay_s=conn.post_connect_delay_s, cooldown_s=conn.cooldown_s,
        reconnect_cap_s=kwargs.pop("reconnect_cap_s",
                                   reconnect_cap_s(sim.profile.watchdog.device_timeout_s)),
        rng=random.Random(7), site_id=SITE, **kwargs)
    for unit, device_id in units.items():
        connection.register(unit, device_id)
    return connection


def heartbeat_times(sim: Simulator) -> list[float]:
    return [w.at for w in sim.write_log if w.tag == "heartbeat"]


@asynccontextmanager
async def two_units_on_one_connection(
        sim: Simulator) -> AsyncIterator[tuple[trio.Nursery, list]]:
    """Units 1 and 2 of ``sim`` as sites inv1 and inv2 on one connection owner, running."""
    connection = shared_connection(sim, {1: "inv1", 2: "inv2"})
    sites = [unit_site(sim, "inv1", 1, connection), unit_site(sim, "inv2", 2, connection)]
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run)
        for site in sites:
            await nursery.start(site.supervisor().run)
        yield nursery, sites


def max_gap(times: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(times))


async def test_two_units_behind_one_single_client_device_share_one_connection_for_ten_minutes(
        autojump_clock):
    async with Simulator(units=(1, 2), single_client=True, soc_pct=50) as sim:
        with capture_logs() as logs:
            async with two_units_on_one_connection(sim) as (nursery, sites):
                await trio.sleep(600)
                now = trio.current_time()
                latest = [site.ctx.latest() for site in sites]
                states = [sim.unit(1).state(), sim.unit(2).state()]
                beats = [heartbeat_times(sim.unit(1)), heartbeat_times(sim.unit(2))]
                statuses = [site.status()["link"]["state"] for site in sites]
                nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs]
    assert states[0].connections_total == 1  # one TCP accept in ten minutes
    assert "DEVICE_LINK_DOWN" not in events
    assert events.count("DEVICE_LINK_UP") == 1  # one connection, one state
    assert "DEVICE_UNIT_DOWN" not in events
    assert statuses == ["up", "up"]
    for snapshot in latest:  # both fresh: taken within the last fast poll or two
        assert snapshot is not None
        assert now - snapshot.taken_at <= 2.0
    # each unit's heartbeat arrives within its interval plus one request timeout
    limit = sim.profile.watchdog.interval_s + sim.profile.connection.timeout_s
    for times in beats:
        assert len(times) >= 55
        assert max_gap(times) <= limit
    assert not states[0].comm_lost
    assert not states[1].comm_lost
    # the two units are different devices: their own batteries answered
    assert latest[0].device_id == "inv1"
    assert latest[1].device_id == "inv2"


async def test_two_connections_to_one_single_client_device_evict_each_other(autojump_clock):
    """The configuration the gateway had before: one connection per device. The simulator,
    like an SDongle, closes the older client on each new connection, so the two links flap —
    the failure the shared connection removes."""
    async with Simulator(units=(1, 2), single_client=True, soc_pct=50) as sim:
        sites = [unit_site(sim, "inv1", 1, None), unit_site(sim, "inv2", 2, None)]
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                for site in sites:
                    await nursery.start(site.supervisor().run)
                await trio.sleep(120)
                state = sim.state()
                nursery.cancel_scope.cancel()
    assert state.connections_total > 4
    assert "DEVICE_LINK_DOWN" in [e["event"] for e in logs]


async def test_a_unit_that_stops_answering_does_not_delay_the_other_units_heartbeats(
        autojump_clock):
    async with Simulator(units=(1, 2), single_client=True, soc_pct=50) as sim:
        with capture_logs() as logs:
            async with two_units_on_one_connection(sim) as (nursery, sites):
                await trio.sleep(30)
                silent_from = trio.current_time()
                sim.unit(2).faults.silent = True  # unit 2 stops answering; unit 1 does not
                await trio.sleep(300)
                silent_status = sites[1].status()["link"]
                first_status = sites[0].status()["link"]
                sim.unit(2).faults.silent = False
                await trio.sleep(60)
                back_status = sites[1].status()["link"]
                state = sim.state()
                nursery.cancel_scope.cancel()
    beats = [t for t in heartbeat_times(sim.unit(1)) if t >= silent_from - 10]
    # a heartbeat waits at most for the request in flight (one timeout), the cooldown after
    # it and its own round trip
    conn = sim.profile.connection
    limit = sim.profile.watchdog.interval_s + conn.timeout_s + conn.cooldown_s + 0.05
    assert max_gap(beats) <= limit
    assert not sim.unit(1).state().comm_lost
    assert state.connections_total == 1  # the silent unit did not cost the connection
    names = [(e["event"], e.get("device")) for e in logs
             if e["event"].startswith(("DEVICE_LINK", "DEVICE_UNIT"))]
    assert names == [("DEVICE_LINK_UP", "inv1,inv2"), ("DEVICE_UNIT_DOWN", "inv2"),
                     ("DEVICE_UNIT_UP", "inv2")]
    down = next(e for e in logs if e["event"] == "DEVICE_UNIT_DOWN")
    assert "ModbusTimeout" in down["reason"]
    assert silent_status["state"] == "down"
    assert "ModbusTimeout" in silent_status["reason"]
    assert first_status["state"] == "up"
    assert back_status["state"] == "up"


@pytest.mark.parametrize("outage_phase_s", [0.0, 2.5, 5.0, 7.5])
async def test_a_40_s_device_outage_keeps_the_heartbeat_gap_under_the_device_timeout(
        autojump_clock, outage_phase_s):
    """The device goes away for 40 s (connections refused) at a moment in the heartbeat cycle
    given by ``outage_phase_s``; when it returns, the gateway must reconnect and heartbeat it
    before its comm-loss timeout (Huawei: 60 s since the last heartbeat) runs out."""
    async with Simulator(soc_pct=50) as sim:
        away = False
        inner = sim.stream_factory()

        async def connect() -> trio.abc.Stream:
            if away:
                raise OSError(113, "No route to host")
            return await inner()

        connection = ModbusConnection(
            connect, peer="inv:502", timeout_s=sim.profile.connection.timeout_s,
            post_connect_delay_s=sim.profile.connection.post_connect_delay_s,
            reconnect_cap_s=reconnect_cap_s(sim.profile.watchdog.device_timeout_s),
            rng=random.Random(3))
        connection.register(1, "inv1")
        site = unit_site(sim, "inv1", 1, connection)
        async with trio.open_nursery() as nursery:
            await nursery.start(connection.run)
            await nursery.start(site.supervisor().run)
            await trio.sleep(60 + outage_phase_s)
            away = True
            sim.drop_connections()
            await trio.sleep(40)
            away = False
            await trio.sleep(120)
            state = sim.state()
            nursery.cancel_scope.cancel()
    gap = max_gap(heartbeat_times(sim))
    assert gap > 40  # the outage was real
    assert gap < sim.profile.watchdog.device_timeout_s
    assert not state.comm_lost


def test_devices_on_one_endpoint_get_one_connection_with_the_strictest_timing():
    from bessai.device import load_profile

    profile = load_profile("profiles/huawei_sun2000.json")
    devices = [DeviceSpec("inv1", "192.168.1.50", 502, 1),
               DeviceSpec("inv2", "192.168.1.50", 502, 2),
               DeviceSpec("inv3", "192.168.1.51", 502, 1), DeviceSpec("inv4", "fe80::1", 6607, 0)]
    by_device = connections_for(devices, lambda d: profile, site_id=SITE)
    assert by_device["inv1"] is by_device["inv2"]
    assert by_device["inv3"] is not by_device["inv1"]
    assert [c.peer for c in distinct(by_device)] == ["192.168.1.50:502", "192.168.1.51:502",
                                                     "[fe80::1]:6607"]
    assert by_device["inv1"].units == {1: "inv1", 2: "inv2"}
    assert by_device["inv1"].reconnect_cap_s == 5.0  # a twelfth of Huawei's 60 s
    assert endpoint_key(devices[3]) == "[fe80::1]:6607"
