"""An idle uplink leases after every commit; once a lease has read to the end of the outbox, the
spool answers "nothing" without a thread hop and a query until a row may have become leasable
(appended, released, leases reset, spool reopened) — and then it reads again and misses none."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import trio

from bessai.clock import trio_wall_clock
from bessai.model import Snapshot, TagReading
from bessai.uplink.message import Record, SpoolRow, record_from_snapshot
from bessai.uplink.spool import Spool


def snap(ts: float) -> Record:
    return record_from_snapshot(Snapshot(site_id="site1", device_id="inv1", ts=ts, taken_at=0.0,
                                         readings={"soc": TagReading(50.0)}))


@attrs.define(eq=False)
class CountingSpool(Spool):
    """The real spool, counting the reads that reach the file."""

    reads: int = attrs.field(default=0, init=False)

    async def _read_leasable(self, cursor: int, leased: frozenset[int], limit: int,
                             max_bytes: int) -> tuple[list[SpoolRow], bool] | None:
        self.reads += 1
        return await super()._read_leasable(cursor, leased, limit, max_bytes)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, rows: int = 0) -> AsyncIterator[CountingSpool]:
    """A running counting spool holding ``rows`` telemetry rows (seq 1..rows)."""
    async with trio.open_nursery() as n:
        spool = CountingSpool(tmp_path / "s.sqlite", wall_clock=trio_wall_clock())
        await n.start(spool.run)
        if rows:
            await spool.append_many([snap(float(i)) for i in range(rows)])
        yield spool
        n.cancel_scope.cancel()


async def test_leases_after_the_outbox_was_read_to_its_end_skip_the_file_until_rows_arrive(
        tmp_path, autojump_clock):
    async with running(tmp_path) as spool:
        await spool.append(snap(1.0))
        first = await spool.lease(1000)
        assert [r.seq for r in first] == [1]
        assert spool.reads == 1
        assert await spool.lease(1000) == []  # the uplink's second batch of the round
        spool.ack(first)
        await spool.wait_changed()  # the delete commit wakes the uplink...
        assert await spool.lease(1000) == []  # ...which finds nothing, without a read
        assert spool.reads == 1
        await spool.append(snap(2.0))
        assert [r.seq for r in await spool.lease(1000)] == [2]
        assert spool.reads == 2


async def test_released_rows_are_leased_again_after_an_exhausting_lease(tmp_path,
                                                                       autojump_clock):
    async with running(tmp_path, rows=3) as spool:
        rows = await spool.lease(1000)
        assert await spool.lease(1000) == []
        spool.release(rows[1:])  # a failed publish gives rows back
        assert [r.seq for r in await spool.lease(1000)] == [2, 3]
        spool.reset_leases()  # a restarted uplink
        assert [r.seq for r in await spool.lease(1000)] == [1, 2, 3]


async def test_a_lease_stopped_by_its_limit_does_not_count_as_reading_to_the_end(
        tmp_path, autojump_clock):
    async with running(tmp_path, rows=4) as spool:
        assert [r.seq for r in await spool.lease(2)] == [1, 2]
        assert [r.seq for r in await spool.lease(2)] == [3, 4]
        assert await spool.lease(2) == []
        assert spool.reads == 3


async def test_rows_appended_while_a_lease_reads_are_not_hidden_by_it(tmp_path,
                                                                       autojump_clock):
    async with running(tmp_path) as spool:
        leased: list[int] = []

        async def lease_once() -> None:
            leased.extend(r.seq for r in await spool.lease(1000))

        async with trio.open_nursery() as inner:  # the lease and a commit race for the file
            inner.start_soon(lease_once)
            inner.start_soon(spool.append, snap(1.0))
        leased.extend(r.seq for r in await spool.lease(1000))
        assert leased == [1]
