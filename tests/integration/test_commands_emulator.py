"""Dispatch commands pulled from the emulator: acked only after the handler returned, a failing
handler does not block the others, and the link backs off while the subscription is out of
reach."""

from __future__ import annotations

import base64
import json
import math
import time

import httpx
import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import MockClock

from bessai.clock import trio_wall_clock
from bessai.model import Action, Command
from bessai.uplink.credentials import Endpoint
from bessai.uplink.pull import CommandSource, publish_command
from tests.pubsub_faults import FaultyTransport, frozen_virtual_time

pytestmark = pytest.mark.emulator


@pytest.fixture
def clock() -> MockClock:
    return MockClock(autojump_threshold=0)


def command(n: int) -> Command:
    return Command(id=f"cmd-{n}", site_id="site1", device_id="inv1", action=Action.CHARGE,
                   power_w=1000.0 * n, issued_at=1_767_225_600.0, expires_at=1_767_225_900.0)


async def publish(topic, transport, *commands: Command) -> None:
    async with httpx.AsyncClient(transport=transport) as client:
        for c in commands:
            await publish_command(client, topic.project, topic.topic, c,
                                  endpoint=Endpoint.for_emulator(topic.emulator.host))


def source(topic, transport, handler, **kw) -> CommandSource:
    return CommandSource(httpx.AsyncClient(transport=transport), topic.project,
                         topic.subscription, handler,
                         endpoint=Endpoint.for_emulator(topic.emulator.host),
                         return_immediately=True, retry_delay_s=1, wall_clock=trio_wall_clock(),
                         **kw)


async def test_commands_are_acked_only_after_the_handler_returned(clock, pubsub_topic):
    timeline: list = []
    transport = FaultyTransport(httpx.AsyncHTTPTransport(), timeline=timeline)
    await publish(pubsub_topic, transport, command(1), command(2), command(3))
    seen: list[dict] = []

    async def handler(data: bytes, attributes: dict) -> None:
        await trio.sleep(0.5)  # the safety gate takes its time
        seen.append(json.loads(data) | {"_attrs": attributes})
        timeline.append(("handled", attributes["command_id"]))

    src = source(pubsub_topic, transport, handler)
    async with trio.open_nursery() as n:
        await n.start(src.run)
        while len(seen) < 3:
            await trio.sleep(0.1)
        await trio.sleep(2)
        n.cancel_scope.cancel()
    assert [s["id"] for s in seen] == ["cmd-1", "cmd-2", "cmd-3"]
    assert seen[0]["action"] == "charge"
    assert seen[0]["power_w"] == 1000.0
    assert seen[0]["_attrs"]["kind"] == "command"
    assert seen[0]["_attrs"]["schema"] == "bessai.command.v1"
    handled = 0
    acked = 0
    for verb, body in timeline:
        if verb == "handled":
            handled += 1
        elif verb == "acknowledge":
            acked += len(body["ackIds"])
            assert acked <= handled  # never acked before its handler returned
    assert acked == 3
    # nothing comes back: all three were acknowledged
    assert (await trio.to_thread.run_sync(pubsub_topic.pull_all)) == []


async def test_a_failing_handler_does_not_block_the_others_and_is_redelivered(
        clock, pubsub_topic):
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    await publish(pubsub_topic, transport, command(1), command(2), command(3))
    attempts: dict[str, int] = {}
    done: list[str] = []

    async def handler(data: bytes, attributes: dict) -> None:
        cid = json.loads(data)["id"]
        attempts[cid] = attempts.get(cid, 0) + 1
        if cid == "cmd-2" and attempts[cid] == 1:
            raise RuntimeError("safety gate unavailable")
        done.append(cid)

    src = source(pubsub_topic, transport, handler)
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            await n.start(src.run)
            while len(done) < 3:
                await trio.sleep(0.2)
                # the emulator's nack delay runs on the real clock: let some real time pass
                with frozen_virtual_time():
                    await trio.to_thread.run_sync(time.sleep, 0.05)
            n.cancel_scope.cancel()
    assert done[:2] == ["cmd-1", "cmd-3"]  # cmd-3 was not held up by cmd-2's failure
    assert done[2] == "cmd-2"  # redelivered after its nack delay, then handled
    assert attempts["cmd-2"] == 2
    assert [e["event"] for e in logs].count("COMMAND_HANDLER_FAILED") == 1


async def test_command_source_backs_off_while_the_link_is_down_and_logs_once(
        clock, pubsub_topic):
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    got: list[str] = []

    async def handler(data: bytes, attributes: dict) -> None:
        got.append(json.loads(data)["id"])

    src = source(pubsub_topic, transport, handler)
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            transport.cut(trio.current_time(), math.inf)
            await n.start(src.run)
            await trio.sleep(300)
            pulls_during_outage = transport.calls
            await publish(pubsub_topic, FaultyTransport(httpx.AsyncHTTPTransport()), command(7))
            transport.end_cuts()
            while not got:
                await trio.sleep(1)
            n.cancel_scope.cancel()
    assert got == ["cmd-7"]
    assert pulls_during_outage < 40  # backed off (cap 60 s), not hammering
    events = [(e["event"], e.get("link")) for e in logs]
    assert events.count(("LINK_DOWN", "commands")) == 1
    assert events.count(("LINK_UP", "commands")) == 1


async def test_overflowing_and_deep_commands_are_rejected_and_acked_never_redelivered(
        clock, pubsub_topic):
    """Issue 19, Why 3: a 400-digit power_w or expires_at (OverflowError) and deeply nested JSON
    (RecursionError) escaped the parser: COMMAND_HANDLER_FAILED, nack, redelivery forever with
    no rejection. Now each is one COMMAND_REJECTED result, and the message is acknowledged."""
    from bessai.control.events import EventOutbox
    from bessai.control.gate import CommandGate, Decision
    from bessai.control.limits import SafetyState
    from bessai.uplink.publisher import publish_json

    valid = {"id": "c-1", "site_id": "site1", "device_id": "inv1", "action": "charge",
             "power_w": 1000, "issued_at": 1_767_225_600, "expires_at": 1_767_225_900}
    hostile = [
        json.dumps(valid).replace('"power_w": 1000', '"power_w": ' + "9" * 400).encode(),
        json.dumps(valid).replace("1767225900", "9" * 400).encode(),
        b'{"id": "deep", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    ]
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport) as client:
        await publish_json(client, Endpoint.for_emulator(pubsub_topic.emulator.host),
                           pubsub_topic.topic_path,
                           [{"data": base64.b64encode(d).decode()} for d in hostile])

    class NeverApplied:
        async def apply(self, command, power_w):
            raise AssertionError(f"{command} must not reach the device")

    outbox = EventOutbox()
    gate = CommandGate("site1", "inv1", NeverApplied(), safety=SafetyState, emit=outbox.emit,
                       wall_clock=trio_wall_clock())
    calls: list[bytes] = []
    outcomes = []

    async def handler(data: bytes, attributes: dict) -> None:
        calls.append(data)
        outcomes.append(await gate.handle_command_message(data, attributes))

    src = source(pubsub_topic, transport, handler)
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            await n.start(src.run)
            for _ in range(60):  # 3 s of real time: a nacked message is back after 1 s
                await trio.sleep(0.5)
                with frozen_virtual_time():
                    await trio.to_thread.run_sync(time.sleep, 0.05)
            n.cancel_scope.cancel()
    assert sorted(calls) == sorted(hostile)  # each handled exactly once: none redelivered
    assert all(o.decision is Decision.REJECTED and o.reason for o in outcomes)
    assert [e.name for e in outbox.take_nowait()] == ["COMMAND_REJECTED"] * 3
    assert "COMMAND_HANDLER_FAILED" not in [e["event"] for e in logs]
    assert src.failed == 0
    assert (await trio.to_thread.run_sync(pubsub_topic.pull_all)) == []
