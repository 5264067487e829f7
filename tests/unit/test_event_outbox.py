"""The critical-event outbox never blocks the control loop and holds a bounded number of events."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from bessai.control.events import EventOutbox
from bessai.model import Event


def event(i: int) -> Event:
    return Event(name="SAFETY_BLOCK", site_id="s1", device_id="inv1", ts=float(i),
                 body={"i": i})


async def test_a_full_hold_drops_the_oldest_counts_them_and_reports_the_loss_once(
        autojump_clock):
    outbox = EventOutbox(max_held=100)
    with capture_logs() as logs:
        for i in range(150):
            outbox.emit(event(i))
        assert len(outbox.pending) == 100
        assert outbox.dropped == 50
        assert outbox.pending[0].body["i"] == 0  # the head (maybe in delivery) is kept
        delivered: list[Event] = []

        async def deliver(e: Event) -> None:
            delivered.append(e)

        async with trio.open_nursery() as n:
            n.start_soon(outbox.forward, deliver)
            await trio.sleep(1)
            n.cancel_scope.cancel()
    assert [e["event"] for e in logs] == ["EVENTS_HOLD_FULL", "EVENTS_HOLD_OK"]
    lost = [e for e in delivered if e.name == "EVENTS_DROPPED"]
    assert len(lost) == 1
    assert lost[0].body["count"] == 50
    assert (lost[0].body["first_ts"], lost[0].body["last_ts"]) == (1.0, 50.0)
    assert lost[0].critical
    assert len(delivered) == 101  # the 100 held and the one saying what was dropped
    assert not outbox.pending


def test_emit_never_blocks_nor_raises_below_the_bound():
    outbox = EventOutbox()
    for i in range(1000):
        outbox.emit(event(i))
    assert len(outbox.pending) == 1000
    assert outbox.dropped == 0
