"""The device link: one connection, writes ahead of reads by priority, publishing that never
blocks, and device outages handled as states (virtual time, fault injection at the driver)."""

import pytest
import trio
from structlog.testing import capture_logs

from bessai.control.context import LinkHandle
from bessai.control.device_link import DeviceLink, LinkDown, LinkState, Priority
from bessai.observe.sink import RecordingSink
from tests.unit.fake_device import FakeDriver


async def test_queued_writes_go_out_by_priority_before_the_next_read(autojump_clock):
    driver = FakeDriver(read_s=1.0)
    link = DeviceLink(driver, "site1", "inv1", fast_interval_s=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await link.wait_up()
        await trio.sleep(0.1)  # a read (1 s) is now in flight
        reads_before = driver.reads
        for tag, prio in [("forcible_charge_power", Priority.DISPATCH),
                          ("heartbeat", Priority.HEARTBEAT),
                          ("forcible_mode", Priority.SAFETY)]:
            nursery.start_soon(link.write, tag, 1, prio)
        await trio.sleep(1.5)
        assert [w[1] for w in driver.writes] == ["forcible_mode", "heartbeat",
                                                 "forcible_charge_power"]
        assert driver.reads == reads_before + 1  # only the read already in flight came first
        nursery.cancel_scope.cancel()


async def test_snapshots_reach_every_output_and_a_broken_one_does_not_stop_polling(
        autojump_clock):
    got = []

    def broken(_snapshot):
        raise RuntimeError("consumer bug")

    link = DeviceLink(FakeDriver(), "site1", "inv1", fast_interval_s=1.0,
                      outputs=[broken, got.append])
    with trio.move_on_after(10.5):
        await link.run()
    assert len(got) >= 10
    assert link.status.last_snapshot_at is not None


async def test_thirty_minute_device_outage_is_a_state_logged_once_each_way(autojump_clock):
    driver = FakeDriver()
    sink = RecordingSink()
    link = DeviceLink(driver, "site1", "inv1", fast_interval_s=1.0, metrics=sink)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await trio.sleep(5)
            driver.down = True
            await trio.sleep(30 * 60)
            assert link.status.state is LinkState.DOWN
            assert "ConnectionError" in link.status.reason
            attempts_during_outage = driver.connects
            driver.down = False
            await trio.sleep(61)  # at most one capped backoff
            assert link.status.state is LinkState.UP
            nursery.cancel_scope.cancel()
    events = [e["event"] for e in logs if e["event"].startswith("DEVICE_LINK")]
    assert events == ["DEVICE_LINK_UP", "DEVICE_LINK_DOWN", "DEVICE_LINK_UP"]
    back = [e for e in logs if e["event"] == "DEVICE_LINK_UP"][-1]
    assert back["down_for_s"] >= 30 * 60
    # capped backoff: a retry at least every 60 s, not a tight loop
    assert 30 <= attempts_during_outage <= 60
    assert sink.total("bessai.device.link_down") == 1


async def test_write_while_down_fails_fast_and_wait_up_returns_when_back(autojump_clock):
    driver = FakeDriver(down=True)
    handle = LinkHandle("inv1")
    link = DeviceLink(driver, "site1", "inv1", handle=handle)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await trio.sleep(1)
        start = trio.current_time()
        with pytest.raises(LinkDown, match="down"):
            await handle.write("heartbeat", 1, Priority.HEARTBEAT)
        assert trio.current_time() == start
        driver.down = False
        await handle.wait_up()
        await handle.write("heartbeat", 1, Priority.HEARTBEAT)
        assert driver.writes[-1][1:] == ("heartbeat", 1)
        nursery.cancel_scope.cancel()
    assert handle.current is None  # detached when it ended


async def test_device_refusing_a_write_fails_that_write_only(autojump_clock):
    class Refusing(FakeDriver):
        async def write_tag(self, name, value):
            raise ValueError(f"{name}={value} out of range")

    link = DeviceLink(Refusing(), "site1", "inv1")
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        await link.wait_up()
        with pytest.raises(ValueError, match="out of range"):
            await link.write("forcible_mode", 7, Priority.DISPATCH)
        assert link.up
        nursery.cancel_scope.cancel()
