"""Bounded mailboxes: a thin, documented factory over Trio's memory channels.

Use a mailbox when every message matters and a slow reader must slow the writer down
(backpressure) instead of growing memory: ``send`` blocks while ``capacity`` messages are
waiting. For "only the newest value matters" use `LatestCell`; for "keep the newest N, drop and
count the rest, never block the writer" use `DropOldestRing`.

The channels returned are Trio's own (clone, close, ``async for``), so everything in Trio's docs
about memory channels applies: closing the send side ends the reader's ``async for``. Like
``trio.open_memory_channel``, it is generic: ``open_mailbox[Reading](64)`` types both ends.
"""

from __future__ import annotations

from typing import Generic, TypeVar, final

import trio

T = TypeVar("T")


# A class, as trio.open_memory_channel is, so that ``open_mailbox[int](8)`` is valid at run time
# and types both channels for mypy.
@final
class open_mailbox(tuple[trio.MemorySendChannel[T], trio.MemoryReceiveChannel[T]], Generic[T]):
    """A bounded channel: ``await send(msg)`` blocks while ``capacity`` messages wait.

    ``capacity`` must be a positive int: 0 would make every send a rendezvous and an unbounded
    buffer would remove the backpressure a mailbox exists for (``trio.open_memory_channel`` is
    there if you really want either). Returns ``(send_channel, receive_channel)``.
    """

    def __new__(  # type: ignore[misc]  # returns the pair, as trio.open_memory_channel does
        cls, capacity: int
    ) -> tuple[trio.MemorySendChannel[T], trio.MemoryReceiveChannel[T]]:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(
                f"mailbox capacity={capacity!r} must be an int >= 1; pick how many messages "
                "may wait before the writer is slowed down, e.g. 64"
            )
        return trio.open_memory_channel[T](capacity)

    def __init__(self, capacity: int) -> None:
        """See the class docstring (a class only so that it can be subscripted)."""
