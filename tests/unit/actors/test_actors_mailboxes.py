"""Mailboxes: a bounded mailbox pushes back on its writer, a LatestCell never blocks its writer
and wakes readers on newer versions, a DropOldestRing drops the oldest and counts it."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from actors import DropOldestRing, LatestCell, open_mailbox

# ---------------------------------------------------------------- bounded mailbox


async def test_mailbox_blocks_the_writer_when_full_until_the_reader_takes_one(autojump_clock):
    send, receive = open_mailbox(2)
    sent_at: list[float] = []

    async def writer():
        for n in range(4):
            await send.send(n)
            sent_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.sleep(5)
        assert sent_at == [0.0, 0.0]  # third send is blocked: backpressure
        assert await receive.receive() == 0
        await trio.sleep(5)
        assert sent_at == [0.0, 0.0, 5.0]
        assert [await receive.receive() for _ in range(3)] == [1, 2, 3]
    assert sent_at == [0.0, 0.0, 5.0, 10.0]


@pytest.mark.parametrize("capacity", [0, -1, math.inf, 2.5, True])
def test_mailbox_refuses_a_capacity_without_backpressure(capacity):
    with pytest.raises(ValueError, match="capacity"):
        open_mailbox(capacity)


# ---------------------------------------------------------------- latest-value cell


async def test_cell_writer_never_blocks_and_each_set_gets_a_newer_version(autojump_clock):
    cell: LatestCell[int] = LatestCell()
    assert cell.version == 0
    assert cell.latest() is None
    versions = [cell.set(n) for n in range(1000)]  # no reader at all: still never blocks
    assert versions == list(range(1, 1001))
    latest = cell.latest()
    assert (latest.version, latest.value, latest.at_s) == (1000, 999, 0.0)


async def test_cell_readers_wake_on_a_newer_version_and_skip_what_they_missed(autojump_clock):
    cell: LatestCell[str] = LatestCell()
    seen: dict[str, list[tuple[int, str]]] = {"r1": [], "r2": []}

    async def reader(name, rounds):
        version = 0
        for _ in range(rounds):
            got = await cell.wait_newer(version)
            seen[name].append((got.version, got.value))
            version = got.version

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, "r1", 2)
        nursery.start_soon(reader, "r2", 2)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == {"r1": [], "r2": []}  # nothing set yet: readers wait
        cell.set("a")
        await trio.testing.wait_all_tasks_blocked()
        cell.set("b")
        cell.set("c")  # both readers were too slow for "b": they see "c"
    assert seen == {"r1": [(1, "a"), (3, "c")], "r2": [(1, "a"), (3, "c")]}


async def test_cell_wait_newer_returns_at_once_when_the_cell_is_already_newer(autojump_clock):
    cell: LatestCell[int] = LatestCell()
    cell.set(7)
    cell.set(8)
    with trio.fail_after(0.001):
        got = await cell.wait_newer(1)
    assert (got.version, got.value) == (2, 8)


async def test_cell_wait_newer_does_not_return_the_version_already_seen(autojump_clock):
    cell: LatestCell[int] = LatestCell()
    cell.set(1)
    with trio.move_on_after(10) as timeout:
        await cell.wait_newer(cell.version)
    assert timeout.cancelled_caught


async def test_cell_records_when_each_value_was_set_for_staleness_checks(autojump_clock):
    cell: LatestCell[int] = LatestCell()
    cell.set(1)
    await trio.sleep(3)
    cell.set(2)
    await trio.sleep(1.5)
    assert trio.current_time() - cell.latest().at_s == 1.5


async def test_cell_updates_yields_each_newer_value(autojump_clock):
    cell: LatestCell[int] = LatestCell()
    got = []

    async def consume():
        async for update in cell.updates():
            got.append(update.value)
            if update.value == 3:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for n in (1, 2, 3):
            await trio.sleep(1)
            cell.set(n)
    assert got == [1, 2, 3]


# ---------------------------------------------------------------- drop-oldest ring


async def test_ring_push_never_blocks_drops_the_oldest_and_counts_it(autojump_clock):
    ring: DropOldestRing[int] = DropOldestRing(3)
    for n in range(10):
        ring.push(n)
    assert (len(ring), ring.dropped, ring.pushed) == (3, 7, 10)
    assert [await ring.get() for _ in range(3)] == [7, 8, 9]
    assert ring.dropped == 7


async def test_ring_reader_waits_for_a_push_and_wakes_on_it(autojump_clock):
    ring: DropOldestRing[str] = DropOldestRing(4)
    got = []

    async def reader():
        got.append((await ring.get(), trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(2)
        assert got == []
        ring.push("x")
    assert got == [("x", 2.0)]


async def test_ring_wakes_several_waiting_readers_one_item_each(autojump_clock):
    ring: DropOldestRing[int] = DropOldestRing(4)
    got = []

    async def reader():
        got.append(await ring.get())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(3):
            ring.push(n)
    assert sorted(got) == [0, 1, 2]


async def test_ring_close_lets_readers_drain_then_ends_iteration(autojump_clock):
    ring: DropOldestRing[int] = DropOldestRing(8)
    for n in range(3):
        ring.push(n)
    ring.close()
    assert [n async for n in ring] == [0, 1, 2]
    with pytest.raises(trio.EndOfChannel):
        await ring.get()
    with pytest.raises(trio.ClosedResourceError):
        ring.push(4)


async def test_ring_get_can_be_cancelled_without_losing_an_item(autojump_clock):
    ring: DropOldestRing[int] = DropOldestRing(2)
    with trio.move_on_after(1):
        await ring.get()
    ring.push(5)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await ring.get()
    assert len(ring) == 1
    assert ring.get_nowait() == 5
    with pytest.raises(trio.WouldBlock):
        ring.get_nowait()


def test_ring_refuses_a_capacity_below_one():
    with pytest.raises(ValueError, match="capacity"):
        DropOldestRing(0)


async def test_ring_reads_like_a_receive_channel():
    ring = DropOldestRing(2)
    ring.push(1)
    ring.push(2)
    ring.push(3)
    assert ring.receive_nowait() == 2
    assert await ring.receive() == 3
    with pytest.raises(trio.WouldBlock):
        ring.receive_nowait()
