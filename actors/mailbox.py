"""Bounded mailboxes: a thin, documented factory over Trio's memory channels.

Use a mailbox when every message matters and a slow reader must slow the writer down
(backpressure) instead of growing memory: ``send`` blocks while ``capacity`` messages are
waiting. For "only the newest value matters" use `LatestCell`; for "keep the newest N, drop and
count the rest, never block the writer" use `DropOldestRing`.

The channels returned are Trio's own (clone, close, ``async for``), so everything in Trio's docs
about memory channels applies: closing the send side ends the reader's ``async for``.
"""

from __future__ import annotations

import math
from typing import Any

import trio


def open_mailbox(
    capacity: int,
) -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    """A bounded channel: ``await send(msg)`` blocks while ``capacity`` messages wait.

    ``capacity`` must be a positive int: 0 would make every send a rendezvous and an unbounded
    buffer would remove the backpressure a mailbox exists for (``trio.open_memory_channel`` is
    there if you really want either).
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(
            f"mailbox capacity={capacity!r} must be an int >= 1; pick how many messages may wait "
            "before the writer is slowed down, e.g. 64"
        )
    assert capacity != math.inf
    return trio.open_memory_channel[Any](capacity)
