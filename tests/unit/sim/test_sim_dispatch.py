"""The simulated inverter obeys dispatch writes, its lease and its watchdog (virtual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from sim_testclient import TrioTestClient

from bessai.sim import Simulator

CAPACITY_WH = 10_000.0
ETA = 0.95


async def _heartbeat(client: TrioTestClient, interval_s: float = 10.0) -> None:
    address = client.profile.tag("heartbeat").address
    while True:
        await client.write_single(address, 1)
        await trio.sleep(interval_s)


@asynccontextmanager
async def _heartbeating(profile, soc_pct: float, interval_s: float = 10.0
                        ) -> AsyncIterator[tuple[Simulator, TrioTestClient]]:
    """The simulator at midnight (no PV) with a client heartbeating every ``interval_s``."""
    async with Simulator(profile, soc_pct=soc_pct, start_hour=0.0) as sim:
        client = TrioTestClient(await sim.stream_factory()(), profile)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_heartbeat, client, interval_s)
            yield sim, client
            nursery.cancel_scope.cancel()


async def _force(client: TrioTestClient, direction: str, power_w: float, period: int) -> None:
    """Force ``charge`` or ``discharge`` as the profile's dispatch section says: the power tag,
    the lease (forcible period, minutes), then the mode tag."""
    d = client.profile.dispatch
    charge = direction == "charge"
    await client.write_tag(d.charge_power_tag if charge else d.discharge_power_tag, power_w)
    await client.write_tag(d.lease.tag, period)
    await client.write_tag(d.mode_tag, d.charge_value if charge else d.discharge_value)


async def test_forced_discharge_lowers_soc_at_rated_rate_and_stops_at_discharge_cutoff(
    autojump_clock, huawei_profile
):
    async with _heartbeating(huawei_profile, 50.0) as (sim, client):
        await trio.sleep(1)
        await client.write_tag("forcible_setting_mode", 0)
        await _force(client, "discharge", 3_000, 240)
        t0, soc0 = trio.current_time(), sim.state().soc_pct  # self-consumption ran 1 s
        await trio.sleep(600)
        assert await client.read_tag("battery_power") == -3_000
        expected = soc0 - 3_000 * (trio.current_time() - t0) / 3_600 / ETA / CAPACITY_WH * 100
        assert sim.state().soc_pct == pytest.approx(expected, abs=1e-6)
        assert await client.read_tag("soc") == pytest.approx(expected, abs=0.051)

        # 40 % of 10 kWh at 3 kW through 95 % efficiency takes 4,560 s; wait 2 h.
        await trio.sleep(7_200 - 600)
        assert await client.read_tag("soc") == pytest.approx(10.0)
        assert sim.state().soc_pct == pytest.approx(10.0, abs=1e-9)
        assert await client.read_tag("battery_power") == 0
        assert await client.read_tag("forcible_mode") == 2  # still forced, just empty


async def test_discharge_cutoff_write_moves_the_floor(autojump_clock, huawei_profile):
    async with _heartbeating(huawei_profile, 20.0) as (_sim, client):
        await client.write_tag("discharge_cutoff", 15.0)
        await _force(client, "discharge", 5_000, 120)
        await trio.sleep(3_600)
        assert await client.read_tag("soc") == pytest.approx(15.0)


async def test_forced_charge_stops_at_charge_cutoff(autojump_clock, huawei_profile):
    async with _heartbeating(huawei_profile, 90.0) as (sim, client):
        await client.write_tag("charge_cutoff", 95.0)
        await _force(client, "charge", 4_000, 120)
        await trio.sleep(60)
        assert await client.read_tag("battery_power") == 4_000
        await trio.sleep(3_600)
        assert sim.state().soc_pct == pytest.approx(95.0, abs=1e-9)
        assert await client.read_tag("battery_power") == 0


async def test_forced_power_is_clamped_to_max_charging_power_setting(
    autojump_clock, huawei_profile
):
    async with _heartbeating(huawei_profile, 50.0) as (sim, client):
        await client.write_tag("max_charging_power", 2_500)
        await _force(client, "charge", 4_000, 10)
        await trio.sleep(30)
        assert await client.read_tag("battery_power") == 2_500
        assert sim.state().forced_mode == 1


async def test_lease_expiry_ends_forced_mode_and_rewriting_the_period_renews_it(
    autojump_clock, huawei_profile
):
    async with _heartbeating(huawei_profile, 50.0) as (sim, client):
        await _force(client, "charge", 2_000, 1)
        t0 = trio.current_time()
        await trio.sleep(30)
        await client.write_tag("forcible_period", 1)  # renewal: lease now ends at t0 + 90
        await trio.sleep_until(t0 + 89)
        assert await client.read_tag("forcible_mode") == 1
        assert await client.read_tag("battery_power") == 2_000
        await trio.sleep_until(t0 + 91)
        assert await client.read_tag("forcible_mode") == 0
        state = sim.state()
        assert state.forced_mode == 0
        assert state.lease_deadline is None
        # Back to self-consumption: at night (no PV) the battery covers the load.
        assert state.battery_power_w < 0


async def test_forced_mode_with_period_zero_lapses_at_once(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile, soc_pct=50.0) as sim:
        client = TrioTestClient(await sim.stream_factory()(), huawei_profile)
        await client.write_tag("forcible_period", 0)
        await client.write_tag("forcible_mode", 2)
        await trio.sleep(1)
        assert await client.read_tag("forcible_mode") == 0


async def test_no_heartbeat_for_device_timeout_enters_comm_loss_and_cancels_forced_mode(
    autojump_clock, huawei_profile
):
    timeout_s = huawei_profile.watchdog.device_timeout_s
    async with Simulator(huawei_profile, soc_pct=50.0, start_hour=0.0) as sim:
        client = TrioTestClient(await sim.stream_factory()(), huawei_profile)
        await client.write_single(huawei_profile.tag("heartbeat").address, 1)
        t0 = trio.current_time()
        await client.write_tag("forcible_discharge_power", 1_000)
        await client.write_tag("forcible_period", 30)
        await client.write_tag("forcible_mode", 2)
        await trio.sleep_until(t0 + timeout_s - 1)
        assert not sim.state().comm_lost
        assert await client.read_tag("forcible_mode") == 2
        await trio.sleep_until(t0 + timeout_s + 1)
        assert sim.state().comm_lost
        assert await client.read_tag("forcible_mode") == 0
        assert await client.read_tag("device_status") == huawei_profile.watchdog.comm_loss_value
        assert await client.read_tag("battery_power") == 0
        # The next heartbeat restores communication; the forced command stays cancelled.
        await client.write_single(huawei_profile.tag("heartbeat").address, 1)
        assert not sim.state().comm_lost
        assert await client.read_tag("device_status") == 0x0200
        assert sim.state().forced_mode == 0


async def test_heartbeats_every_15_s_keep_the_device_out_of_comm_loss(
    autojump_clock, huawei_profile
):
    async with _heartbeating(huawei_profile, 50.0, 15.0) as (sim, client):
        await client.write_tag("forcible_discharge_power", 1_000)
        await client.write_tag("forcible_period", 30)
        await client.write_tag("forcible_mode", 2)
        await trio.sleep(600)
        state = sim.state()
        assert not state.comm_lost
        assert state.forced_mode == 2
        assert state.heartbeat_count >= 600 // 15
        assert await client.read_tag("device_status") == 0x0200


async def test_writes_are_logged_with_peer_tag_and_value(autojump_clock, huawei_profile):
    async with Simulator(huawei_profile) as sim:
        client = TrioTestClient(await sim.stream_factory()(), huawei_profile)
        await client.write_tag("working_mode", 5)
        await client.write_tag("charge_cutoff", 97.5)
        last = sim.write_log[-2:]
        assert [(r.tag, r.value) for r in last] == [("working_mode", 5), ("charge_cutoff", 97.5)]
        assert all(r.peer.startswith("memory#") for r in last)
        assert await client.read_tag("charge_cutoff") == 97.5
