"""The device link over the real driver and the in-process simulator (virtual time): writes ahead
of reads by priority, publishing that never blocks, and device outages handled as states."""

import pytest
import trio
from structlog.testing import capture_logs

from bessai.clock import trio_wall_clock
from bessai.control.context import LinkHandle
from bessai.control.device_link import DeviceLink, LinkDown, LinkState, Priority
from bessai.device import TagWriteRefused, UniversalDriver
from bessai.observe.sink import RecordingSink
from bessai.sim import Simulator


def link_to(sim, **kwargs):
    driver = UniversalDriver(sim.profile, stream_factory=sim.stream_factory(), site_id="site1",
                             device_id="inv1", wall_clock=trio_wall_clock())
    kwargs.setdefault("fast_interval_s", 1.0)
    return DeviceLink(driver, "site1", "inv1", **kwargs)


@pytest.mark.parametrize(("write_path", "wait_at_most"), [("direct", "one request"),
                                                          ("queue", "one poll")])
async def test_writes_go_out_by_priority_ahead_of_reads(autojump_clock, write_path,
                                                        wait_at_most):
    async with Simulator() as sim:
        link = link_to(sim, fast_interval_s=0.5, write_path=write_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await link.wait_up()
            sim.faults.delay_s = 0.3  # every answer takes 0.3 s: a poll is several requests
            await trio.sleep(0.45)  # a poll is in flight now
            first = len(sim.write_log)
            submitted = trio.current_time()
            for tag, value, prio in [("forcible_charge_power", 1000, Priority.DISPATCH),
                                     ("heartbeat", 1, Priority.HEARTBEAT),
                                     ("forcible_mode", 0, Priority.SAFETY)]:
                nursery.start_soon(link.write, tag, value, prio)
            await trio.sleep(10)
            writes = sim.write_log[first:first + 3]
            assert [w.tag for w in writes] == ["forcible_mode", "heartbeat",
                                               "forcible_charge_power"]
            # the safety write lands after the request in flight and its own round trip...
            waited = writes[0].at - submitted
            one_request = 0.3 + sim.profile.connection.cooldown_s
            if wait_at_most == "one request":
                assert waited <= 2 * one_request + 0.01
            else:  # ...or, queued in the link, after the rest of the poll
                assert waited > 2 * one_request + 0.01
            nursery.cancel_scope.cancel()


async def test_snapshots_reach_every_output_and_a_broken_one_does_not_stop_polling(
        autojump_clock):
    got, merged = [], []

    def broken(_snapshot):
        raise RuntimeError("consumer bug")

    async with Simulator() as sim:
        link = link_to(sim, outputs=[broken, got.append], latest_outputs=[merged.append],
                       slow_interval_s=5.0)
        with trio.move_on_after(12):
            await link.run()
    assert len(got) >= 10
    fast = [s for s in got if "rated_capacity" not in s.readings]
    assert fast  # fast polls carry only fast tags...
    assert all("rated_capacity" in s.readings for s in merged[1:])  # ...the merged view all


async def test_thirty_minute_device_outage_is_a_state_logged_once_each_way(autojump_clock):
    sink = RecordingSink()
    async with Simulator() as sim:
        link = link_to(sim, metrics=sink)
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(link.run)
                await link.wait_up()
                await trio.sleep(5)
                sim.faults.silent = True  # connections accepted, requests never answered
                await trio.sleep(30 * 60)
                assert link.status.state is LinkState.DOWN
                assert "Timeout" in link.status.reason
                assert link.status.retry_at is not None
                sim.faults.clear()
                await trio.sleep(61 + 10)  # at most one capped backoff, then one timeout
                assert link.status.state is LinkState.UP
                nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs if e["event"].startswith("DEVICE_LINK")]
    assert events == ["DEVICE_LINK_UP", "DEVICE_LINK_DOWN", "DEVICE_LINK_UP"]
    back = [e for e in logs if e["event"] == "DEVICE_LINK_UP"][-1]
    # down from the first unanswered request's timeout until a reconnect after the fault cleared;
    # that request went out up to one poll interval after the fault began (the poll's phase)
    poll_s = link.fast_interval_s
    assert back["down_for_s"] >= 30 * 60 - sim.profile.connection.timeout_s - poll_s
    assert sink.total("bessai.device.link_down") == 1
    # capped backoff: a new connection at least every 60 s + one timeout, never a tight loop
    assert 20 <= sim.state().connections_total <= 60


async def test_write_while_down_fails_fast_and_wait_up_returns_when_back(autojump_clock):
    async with Simulator() as sim:
        handle = LinkHandle("inv1")
        link = link_to(sim, handle=handle)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await handle.wait_up()
            sim.faults.silent = True
            while link.up:
                await trio.sleep(0.1)
            start = trio.current_time()
            with pytest.raises(LinkDown, match="down"):
                await handle.write("heartbeat", 1, Priority.HEARTBEAT)
            assert trio.current_time() == start
            sim.faults.clear()
            await handle.wait_up()
            beats = sim.state().heartbeat_count
            await handle.write("heartbeat", 1, Priority.HEARTBEAT)
            assert sim.state().heartbeat_count == beats + 1
            nursery.cancel_scope.cancel()
    assert handle.current is None  # detached when it ended


async def test_refused_write_fails_that_write_only(autojump_clock):
    async with Simulator() as sim:
        link = link_to(sim)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await link.wait_up()
            with pytest.raises(TagWriteRefused, match="outside the profile's limits"):
                await link.write("forcible_mode", 7, Priority.DISPATCH)
            with pytest.raises(TagWriteRefused, match="read-only"):
                await link.write("soc", 50, Priority.DISPATCH)
            assert link.up
            await link.write("forcible_mode", 0, Priority.DISPATCH)
            nursery.cancel_scope.cancel()
