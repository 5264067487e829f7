"""The durable uplink against Google's Pub/Sub emulator, with faults injected at the transport.

Virtual time: a MockClock with autojump threshold 0; the fault transport freezes virtual time
while a request is with the real emulator (see tests/pubsub_faults.py), so hours of outage pass
in seconds and no virtual deadline races a real socket.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import json
import math
import uuid

import httpx
import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import MockClock

from bessai.clock import trio_wall_clock
from bessai.uplink import spool as spool_mod
from bessai.uplink.credentials import ServiceAccountKey
from tests.conftest_pubsub import PubsubTopic
from tests.integration.uplink_harness import Received, start_stack
from tests.keys import write_service_account_key
from tests.pubsub_emulator import create_topic
from tests.pubsub_faults import FaultyTransport, frozen_virtual_time

pytestmark = pytest.mark.emulator


@pytest.fixture
def clock() -> MockClock:
    return MockClock(autojump_threshold=0)


async def pull(topic) -> Received:
    with frozen_virtual_time():
        return Received(await trio.to_thread.run_sync(topic.pull_all))


async def test_published_messages_arrive_field_by_field(clock, tmp_path, pubsub_topic):
    wall = trio_wall_clock()
    async with trio.open_nursery() as n:
        stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall)
        await stack.send_snapshot("inv1", soc=55.5, power_w=-1200)
        await trio.sleep(1)
        await stack.send_event("inv1", "SAFETY_BLOCK", rule="soc_min", value=4.9, limit=5.0)
        await stack.wait_drained()
        n.cancel_scope.cancel()
    got = await pull(pubsub_topic)
    assert len(got.messages) == 2
    tele, event = sorted(got.messages, key=lambda m: int(m["attributes"]["seq"]))
    assert tele["attributes"] == {
        "msg_id": tele["attributes"]["msg_id"], "seq": "1", "site_id": "site1",
        "device_id": "inv1", "kind": "telemetry", "schema": "bessai.telemetry.v1",
        "event_time": "2026-01-01T00:00:00.000Z"}
    assert len(tele["attributes"]["msg_id"]) == 36
    assert json.loads(tele["data"]) == {"site_id": "site1", "device_id": "inv1",
                                        "ts": 1_767_225_600.0,
                                        "values": {"soc": 55.5, "power_w": -1200}}
    assert event["attributes"]["kind"] == "event"
    assert event["attributes"]["schema"] == "bessai.event.v1"
    assert event["attributes"]["seq"] == "2"
    assert event["attributes"]["event_time"] == "2026-01-01T00:00:01.000Z"
    body = json.loads(event["data"])
    assert body["name"] == "SAFETY_BLOCK"
    assert body["body"] == {"rule": "soc_min", "value": 4.9, "limit": 5.0}


async def run_outage(tmp_path, topic, *, cut_ticks: int, devices: int, live_ticks: int,
                     lose_responses: int = 2, blackhole: bool = False,
                     timeout_s: float = 600) -> tuple[Received, object, list[str]]:
    """Sample every device at 1 Hz (data time); the link is cut for the first ``cut_ticks``
    samples, then ``live_ticks`` more samples are taken while the backlog drains.

    Each tick sleeps 1 virtual second (and every 30 ticks lets the recorder's commits catch
    up), so the outage lasts at least ``cut_ticks`` seconds of Trio time (the clock jumps
    further while worker threads run). Returns what arrived, the stack and the operator
    events logged.
    """
    wall = trio_wall_clock()
    wall0 = wall()
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    t0 = trio.current_time()
    transport.cut(t0, math.inf)
    transport.lose_left = lose_responses
    transport.blackhole = blackhole
    names = [f"inv{i}" for i in range(devices)]
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            stack = await start_stack(n, tmp_path, topic, wall=wall, transport=transport,
                                      timeout_s=timeout_s)
            for tick in range(cut_ticks + live_ticks):
                if tick == cut_ticks:
                    outage_s = trio.current_time() - t0
                    backlog = stack.spool.stats().depth
                    during = stack.uplink.status()
                    transport.end_cuts()
                for name in names:
                    await stack.send_snapshot(name, ts=wall0 + tick, soc=50.0 + tick % 10,
                                              power_w=tick)
                if tick % 60 == 0:
                    await stack.send_event(names[0], "SAFETY_BLOCK", ts=wall0 + tick,
                                           rule="soc_min", value=4.9, limit=5.0)
                if tick % 30 == 29:
                    await stack.wait_recorded()  # commits keep up with the samples
                await trio.sleep(1)
            depth_at_end = stack.spool.stats().depth
            with trio.move_on_after(3600) as waited:
                await stack.wait_drained()
            assert not waited.cancelled_caught, (stack.spool.stats(), stack.uplink.link)
            n.cancel_scope.cancel()
    got = await pull(topic)
    assert during["state"] in ("down", "probing")
    assert during["reason"].startswith("Timeout" if blackhole else "ConnectError")
    assert during["down_for_s"] >= cut_ticks - 60
    assert during["spool"]["depth"] == backlog
    assert stack.uplink.status()["state"] == "up"
    assert outage_s >= cut_ticks
    assert backlog >= cut_ticks * devices  # nothing went out while the link was cut
    # the backlog drained while live data kept arriving: by the end of the live phase only the
    # last window of live samples could still be waiting, not the outage's backlog
    assert depth_at_end <= devices * 31, depth_at_end
    assert stack.sink.total("bessai.spool.drops") == 0
    seqs = got.seqs()
    for name in names:
        assert seqs[name] == set(range(1, stack.spool.last_seq[name] + 1)), name
    assert len(got.by_msg_id) == stack.sent  # every accepted message arrived
    got.assert_duplicates_are_identical()
    return got, stack, [e["event"] for e in logs]


async def test_five_minute_cut_every_message_arrives_seq_complete(clock, tmp_path, pubsub_topic):
    got, stack, events = await run_outage(tmp_path, pubsub_topic, cut_ticks=300, devices=2,
                                          live_ticks=120)
    assert events.count("LINK_DOWN") == 1  # once per transition, not once per attempt
    assert events.count("LINK_UP") == 1
    assert got.duplicates == 2  # the two lost responses, re-sent with the same msg_id
    assert stack.transport.failed > 3


async def test_black_holed_network_for_five_minutes_times_out_and_recovers(
        clock, tmp_path, pubsub_topic):
    got, _, events = await run_outage(tmp_path, pubsub_topic, cut_ticks=300, devices=2,
                                      live_ticks=120, lose_responses=0, blackhole=True,
                                      timeout_s=10)
    assert events.count("LINK_DOWN") == 1
    assert events.count("LINK_UP") == 1
    assert got.duplicates == 0


async def test_thirty_minute_cut_at_1hz_ten_devices_drains_while_live_data_continues(
        clock, tmp_path, pubsub_topic):
    got, _, events = await run_outage(tmp_path, pubsub_topic, cut_ticks=1800,
                                      devices=10, live_ticks=120)
    assert got.kinds()["telemetry"] >= 10 * (1800 + 120)
    assert got.kinds()["event"] == len(range(0, 1920, 60))
    assert events.count("LINK_DOWN") == 1
    assert events.count("LINK_UP") == 1
    assert got.duplicates == 2


async def test_72_hour_cut_with_small_budget_drops_only_old_telemetry_and_sends_gaps(
        clock, tmp_path, pubsub_topic):
    """Three devices sampled every 5 minutes (data time) for 72 hours of cut link, a budget
    of about 300 telemetry rows, a critical SAFETY_BLOCK every hour."""
    wall = trio_wall_clock()
    wall0 = wall()
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    t0 = trio.current_time()
    transport.cut(t0, math.inf)
    budget = 300 * 330
    names = ["inv0", "inv1", "inv2"]
    step_s = 300
    ticks = 72 * 3600 // step_s
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, transport=transport,
                                      max_bytes=budget)
            for tick in range(ticks + 12):
                if tick == ticks:
                    outage_s = trio.current_time() - t0
                    transport.end_cuts()
                for name in names:
                    await stack.send_snapshot(name, ts=wall0 + step_s * tick, soc=50.0)
                if tick % 12 == 0:
                    await stack.send_event("inv1", "SAFETY_BLOCK", ts=wall0 + step_s * tick,
                                           rule="temp_max", value=45.5, limit=45.0)
                if tick % 12 == 11:
                    await stack.wait_recorded()
                await trio.sleep(step_s)
            await stack.wait_drained()
            n.cancel_scope.cancel()
    got = await pull(pubsub_topic)
    assert outage_s >= 72 * 3600
    events = [e["event"] for e in logs]
    assert events.count("SPOOL_BUDGET_WARN") == 1
    assert events.count("SPOOL_BUDGET_FULL") == 1
    # every critical event arrives
    safety = [m for m in got.of_kind("event") if got.payload(m)["name"] == "SAFETY_BLOCK"]
    assert len(safety) == len(range(0, ticks + 12, 12))
    gaps = [got.payload(m) for m in got.of_kind("gap")]
    assert gaps, "gap records must arrive"
    dropped = stack.spool.stats().drops["budget"]
    assert sum(g["dropped"]["count"] for g in gaps) == dropped > ticks  # most were dropped
    seqs = got.seqs()
    for name in names:
        last = stack.spool.last_seq[name]
        gap_ranges = [g["dropped"] for g in gaps if g["device_id"] == name]
        covered = set(seqs[name])
        for g in gap_ranges:
            covered |= set(range(g["first_seq"], g["last_seq"] + 1))
        assert covered == set(range(1, last + 1)), name  # no silent hole
        missing = set(range(1, last + 1)) - seqs[name]
        telemetry = {int(m["attributes"]["seq"]) for m in got.of_kind("telemetry")
                     if m["attributes"]["device_id"] == name}
        assert max(missing) < min(telemetry)  # only the oldest telemetry was dropped
        assert sum(g["count"] for g in gap_ranges) == len(missing)


async def test_429_and_503_storms_honour_retry_after_and_lose_nothing(
        clock, tmp_path, pubsub_topic):
    wall = trio_wall_clock()
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    transport.storm(429, 4, "7")
    async with trio.open_nursery() as n:
        stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, transport=transport)
        for i in range(20):
            await stack.send_snapshot("inv1", soc=float(i))
        await stack.wait_recorded()
        while transport.calls < 5:  # four 429s and the call that got through
            await trio.sleep(1)
        storm_429 = list(transport.call_times)
        until = wall() + 30
        http_date = email.utils.format_datetime(dt.datetime.fromtimestamp(until, dt.UTC),
                                                usegmt=True)
        transport.storm(503, 3, http_date)
        date_storm_start = len(transport.call_times)
        for i in range(20):
            await stack.send_snapshot("inv2", soc=float(i))
        await stack.wait_drained()
        n.cancel_scope.cancel()
    got = await pull(pubsub_topic)
    assert len(got.by_msg_id) == 40
    assert transport.status_counts == {429: 4, 503: 3}
    gaps = [b - a for a, b in itertools.pairwise(storm_429)]
    assert len(gaps) >= 4
    assert all(g >= 7 for g in gaps[:4])  # Retry-After: 7 honoured
    retries_after_date = transport.call_times[date_storm_start + 1:]
    first_after = min(retries_after_date)
    assert trio_wall_clock()() - trio.current_time() + first_after >= until - 1
    assert stack.sink.total("bessai.publish.retries") == 7


async def test_poison_message_is_dead_lettered_and_the_rest_flow(clock, tmp_path, pubsub_topic):
    wall = trio_wall_clock()
    transport = FaultyTransport(httpx.AsyncHTTPTransport(), poison_marker=b'"note":"POISON"')
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, transport=transport)
            # hold the link so all 50 go out in one batch, then let it through
            transport.cut(trio.current_time(), math.inf)
            for i in range(50):
                await stack.send_snapshot("inv1", soc=float(i), note="POISON" if i == 17 else "ok")
            await stack.wait_recorded()
            transport.end_cuts()
            with trio.move_on_after(3600):
                while stack.uplink.published < 49 + 1:  # the rest, and the alert
                    await trio.sleep(1)
            assert stack.uplink.published == 50, (stack.spool.stats(), stack.uplink, transport)
            n.cancel_scope.cancel()
    got = await pull(pubsub_topic)
    telemetry = got.of_kind("telemetry")
    assert len(telemetry) == 49
    assert 18 not in {int(m["attributes"]["seq"]) for m in telemetry}
    alerts = [got.payload(m) for m in got.of_kind("event")]
    assert [a["name"] for a in alerts] == ["PUBSUB_POISON_MESSAGE"]
    dead = list(spool_mod.iter_rows(stack.spool.path, table="dead_letter"))
    assert [r.seq for r in dead] == [18]
    assert alerts[0]["body"]["msg_id"] == dead[0].msg_id
    assert stack.spool.stats().dead_letters == 1
    assert [e["event"] for e in logs].count("PUBSUB_POISON_MESSAGE") == 1


async def test_missing_topic_is_a_config_fault_alerted_once_and_data_is_kept(
        clock, tmp_path, pubsub_emulator):
    wall = trio_wall_clock()
    topic = PubsubTopic(pubsub_emulator, "bessai-test", f"late-{uuid.uuid4().hex[:8]}", "x")
    topic.subscription = f"{topic.topic}-sub"
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            stack = await start_stack(n, tmp_path, topic, wall=wall)
            for i in range(10):
                await stack.send_snapshot("inv1", soc=float(i))
            await stack.wait_recorded()
            await trio.sleep(600)  # ten minutes of 404s
            assert stack.spool.stats().depth == 10  # the data is kept
            with frozen_virtual_time():
                await trio.to_thread.run_sync(create_topic, topic.emulator, topic.project,
                                             topic.topic, topic.subscription)
            await stack.wait_drained()
            n.cancel_scope.cancel()
    events = [e for e in logs if e["event"] == "PUBSUB_CONFIG_FAULT"]
    assert len(events) == 1  # loud, but once per fault, not once per retry
    assert events[0]["topic"] == topic.topic_path
    assert (f"gcloud pubsub topics create {topic.topic} --project {topic.project}"
            in events[0]["check"])
    assert "GCP_PROJECT_ID" in events[0]["check"]  # the key that exists, not PUBSUB_PROJECT
    assert [e["event"] for e in logs].count("PUBSUB_CONFIG_OK") == 1
    retries = stack.sink.total("bessai.publish.results", status="404")
    assert 2 <= retries <= 600 / 60 + 1  # retried slowly: no faster than once a minute
    got = await pull(topic)
    assert len(got.by_msg_id) == 10


async def test_rows_left_by_a_crash_are_sent_again_with_their_msg_id(
        clock, tmp_path, pubsub_topic):
    wall = trio_wall_clock()
    spool_path = tmp_path / "spool.sqlite"
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    transport.lose_left = 1  # the first batch reaches Pub/Sub but its answer is lost...
    transport.cut_after_loss = True  # ...and the link dies with it
    async with trio.open_nursery() as n:
        stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, transport=transport,
                                  spool_path=spool_path)
        for i in range(30):
            await stack.send_snapshot("inv1", soc=float(i))
        await stack.wait_recorded()
        while transport.lose_left:
            await trio.sleep(0.1)
        for i in range(30):
            await stack.send_snapshot("inv1", soc=float(i))
        await stack.wait_recorded()
        n.cancel_scope.cancel()  # then the gateway goes down
    before = {r.msg_id for r in spool_mod.iter_rows(spool_path)}
    assert len(before) == 60
    async with trio.open_nursery() as n:
        stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, spool_path=spool_path)
        await stack.wait_drained()
        n.cancel_scope.cancel()
    got = await pull(pubsub_topic)
    assert set(got.by_msg_id) == before
    assert got.seqs()["inv1"] == set(range(1, 61))
    got.assert_duplicates_are_identical()
    assert 1 <= got.duplicates <= 30  # the lost batch, re-sent with the same msg_ids


async def test_a_rejected_poison_alert_does_not_raise_another_alert(
        clock, tmp_path, pubsub_topic):
    wall = trio_wall_clock()
    # everything that mentions PUBSUB_POISON_MESSAGE is rejected too, alerts included
    transport = FaultyTransport(httpx.AsyncHTTPTransport(), poison_marker=b"POISON")
    async with trio.open_nursery() as n:
        stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, transport=transport)
        await stack.send_snapshot("inv1", note="POISON")
        await stack.send_snapshot("inv1", note="fine")
        await stack.wait_recorded()
        await trio.sleep(600)
        n.cancel_scope.cancel()
    assert stack.spool.stats().dead_letters == 2  # the message and its alert, then silence
    assert stack.spool.stats().depth == 0
    assert transport.status_counts[400] in (2, 3)  # (the batch,) the message, the alert


@pytest.mark.parametrize(("rejections", "backoffs"), [(1, 0), (2, 1)])
async def test_401_refreshes_credentials_once_then_backs_off(
        clock, tmp_path, pubsub_topic, rejections, backoffs):
    wall = trio_wall_clock()
    key = tmp_path / "sa.json"
    write_service_account_key(key)
    creds = ServiceAccountKey(key)
    # Sign the first token before any timer exists: the first RSA signing (loading the key and
    # the crypto backend, in a worker thread) can take longer than autojump's patience, and
    # with the stack's timers armed the virtual clock would run past them meanwhile.
    with frozen_virtual_time():
        await creds.headers()
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    transport.unauthorized_left = rejections
    async with trio.open_nursery() as n:
        stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, credentials=creds,
                                  transport=transport)
        await stack.send_snapshot("inv1")
        await stack.wait_drained()
        n.cancel_scope.cancel()
    assert transport.status_counts == {401: rejections}
    assert creds.refreshes == 2  # the first token, and exactly one refresh after a 401
    assert stack.sink.total("bessai.publish.retries") == backoffs
    assert all(t.startswith("Bearer ey") for t in transport.seen_tokens)
    assert len(await pull(pubsub_topic)) == 1


async def test_a_pubsub_rejecting_everything_degrades_the_link_and_holds_rows(
        clock, tmp_path, pubsub_topic):
    """Pub/Sub answers 400 to every publish: not a run of poison messages. After
    ``all_rejected_after`` dead letters in a row the uplink holds rows (no more dead letters),
    the link is `degraded` with the reason — never `up` — and both events are logged once; when
    Pub/Sub accepts again every held row arrives."""
    wall = trio_wall_clock()
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    transport.storm(400, 10**9)  # every request, until cleared below
    with capture_logs() as logs:
        async with trio.open_nursery() as n:
            stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, transport=transport)
            uplink = stack.uplink
            for i in range(200):
                await stack.send_snapshot("inv1", soc=float(i))
            await stack.wait_recorded()
            with trio.fail_after(3600):
                while not uplink.all_rejected:
                    await trio.sleep(1)
            await trio.sleep(1800)  # half an hour of 400s
            stats = stack.spool.stats()
            assert stats.dead_letters == uplink.all_rejected_after  # then it stopped
            assert uplink.link.state == "degraded"
            assert "rejects every message" in uplink.link.reason
            assert "400" in uplink.link.reason
            status = uplink.status()
            assert (status["state"], status["all_rejected"]) == ("degraded", True)
            held = stats.depth
            assert held >= 200 - uplink.all_rejected_after  # the rest are held, not lost
            requests_in_half_hour = transport.calls
            transport.storms.clear()  # Pub/Sub accepts again
            await stack.wait_drained()
            assert uplink.link.state == "up"
            assert not uplink.all_rejected
            n.cancel_scope.cancel()
    names = [e["event"] for e in logs]
    assert names.count("UPLINK_ALL_REJECTED") == 1
    assert names.count("UPLINK_ALL_REJECTED_CLEARED") == 1
    entered = next(e for e in logs if e["event"] == "UPLINK_ALL_REJECTED")
    assert entered["dead_letters_in_row"] == stack.uplink.all_rejected_after
    assert names.count("LINK_DOWN") == 0  # Pub/Sub answered all along: degraded, not down
    # backed off while held: probes (two requests each) at least all_rejected_retry_s apart,
    # growing to the backoff cap — a few hundred requests in half an hour, not one per row
    assert requests_in_half_hour < 400
    got = await pull(pubsub_topic)
    telemetry = got.of_kind("telemetry")
    assert len(telemetry) == 200 - stack.uplink.all_rejected_after  # held rows all arrived
    assert stack.spool.stats().dead_letters == stack.uplink.all_rejected_after


async def test_a_genuine_poison_message_at_the_head_does_not_hold_the_rest(
        clock, tmp_path, pubsub_topic):
    """Ten poison messages in a row enter the all-rejected state; the probe offers two rows,
    so a good row behind a poison one ends the state and the rest flow."""
    wall = trio_wall_clock()
    transport = FaultyTransport(httpx.AsyncHTTPTransport(), poison_marker=b'"note":"POISON"')
    async with trio.open_nursery() as n:
        stack = await start_stack(n, tmp_path, pubsub_topic, wall=wall, transport=transport)
        stack.uplink.all_rejected_after = 3
        transport.cut(trio.current_time(), math.inf)
        for i in range(10):
            await stack.send_snapshot("inv1", soc=float(i), note="POISON" if i < 4 else "ok")
        await stack.wait_recorded()
        transport.end_cuts()
        with trio.fail_after(3600):
            while stack.uplink.published < 6:
                await trio.sleep(1)
        assert not stack.uplink.all_rejected
        assert stack.uplink.link.state == "up"
        n.cancel_scope.cancel()
    # 3 poison rows dead-lettered, then held; the 4th went out as a probe and was isolated
    # once a good row proved Pub/Sub accepts messages
    assert stack.spool.stats().dead_letters == 4
    assert stack.uplink.published == 6 + 4  # the good rows and one alert per dead letter
