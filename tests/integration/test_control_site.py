"""The site's control loop against the in-process simulator, through the real driver and Modbus
client, in virtual time: the runbook's safety promises, end to end below the cloud."""

import itertools
import json

import trio
from structlog.testing import capture_logs

from actors import DropOldestRing
from bessai.clock import trio_wall_clock
from bessai.control.gate import Decision
from bessai.control.limits import INVALID_DATA, SOC_MIN, STALE_DATA, TEMP_MAX
from bessai.device import UniversalDriver
from bessai.model import Action, Command
from bessai.observe.sink import RecordingSink
from bessai.sim import Simulator
from tests.sites import DEVICE, SITE, make_site, running_site
from tests.waits import wait_for


def running(sim, outputs=(), **config):
    """The site's three children running against ``sim`` (started in order, cancelled at exit)."""
    return running_site(make_site(sim, config=config, metrics=RecordingSink(), outputs=outputs))


def command(action, power_w=3000.0, ttl_s=600.0, **fields):
    now = trio_wall_clock()()
    values = {"id": f"c-{action}-{now}", "site_id": SITE, "device_id": DEVICE,
              "action": action, "power_w": power_w, "issued_at": now,
              "expires_at": now + ttl_s}
    values.update(fields)
    return Command(**values)


async def test_forced_discharge_at_soc_5_2_is_stopped_on_the_device_below_5_0(autojump_clock):
    sim = Simulator(soc_pct=5.2)
    sim.inverter.settings["discharge_cutoff"] = 0.0  # let the device itself go below 5 %
    async with sim, running(sim) as site:
        outcome = await site.gate.submit(command(Action.DISCHARGE, 3000))
        assert outcome.decision is Decision.ACCEPTED
        assert sim.state().forced_mode == 2
        # the reading (register, 0.1 % steps) crosses the limit
        crossed = await wait_for(lambda: sim.values()["soc"] < 5.0, step_s=0.01)
        stopped = await wait_for(lambda: sim.state().forced_mode == 0, step_s=0.01)
        assert stopped - crossed <= config_poll_s(site) + 0.5  # one poll + read + write
        assert SOC_MIN in site.ctx.safety.active
        assert site.ctx.safety.blocked_discharge
        assert not site.ctx.safety.blocked_charge
        assert site.ctx.metrics.total("bessai.safety.blocks", rule=SOC_MIN) == 1


def config_poll_s(site):
    return site.config.fast_interval_s


async def test_soc_min_clears_only_with_hysteresis_when_charging_back(autojump_clock):
    sim = Simulator(soc_pct=4.5)
    async with sim, running(sim) as site:
        clear_at = site.config.limits.soc_min_pct + site.config.limits.soc_hysteresis_pct
        assert SOC_MIN in site.ctx.safety.active
        rejected = await site.gate.submit(command(Action.DISCHARGE))
        assert rejected.decision is Decision.REJECTED
        accepted = await site.gate.submit(command(Action.CHARGE, 5000))
        assert accepted.decision is Decision.ACCEPTED
        await wait_for(lambda: sim.values()["soc"] >= clear_at - 0.5)
        assert SOC_MIN in site.ctx.safety.active  # inside the band: still blocked
        reached = await wait_for(lambda: sim.values()["soc"] >= clear_at, step_s=0.01)
        cleared = await wait_for(lambda: SOC_MIN not in site.ctx.safety.active, step_s=0.01)
        assert cleared - reached <= config_poll_s(site) + 0.5


async def test_over_temperature_blocks_both_directions_and_stops_forcing(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim) as site:
        await site.gate.submit(command(Action.CHARGE, 2000))
        assert sim.state().forced_mode == 1
        sim.faults.pinned["battery_temp"] = 46.0  # the battery sensor reads hot
        await wait_for(lambda: TEMP_MAX in site.ctx.safety.active)
        assert site.ctx.safety.blocked_charge
        assert site.ctx.safety.blocked_discharge
        await wait_for(lambda: sim.state().forced_mode == 0, timeout_s=2)
        for action in (Action.CHARGE, Action.DISCHARGE):
            outcome = await site.gate.submit(command(action))
            assert outcome.decision is Decision.REJECTED
            assert "temp_max" in outcome.reason


async def test_device_that_stops_answering_makes_data_stale_and_blocks(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim) as site:
        assert site.ctx.safety.ok
        sim.faults.silent = True
        went = trio.current_time()
        blocked = await wait_for(lambda: STALE_DATA in site.ctx.safety.active)
        # stale after 3 polls; noticed within one guard tick, plus the poll in flight
        assert blocked - went <= site.config.limits.stale_after_s + 2 * config_poll_s(site)
        assert site.ctx.safety.blocked_charge
        assert site.ctx.safety.blocked_discharge
        sim.faults.clear()
        await wait_for(lambda: site.ctx.safety.ok)


async def test_soc_reading_the_invalid_sentinel_blocks_both_directions(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim) as site:
        await site.gate.submit(command(Action.DISCHARGE, 2000))
        sim.faults.invalid_tags.add("soc")  # 0xFFFF on the wire
        went = trio.current_time()
        blocked = await wait_for(lambda: INVALID_DATA in site.ctx.safety.active, step_s=0.01)
        assert blocked - went <= config_poll_s(site) + 0.5
        assert site.ctx.safety.active[INVALID_DATA].tag == "soc"
        assert site.ctx.safety.blocked_charge
        assert site.ctx.safety.blocked_discharge
        await wait_for(lambda: sim.state().forced_mode == 0, timeout_s=2)  # forcing stopped
        sim.faults.invalid_tags.clear()
        await wait_for(lambda: site.ctx.safety.ok)


async def test_busy_device_gives_invalid_data_which_blocks(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim) as site:
        sim.faults.busy = True  # every answer is exception 0x06: readings invalid
        await wait_for(lambda: INVALID_DATA in site.ctx.safety.active)
        assert site.ctx.safety.blocked_charge
        assert site.ctx.safety.blocked_discharge
        sim.faults.busy = False
        await wait_for(lambda: site.ctx.safety.ok)


async def test_thirty_minute_cloud_cut_keeps_heartbeat_on_schedule(autojump_clock):
    """Nobody reads events and no command arrives for 30 minutes: the local loop does not care."""
    sim = Simulator(soc_pct=50)
    ring = DropOldestRing(capacity=100)  # the recorder's ring: nobody drains it
    async with sim, running(sim, outputs=[ring.push]) as site:
        async def black_hole(_event):  # the spool/uplink side never returns
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            await nursery.start(site.ctx.events.forward, black_hole)
            await site.gate.submit(command(Action.DISCHARGE, 2000, ttl_s=3600))
            comm_lost = False
            start = trio.current_time()
            while trio.current_time() - start < 30 * 60:
                await trio.sleep(1)
                comm_lost = comm_lost or sim.state().comm_lost
            timeout_s = sim.profile.connection.timeout_s
            interval_s = sim.profile.watchdog.interval_s
            watchdog = site.ctx.heartbeat  # the watchdog publishes its counters there
            assert watchdog.beats >= 30 * 60 / interval_s - 1
            assert watchdog.max_gap_s <= interval_s + timeout_s
            assert not comm_lost
            assert sim.state().forced_mode == 2  # the lease was renewed all along
            assert ring.dropped > 1000  # telemetry overflowed the ring, counted, never blocking
            assert [e.name for e in site.ctx.events.pending] == ["COMMAND_ACCEPTED"]  # kept
            nursery.cancel_scope.cancel()


async def test_cancelled_site_leaves_forced_mode_on_the_device_within_the_lease(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim:
        async with running(sim) as site:
            await site.gate.submit(command(Action.DISCHARGE, 2000, ttl_s=3600))
            await trio.sleep(45)
            assert sim.state().forced_mode == 2
        died = trio.current_time()  # the gateway is gone: nobody renews the lease
        lease_s = sim.profile.dispatch.lease.period_s
        ended = await wait_for(lambda: sim.state().forced_mode == 0, step_s=0.5)
        assert ended - died <= lease_s


async def test_command_that_expired_during_an_outage_is_rejected_when_it_arrives(
        autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim) as site:
        stale = command(Action.DISCHARGE, ttl_s=300)
        await trio.sleep(301)  # it sat in the subscription while the uplink was down
        outcome = await site.gate.submit(stale)
        assert outcome.decision is Decision.REJECTED
        assert "expired" in outcome.reason
        assert sim.state().forced_mode == 0


async def test_power_beyond_the_device_maximum_is_clamped_on_the_device(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim, slow_interval_s=5.0) as site:
        outcome = await site.gate.submit(command(Action.DISCHARGE, 8000))
        assert outcome.decision is Decision.CLAMPED
        assert outcome.applied_power_w == 5000  # the simulator's max discharge power
        assert sim.values()["forcible_discharge_power"] == 5000
        other = await site.gate.submit(command(Action.DISCHARGE, 1000, device_id="inv2"))
        assert other.decision is Decision.REJECTED


async def test_safety_block_is_logged_critical_published_and_counted(autojump_clock):
    sim = Simulator(soc_pct=50)
    with capture_logs() as logs:
        async with sim, running(sim) as site:
            sim.model.soc_pct = 4.2
            await wait_for(lambda: SOC_MIN in site.ctx.safety.active)
            sim.model.soc_pct = 7.0
            await wait_for(lambda: site.ctx.safety.ok)
            published = site.ctx.events.take_nowait()
    block = next(e for e in logs if e["event"] == "SAFETY_BLOCK")
    assert block["log_level"] == "critical"
    assert (block["rule"], block["value"], block["limit"], block["soc"]) == (SOC_MIN, 4.2,
                                                                            5.0, 4.2)
    assert (block["site"], block["device"], block["blocks"]) == (SITE, DEVICE, "discharge")
    assert [e.name for e in published] == ["SAFETY_BLOCK", "SAFETY_CLEAR"]
    assert all(e.critical for e in published)
    assert published[0].body["rule"] == SOC_MIN
    assert site.ctx.metrics.total("bessai.safety.blocks", rule=SOC_MIN) == 1


async def test_forcing_left_by_an_earlier_gateway_is_stopped_when_it_worsens(autojump_clock):
    sim = Simulator(soc_pct=4.0)
    sim.inverter.settings["discharge_cutoff"] = 0.0
    async with sim:
        earlier = UniversalDriver(sim.profile, stream_factory=sim.stream_factory())
        for tag, value in [("forcible_period", 30), ("forcible_discharge_power", 2000),
                           ("forcible_mode", 2)]:
            await earlier.write_tag(tag, value)
        await earlier.aclose()
        assert sim.state().forced_mode == 2
        async with running(sim):
            assert sim.state().forced_mode == 0  # stopped within the first polls


async def test_stop_that_cannot_be_written_is_logged_once_and_done_when_the_link_returns(
        autojump_clock):
    sim = Simulator(soc_pct=50)
    sim.inverter.settings["discharge_cutoff"] = 0.0
    with capture_logs() as logs:
        async with sim, running(sim) as site:
            await site.gate.submit(command(Action.DISCHARGE, 2000))
            sim.faults.silent = True  # the device stops answering...
            sim.model.soc_pct = 4.0  # ...while the battery drains
            await trio.sleep(15)  # the link times out and goes down; the lease still holds
            assert sim.state().forced_mode == 2
            sim.faults.clear()
            await site.ctx.link.wait_up()
            back = trio.current_time()
            stopped = await wait_for(lambda: sim.state().forced_mode == 0, step_s=0.01)
            assert stopped - back <= config_poll_s(site) + 0.5
    assert [e["event"] for e in logs].count("SAFETY_STOP_FAILED") == 1
    assert [e["event"] for e in logs].count("SAFETY_STOP") == 1


async def test_heartbeat_resumes_the_moment_the_device_link_returns(autojump_clock):
    sim = Simulator(soc_pct=50)
    with capture_logs() as logs:
        async with sim, running(sim) as site:
            sim.faults.silent = True
            await trio.sleep(120)
            sim.faults.clear()
            await site.ctx.link.wait_up()
            up_at = site.ctx.link.status.since
            beats = sim.state().heartbeat_count
            await wait_for(lambda: sim.state().heartbeat_count > beats, step_s=0.01)
            assert trio.current_time() - up_at <= 0.5
            assert not sim.state().comm_lost
    late = [e for e in logs if e["event"] == "HEARTBEAT_LATE"]
    assert len(late) == 1
    restored = [e for e in logs if e["event"] == "HEARTBEAT_RESTORED"]
    assert len(restored) == 1
    assert restored[0]["gap_s"] > 120


async def test_heartbeat_late_is_said_when_the_gap_passes_the_threshold_not_after_recovery(
        autojump_clock):
    sim = Simulator(soc_pct=50)
    with capture_logs() as logs:
        async with sim, running(sim) as site:
            spec = site.config.heartbeat
            threshold_s = spec.interval_s + site.config.heartbeat_late_tolerance_s
            sim.faults.silent = True
            went = site.ctx.heartbeat.last_beat_at
            await wait_for(lambda: any(e["event"] == "HEARTBEAT_LATE" for e in logs), step_s=0.01)
            said_at = trio.current_time()
            # Said at the threshold (while the device's own timeout still runs), link still down.
            assert said_at - went <= threshold_s + 0.1
            assert said_at - went < spec.device_timeout_s
            assert not any(e["event"] == "HEARTBEAT_RESTORED" for e in logs)
            sim.faults.clear()
            await wait_for(lambda: any(e["event"] == "HEARTBEAT_RESTORED" for e in logs))
    late = [e for e in logs if e["event"] == "HEARTBEAT_LATE"]
    assert len(late) == 1  # once per streak
    assert late[0]["gap_s"] >= threshold_s


async def test_lease_is_renewed_while_forced_and_forcing_ends_at_command_expiry(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim) as site:
        t0 = trio.current_time()
        await site.gate.submit(command(Action.CHARGE, 2000, ttl_s=150))
        await wait_for(lambda: sim.state().forced_mode == 0, step_s=0.01)
        ended = trio.current_time() - t0
        leases = [w.at for w in sim.write_log if w.tag == "forcible_period"]
        assert len(leases) >= 7  # the apply, then every 20 s
        assert max(b - a for a, b in itertools.pairwise(leases)) <= 20.0 + 0.5
        assert 149.5 <= ended <= 150.5  # ended by the gateway at expires_at, not by the lease
        assert site.dispatcher.active is None


async def test_auto_hands_control_back_to_the_working_mode(autojump_clock):
    sim = Simulator(soc_pct=50)
    async with sim, running(sim) as site:
        await site.gate.submit(command(Action.DISCHARGE))
        assert sim.state().forced_mode == 2
        outcome = await site.gate.handle_command_message(json.dumps({
            "id": "c-auto", "site_id": SITE, "device_id": DEVICE, "action": "auto",
            "expires_at": trio_wall_clock()() + 60}).encode(), {})
        assert outcome.decision is Decision.ACCEPTED
        assert sim.state().forced_mode == 0
        assert site.dispatcher.active is None


async def test_an_embedding_app_can_run_guard_and_watchdog_loop_without_the_site_tree(
        autojump_clock):
    """The runbook's `SafetyGuard.watchdog_loop()`: an app with its own tree feeds the device."""
    from bessai.control import DeviceLink, DispatchTags, SafetyGuard, SiteContext

    async with Simulator(soc_pct=50) as sim:
        ctx = SiteContext(SITE, DEVICE, trio_wall_clock())
        driver = UniversalDriver(sim.profile, stream_factory=sim.stream_factory())
        link = DeviceLink(driver, SITE, DEVICE, handle=ctx.link,
                          latest_outputs=[ctx.snapshots.set])
        guard = SafetyGuard(ctx, dispatch_tags=DispatchTags.from_profile(sim.profile))
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await nursery.start(guard.run)
            await nursery.start(guard.watchdog_loop, sim.profile.watchdog)
            await trio.sleep(300)
            assert sim.state().heartbeat_count >= 30
            assert not sim.state().comm_lost
            assert guard.state.ok
            nursery.cancel_scope.cancel()


async def test_status_tells_an_operator_what_the_control_loop_is_doing(autojump_clock):
    sim = Simulator(soc_pct=4.5)
    async with sim, running(sim) as site:
        await site.gate.submit(command(Action.CHARGE, 1000))
        await trio.sleep(25)
        status = site.status()
        json.dumps(status)  # JSON-ready
        assert status["link"]["state"] == "up"
        assert status["link"]["snapshot_age_s"] <= config_poll_s(site) + 0.5
        assert status["safety"]["blocked_discharge"] is True
        assert status["safety"]["blocked_charge"] is False
        assert [r["rule"] for r in status["safety"]["rules"]] == [SOC_MIN]
        assert status["forcing"]["action"] == "charge"
        assert status["forcing"]["lease_renewed_s_ago"] <= 20.5
        assert status["heartbeat"]["max_gap_s"] <= sim.profile.watchdog.interval_s + 1


async def test_telemetry_keeps_flowing_during_a_safety_block(autojump_clock):
    sim = Simulator(soc_pct=50)
    seen = []
    async with sim, running(sim, outputs=[seen.append]) as site:
        sim.model.temp_c = 47.0
        await wait_for(lambda: TEMP_MAX in site.ctx.safety.active)
        before = len(seen)
        await trio.sleep(30)
        assert TEMP_MAX in site.ctx.safety.active
        assert len(seen) - before >= 29  # one snapshot per fast poll, block or not
        assert seen[-1].value("battery_temp") > 45.0
