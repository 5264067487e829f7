"""A small gateway slice for uplink tests: spool + recorder + uplink against the emulator."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import attrs
import httpx
import trio

from bessai.clock import WallClock
from bessai.control.events import EventOutbox
from bessai.model import Event, Snapshot, TagReading
from bessai.observe.sink import RecordingSink
from bessai.uplink.credentials import Credentials, Endpoint, NoAuth
from bessai.uplink.publisher import Publisher
from bessai.uplink.recorder import Recorder, record_event
from bessai.uplink.spool import Spool
from bessai.uplink.uplink import Uplink
from tests.conftest_pubsub import PubsubTopic
from tests.pubsub_faults import FaultyTransport, FreezingLimiter


@attrs.define
class Stack:
    spool: Spool
    uplink: Uplink
    recorder: Recorder
    snapshots: trio.MemorySendChannel
    events: EventOutbox
    transport: FaultyTransport
    client: httpx.AsyncClient
    sink: RecordingSink
    wall: WallClock
    sent: int = 0
    events_recorded: int = 0

    async def record_event(self, event: Event) -> None:
        await record_event(self.spool, event)
        self.events_recorded += 1

    async def send_snapshot(self, device: str, ts: float | None = None, **values: object) -> None:
        readings = {k: TagReading(v) for k, v in (values or {"soc": 50.0}).items()}
        self.sent += 1
        await self.snapshots.send(Snapshot(site_id="site1", device_id=device,
                                           ts=self.wall() if ts is None else ts,
                                           taken_at=trio.current_time(), readings=readings))

    async def send_event(self, device: str, name: str = "SAFETY_BLOCK", ts: float | None = None,
                         **body: object) -> None:
        self.sent += 1
        self.events.emit(Event(name=name, site_id="site1", device_id=device,
                               ts=self.wall() if ts is None else ts,
                               body=body or {"rule": "soc_min"}))

    async def wait_recorded(self) -> None:
        """Let the recorder catch up, as real time would while commits run in threads."""
        while self.recorder.recorded + self.events_recorded < self.sent:
            with trio.move_on_after(1):
                await self.spool.wait_changed()

    async def wait_drained(self, timeout_s: float = 3600) -> None:
        with trio.fail_after(timeout_s):
            while True:
                stats = self.spool.stats()
                if self.recorder.recorded + self.events_recorded < self.sent:
                    await trio.sleep(0.5)
                    continue
                if stats.depth == 0 and stats.leased == 0:
                    return
                await trio.sleep(0.5)


async def start_stack(nursery: trio.Nursery, tmp_path: Path, topic: PubsubTopic, *,
                      wall: WallClock, max_bytes: int | None = None, seed: int = 1,
                      credentials: Credentials | None = None,
                      transport: FaultyTransport | None = None,
                      spool_path: Path | None = None, timeout_s: float = 600) -> Stack:
    sink = RecordingSink()
    endpoint = Endpoint.for_emulator(topic.emulator.host)
    transport = transport or FaultyTransport(httpx.AsyncHTTPTransport())
    client = httpx.AsyncClient(transport=transport, timeout=timeout_s)
    spool = Spool(spool_path or tmp_path / "spool.sqlite", max_bytes=max_bytes, wall_clock=wall,
                  sink=sink, limiter=FreezingLimiter())
    publisher = Publisher(client, topic.project, topic.topic, endpoint=endpoint,
                          credentials=credentials or NoAuth(), timeout_s=timeout_s,
                          wall_clock=wall)
    uplink = Uplink(spool, publisher, sink=sink, rng=random.Random(seed))
    snap_tx, snap_rx = trio.open_memory_channel(100_000)
    recorder = Recorder(spool, snap_rx, sink=sink)
    events = EventOutbox()  # critical events: the gateway's one path into the spool
    stack = Stack(spool, uplink, recorder, snap_tx, events, transport, client, sink, wall)
    await nursery.start(spool.run)
    await nursery.start(recorder.run)
    await nursery.start(events.forward, stack.record_event)
    await nursery.start(uplink.run)
    return stack


@attrs.define
class Received:
    """Messages pulled back, with duplicate accounting by msg_id."""

    messages: list[dict]

    @property
    def by_msg_id(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = defaultdict(list)
        for m in self.messages:
            out[m["attributes"]["msg_id"]].append(m)
        return out

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def duplicates(self) -> int:
        return len(self.messages) - len(self.by_msg_id)

    def assert_duplicates_are_identical(self) -> None:
        for copies in self.by_msg_id.values():
            first = copies[0]
            for other in copies[1:]:
                assert other["attributes"] == first["attributes"]
                assert other["data"] == first["data"]

    def unique(self) -> list[dict]:
        return [copies[0] for copies in self.by_msg_id.values()]

    def seqs(self) -> dict[str, set[int]]:
        out: dict[str, set[int]] = defaultdict(set)
        for m in self.unique():
            out[m["attributes"]["device_id"]].add(int(m["attributes"]["seq"]))
        return out

    def kinds(self) -> Counter:
        return Counter(m["attributes"]["kind"] for m in self.unique())

    def of_kind(self, kind: str) -> list[dict]:
        return [m for m in self.unique() if m["attributes"]["kind"] == kind]

    def payload(self, m: dict) -> dict:
        return json.loads(m["data"])
