"""The spool's SQLite connection has one owner, the store's thread: the event loop holds no
connection it could use (or race a close with), the connection refuses any other thread, and
closing the spool ends the thread with the connection."""

from __future__ import annotations

import gc
import sqlite3
import threading

import trio
import trio.testing

from bessai.clock import trio_wall_clock
from bessai.model import Snapshot, TagReading
from bessai.uplink.message import Record, record_from_snapshot
from bessai.uplink.spool import Spool


def snap(ts: float) -> Record:
    return record_from_snapshot(Snapshot(site_id="site1", device_id="inv1", ts=ts, taken_at=0.0,
                                         readings={"soc": TagReading(50.0)}))


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bessai-spool-store"]


def usable_here(path: str) -> list[sqlite3.Connection]:
    """Open connections to ``path`` that this (the event loop's) thread is allowed to use."""
    found = []
    for obj in gc.get_objects():
        if not isinstance(obj, sqlite3.Connection):
            continue
        try:
            files = [row[2] for row in obj.execute("PRAGMA database_list")]
        except sqlite3.ProgrammingError:
            continue  # closed, or made by another thread: not usable from here
        if path in files:
            found.append(obj)
    return found


async def test_the_event_loop_cannot_reach_the_spools_connection(tmp_path):
    path = tmp_path / "spool.sqlite"
    async with trio.open_nursery() as n:
        spool = Spool(path, wall_clock=trio_wall_clock())
        await n.start(spool.run)
        await spool.append(snap(1.0))
        assert len(store_threads()) == 1
        assert usable_here(str(path)) == []
        assert [r.seq for r in await spool.lease()] == [1]  # the store's thread still serves
        n.cancel_scope.cancel()


async def test_closing_the_spool_ends_its_store_thread_and_a_reopen_starts_one(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", wall_clock=trio_wall_clock())
    async with trio.open_nursery() as n:
        await n.start(spool.run)
        await spool.append(snap(1.0))
        [thread] = store_threads()
        n.cancel_scope.cancel()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert store_threads() == []
    async with trio.open_nursery() as n:  # the spool outlives its actor: a restart reopens it
        await n.start(spool.run)
        assert len(store_threads()) == 1
        assert [r.seq for r in await spool.lease()] == [1]
        n.cancel_scope.cancel()


async def test_a_lease_reading_while_the_spool_closes_finishes_before_the_close(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", wall_clock=trio_wall_clock())
    async with trio.open_nursery() as n:
        await n.start(spool.run)
        await spool.append_many([snap(float(i)) for i in range(20_000)])
        held = [row for _ in range(19) for row in await spool.lease(1000)]
        spool.release(held[:1])  # the next lease reads from the start, past 18,999 leased rows
        leased: list[int] = []

        async def lease() -> None:
            leased.extend(r.seq for r in await spool.lease(1000))

        async with trio.open_nursery() as inner:
            inner.start_soon(lease)
            await trio.testing.wait_all_tasks_blocked()  # the lease is reading in the thread
            await spool.aclose()
            # the close waited for the read on the store's thread, which never saw it closed
            assert leased[:2] == [1, 19_001]
            assert len(leased) == 1000
        n.cancel_scope.cancel()
