"""`DropOldestRing`: a bounded queue whose writer never blocks; the oldest item makes room.

For streams where fresh data beats complete data and the writer must never wait on the reader
(telemetry behind a slow exporter, readings behind a recorder): ``push`` is synchronous and, when
the ring is full, drops the oldest item and counts it in ``dropped``, so the loss is visible
(report it as a metric) rather than silent. Readers ``await get()`` and are woken by the next
``push``; ``close()`` lets readers drain what is left and then raises ``trio.EndOfChannel``
(which also ends ``async for``).
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


@attrs.define(eq=False)
class DropOldestRing(Generic[T]):
    """A ring of at most ``capacity`` items; ``dropped`` counts what was pushed out."""

    capacity: int = attrs.field()
    dropped: int = attrs.field(init=False, default=0)
    """How many items were discarded, unread, to make room; never decreases."""
    pushed: int = attrs.field(init=False, default=0)
    """How many items were ever pushed."""
    _items: collections.deque[T] = attrs.field(init=False, factory=collections.deque)
    _lot: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)
    _closed: bool = attrs.field(init=False, default=False)

    @capacity.validator
    def _check_capacity(self, _attr: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ring capacity={value!r} must be an int >= 1, e.g. 1024")

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T) -> T | None:
        """Append an item, dropping the oldest if full. Never blocks. Returns the item it
        dropped (so the writer can account for it, e.g. with a gap record), else None."""
        if self._closed:
            raise trio.ClosedResourceError("push on a closed DropOldestRing")
        victim = None
        if len(self._items) >= self.capacity:
            victim = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self.pushed += 1
        self._lot.unpark()
        return victim

    def get_nowait(self) -> T:
        """The oldest item; raises ``trio.WouldBlock`` if empty (``EndOfChannel`` if closed)."""
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def get(self) -> T:
        """Wait for and return the oldest item."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
            parked = True
        item = self._items.popleft()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    # Channel-compatible names, so a ring can stand in wherever a trio.MemoryReceiveChannel is
    # read (``receive`` / ``receive_nowait``), e.g. a consumer written against channels.
    receive = get
    receive_nowait = get_nowait

    def close(self) -> None:
        """No more pushes; readers drain what is left, then get ``trio.EndOfChannel``."""
        self._closed = True
        self._lot.unpark_all()

    def __aiter__(self) -> DropOldestRing[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
