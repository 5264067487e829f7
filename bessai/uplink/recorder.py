"""Into the spool: the recorder actor (snapshots from their mailbox) and `record_event`, the one
path by which a critical event reaches the spool (the gateway's ``events`` child runs it over
the `EventOutbox`, which holds events while the spool cannot take them).

It drains whatever is waiting in a mailbox (up to ``max_batch``) and appends it as one group,
so a burst costs one commit, not one per item. Invariants:
- An item counts as recorded only when `Spool.append_many` returned (it is on disk).
- A record Pub/Sub would reject is refused and counted (``bessai.spool.drops{reason=invalid}``),
  never spooled, so it can never become a poison message.
- A disk fault is the spool's state, not the recorder's: the spool holds critical records
  until the disk recovers and refuses telemetry it cannot write, counting it itself
  (``drops{reason=disk_fault}``, with a gap record). The recorder then simply moves on, so
  the drop-oldest ring behind it never fills because of a full disk; a critical batch the
  spool refused anyway is retried every ``retry_s`` (never dropped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
import structlog
import trio

from bessai.bounds import clip
from bessai.model import Event, Snapshot
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.uplink.message import (
    MessageInvalid,
    Record,
    RowPriority,
    record_from_event,
    record_from_snapshot,
)
from bessai.uplink.spool import Spool, SpoolWriteError

log = structlog.get_logger("bessai.uplink.recorder")


class SnapshotSource(Protocol):
    """Where the recorder reads snapshots: the gateway's `actors.DropOldestRing`, or a trio
    memory channel's receive end."""

    async def receive(self) -> Snapshot: ...

    def receive_nowait(self) -> Snapshot: ...


@attrs.define(eq=False)
class Recorder:
    """Appends every `Snapshot` it receives to ``spool`` (events go by `record_event`)."""

    spool: Spool
    snapshots: SnapshotSource | None = None
    max_batch: int = 5000
    retry_s: float = 1.0
    sink: MetricSink = NULL_SINK
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    recorded: int = attrs.field(default=0, init=False)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until the mailbox is closed."""
        async with trio.open_nursery() as nursery:
            if self.snapshots is not None:
                nursery.start_soon(self._pump, self.snapshots, record_from_snapshot)
            task_status.started()

    async def _pump(self, channel: Any, convert: Callable[[Any], Record]) -> None:
        receive_nowait = getattr(channel, "receive_nowait", None)
        while True:
            try:
                first = await channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            batch = [first]
            while receive_nowait is not None and len(batch) < self.max_batch:
                try:
                    batch.append(receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            await self._write(self._convert(batch, convert))

    def _convert(self, items: list[Any], convert: Callable[[Any], Record]) -> list[Record]:
        records = []
        for item in items:
            try:
                record = convert(item)
                record.validate()
            except (MessageInvalid, TypeError, ValueError) as exc:
                self.log.error("SPOOL_REJECTED", device=getattr(item, "device_id", None),
                               item=type(item).__name__, error=str(exc)[:200])
                self.sink.count("bessai.spool.drops", reason="invalid")
                continue
            records.append(record)
        return records

    async def _write(self, records: list[Record]) -> None:
        while records:
            try:
                await self.spool.append_many(records)
            except SpoolWriteError:
                # telemetry: already counted by the spool, with a gap record to follow
                records = [r for r in records if r.priority == RowPriority.CRITICAL]
                if records:
                    await trio.sleep(self.retry_s)
                continue
            self.recorded += len(records)
            return


async def record_event(spool: Spool, event: Event) -> None:
    """Append one critical event; returns once it is on disk.

    Never raises for the event's content: one whose body JSON cannot carry (NaN, an object) is
    recorded with those values as text, and one too large for Pub/Sub without its body. Raising
    would crash the caller on the same event forever, and every critical event queued behind it
    would never reach the spool.
    """
    try:
        record = record_from_event(event)
    except (TypeError, ValueError) as error:
        log.error("EVENT_BODY_NOT_JSON", name=event.name, device=event.device_id,
                  error=str(error), hint="recorded with the offending values as text; "
                  "report this as a bug")
        record = record_from_event(attrs.evolve(event, body=_json_safe(event.body)))
    try:
        await spool.append(record)
    except MessageInvalid as error:
        log.error("EVENT_BODY_TOO_LARGE", name=clip(event.name, 80), device=event.device_id,
                  error=clip(str(error), 200), hint="recorded without its body")
        await spool.append(record_from_event(attrs.evolve(
            event, name=clip(event.name, 80), body={"body_dropped": clip(str(error), 200)})))


def _json_safe(value: Any) -> Any:
    """``value`` with everything strict JSON cannot hold (NaN, infinities, objects) as text."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)
