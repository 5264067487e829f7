"""The one link state machine (bessai.link) as the device connection and its units use it: the
first connection at INFO, a down/up pair once each way, quiet transitions for a unit whose
connection already spoke, and no line per retry."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from bessai.link import Link, LinkState
from bessai.observe.sink import RecordingSink


def device_link(**kwargs) -> Link:
    return Link(name="192.168.1.50:502", down_after=1, state=LinkState.CONNECTING,
                up_event="DEVICE_LINK_UP", down_event="DEVICE_LINK_DOWN",
                reason_changed_event=None, down_level="error",
                gauge="bessai.device.connection_state", fields={"device": "inv1,inv2"}, **kwargs)


async def test_first_up_is_info_then_one_down_and_one_up_however_many_retries(autojump_clock):
    sink = RecordingSink()
    link = device_link(sink=sink)
    with capture_logs() as logs:
        link.succeeded()
        for reason in ("refused", "refused", "timed out", "refused"):  # retries, new reasons
            link.failed(reason, 5.0)
            await trio.sleep(5)
        link.succeeded()
    lines = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("DEVICE")]
    assert lines == [("DEVICE_LINK_UP", "info"), ("DEVICE_LINK_DOWN", "error"),
                     ("DEVICE_LINK_UP", "warning")]
    down = next(e for e in logs if e["event"] == "DEVICE_LINK_DOWN")
    assert (down["reason"], down["device"], down["was"]) == ("refused", "inv1,inv2", "up")
    assert next(e for e in logs if e["event"] == "DEVICE_LINK_UP" and "down_for_s" in e)[
        "down_for_s"] == 20.0
    assert sink.gauges[("bessai.device.connection_state", (("link", "192.168.1.50:502"),))] == 3


async def test_a_down_that_was_not_announced_recovers_quietly(autojump_clock):
    unit = Link(name="inv2", down_after=1, state=LinkState.CONNECTING, up_event="DEVICE_UNIT_UP",
                down_event="DEVICE_UNIT_DOWN", reason_changed_event=None,
                announce_first_up=False, gauge=None)
    with capture_logs() as logs:
        unit.succeeded()  # first up: a debug line only
        unit.failed("connection lost", 1.0, announce=False)  # its connection said it
        assert unit.state is LinkState.DOWN
        unit.succeeded()
        unit.failed("ModbusTimeout", 2.0)  # this unit alone: announced
        assert unit.retry_in_s() == 2.0
        unit.succeeded()
    loud = [e["event"] for e in logs if e["log_level"] in ("warning", "error", "info")]
    assert loud == ["DEVICE_UNIT_DOWN", "DEVICE_UNIT_UP"]
