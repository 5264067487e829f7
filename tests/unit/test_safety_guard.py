"""The safety guard, watchdog and dispatch working together over one device link (virtual time;
the driver seam is a small fake until the simulator lands)."""

import itertools

import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.control.gate import Decision
from bessai.control.limits import INVALID_DATA, SOC_MIN, STALE_DATA, TEMP_MAX
from bessai.control.site import SiteConfig, build_site
from bessai.model import Action, Command
from bessai.observe.sink import RecordingSink
from tests.unit.fake_device import FakeDriver


async def start_site(nursery, driver, **config):
    sink = RecordingSink()
    site = build_site(SiteConfig("site1", "inv1", **config), lambda: driver,
                      wall_clock=trio_wall_clock(), metrics=sink)
    events = site.ctx.events.receive()
    await nursery.start(site.device_link().run)
    await nursery.start(site.safety_guard().run)
    await nursery.start(site.watchdog().run)
    return site, events, sink


def drain(events):
    out = []
    while True:
        try:
            out.append(events.receive_nowait())
        except trio.WouldBlock:
            return out


def command(action, power_w=3000.0, ttl_s=600.0):
    now = trio_wall_clock()()
    return Command(f"c-{action}-{now}", "site1", "inv1", action, power_w, now, now + ttl_s)


async def test_soc_below_min_blocks_discharge_within_one_poll(autojump_clock):
    driver = FakeDriver()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            site, events, sink = await start_site(nursery, driver)
            await trio.sleep(3)
            assert site.ctx.safety.ok
            driver.values["soc"] = 4.2
            crossed = trio.current_time()
            while not site.ctx.safety.blocked_discharge:
                await trio.sleep(0.01)
            assert trio.current_time() - crossed <= 1.0 + 0.1  # one fast poll (+ read time)
            assert not site.ctx.safety.blocked_charge
            nursery.cancel_scope.cancel()
    block = next(e for e in logs if e["event"] == "SAFETY_BLOCK")
    assert block["log_level"] == "critical"
    assert (block["rule"], block["value"], block["limit"], block["soc"]) == (SOC_MIN, 4.2,
                                                                            5.0, 4.2)
    assert (block["site"], block["device"]) == ("site1", "inv1")
    assert sink.total("bessai.safety.blocks", rule=SOC_MIN) == 1
    [event] = [e for e in drain(events) if e.name == "SAFETY_BLOCK"]
    assert event.critical
    assert event.body["rule"] == SOC_MIN


async def test_forced_discharge_is_stopped_on_the_device_when_soc_falls_below_min(
        autojump_clock):
    driver = FakeDriver()
    driver.values["soc"] = 5.2
    async with trio.open_nursery() as nursery:
        site, events, _ = await start_site(nursery, driver)
        await trio.sleep(2)
        outcome = await site.gate.submit(command(Action.DISCHARGE))
        assert outcome.decision is Decision.ACCEPTED
        assert driver.values["forcible_mode"] == 2
        await trio.sleep(5)
        driver.values["soc"] = 4.9
        crossed = trio.current_time()
        while driver.values["forcible_mode"] != 0:
            await trio.sleep(0.01)
        assert trio.current_time() - crossed <= 1.2
        assert site.dispatcher.active is None
        names = [e.name for e in drain(events)]
        assert "SAFETY_BLOCK" in names
        assert "SAFETY_STOP" in names
        nursery.cancel_scope.cancel()


async def test_forcing_left_by_an_earlier_gateway_is_stopped_too(autojump_clock):
    driver = FakeDriver()
    driver.values.update(soc=4.0, forcible_mode=2)  # forced before this gateway started
    async with trio.open_nursery() as nursery:
        await start_site(nursery, driver)
        await trio.sleep(3)
        assert driver.values["forcible_mode"] == 0
        nursery.cancel_scope.cancel()


async def test_over_temperature_blocks_both_and_clears_with_hysteresis(autojump_clock):
    driver = FakeDriver()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            site, _, _ = await start_site(nursery, driver)
            await trio.sleep(2)
            driver.values["battery_temp"] = 46.0
            await trio.sleep(1.1)
            assert site.ctx.safety.blocked_charge
            assert site.ctx.safety.blocked_discharge
            for temp in (44.0, 45.5, 44.0, 43.5):  # inside the band: no clear, no re-block
                driver.values["battery_temp"] = temp
                await trio.sleep(3)
                assert TEMP_MAX in site.ctx.safety.active
            driver.values["battery_temp"] = 42.0
            await trio.sleep(1.1)
            assert site.ctx.safety.ok
            nursery.cancel_scope.cancel()
    assert [e["event"] for e in logs if e["event"].startswith("SAFETY_")] == [
        "SAFETY_BLOCK", "SAFETY_CLEAR"]


async def test_stale_data_blocks_when_the_device_stops_answering(autojump_clock):
    driver = FakeDriver()
    async with trio.open_nursery() as nursery:
        site, _, _ = await start_site(nursery, driver)
        await trio.sleep(2)
        assert site.ctx.safety.ok
        driver.down = True
        await trio.sleep(3 + 1 + 0.5)  # stale after 3 s, noticed within one tick
        assert STALE_DATA in site.ctx.safety.active
        assert site.ctx.safety.blocked_charge
        assert site.ctx.safety.blocked_discharge
        driver.down = False
        await trio.sleep(5)
        assert site.ctx.safety.ok
        nursery.cancel_scope.cancel()


async def test_invalid_soc_blocks_both_directions(autojump_clock):
    driver = FakeDriver()
    async with trio.open_nursery() as nursery:
        site, _, _ = await start_site(nursery, driver)
        await trio.sleep(2)
        driver.values["soc"] = None  # the device's invalid sentinel
        await trio.sleep(1.1)
        assert INVALID_DATA in site.ctx.safety.active
        outcome = await site.gate.submit(command(Action.CHARGE))
        assert outcome.decision is Decision.REJECTED
        assert "invalid_data" in outcome.reason
        nursery.cancel_scope.cancel()


async def test_heartbeat_keeps_its_schedule_and_resumes_when_the_link_returns(autojump_clock):
    driver = FakeDriver()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            site, _, sink = await start_site(nursery, driver)
            await trio.sleep(60)
            beats = [t for t, tag, _ in driver.writes if tag == "heartbeat"]
            gaps = [b - a for a, b in itertools.pairwise(beats)]
            assert max(gaps) <= 10.0 + 0.2
            driver.down = True
            await trio.sleep(120)
            driver.down = False
            back = trio.current_time()
            await site.ctx.link.wait_up()
            while [t for t, tag, _ in driver.writes if tag == "heartbeat"][-1] < back:
                await trio.sleep(0.01)
            first_after = [t for t, tag, _ in driver.writes if tag == "heartbeat"][-1]
            assert first_after - site.ctx.link.current.status.since <= 0.2
            nursery.cancel_scope.cancel()
    late = [e for e in logs if e["event"] == "HEARTBEAT_LATE"]
    assert len(late) == 1
    assert late[0]["gap_s"] > 120
    assert max(sink.samples[("bessai.watchdog.heartbeat_gap_s", (("device", "inv1"),))]) > 120


async def test_lease_is_renewed_while_forced_and_forcing_ends_at_command_expiry(autojump_clock):
    driver = FakeDriver()
    async with trio.open_nursery() as nursery:
        site, _, _ = await start_site(nursery, driver)
        await trio.sleep(2)
        t0 = trio.current_time()
        await site.gate.submit(command(Action.CHARGE, ttl_s=90))
        await trio.sleep(100)
        leases = [t - t0 for t, tag, _ in driver.writes if tag == "forcible_period"]
        assert len(leases) >= 4  # the apply plus renewals every 20 s
        assert max(b - a for a, b in itertools.pairwise(leases)) <= 20.0 + 0.2
        assert driver.values["forcible_mode"] == 0  # ended at expires_at (90 s)
        stop_at = next(t - t0 for t, tag, v in driver.writes
                       if tag == "forcible_mode" and v == 0 and t > t0)
        assert 89.9 <= stop_at <= 90.5
        nursery.cancel_scope.cancel()


async def test_auto_hands_control_back(autojump_clock):
    driver = FakeDriver()
    async with trio.open_nursery() as nursery:
        site, _, _ = await start_site(nursery, driver)
        await trio.sleep(2)
        await site.gate.submit(command(Action.DISCHARGE))
        assert driver.values["forcible_mode"] == 2
        outcome = await site.gate.submit(command(Action.AUTO, power_w=0))
        assert outcome.decision is Decision.ACCEPTED
        assert driver.values["forcible_mode"] == 0
        assert site.dispatcher.active is None
        nursery.cancel_scope.cancel()


async def test_stop_that_cannot_be_written_is_logged_once_and_done_when_the_link_returns(
        autojump_clock):
    driver = FakeDriver()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            site, _, _ = await start_site(nursery, driver)
            await trio.sleep(2)
            await site.gate.submit(command(Action.DISCHARGE))
            driver.down = True
            driver.values["soc"] = 4.0  # drained while we could not see it
            await trio.sleep(300)  # stale data blocks both; the stop cannot be written
            assert driver.values["forcible_mode"] == 2
            driver.down = False
            await site.ctx.link.wait_up()
            back = trio.current_time()
            while driver.values["forcible_mode"] != 0:
                await trio.sleep(0.01)
            assert trio.current_time() - back <= 1.2
            nursery.cancel_scope.cancel()
    assert [e["event"] for e in logs].count("SAFETY_STOP_FAILED") == 1
