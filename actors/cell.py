"""`LatestCell`: the newest value of something, with a version number.

For state where only the latest value matters (the last reading of a device, a link state): the
writer never blocks and never queues (``set`` overwrites), and readers never see a stale value
twice: each reader remembers the version it saw and ``await wait_newer(version)`` returns only
when a newer one exists, skipping any it was too slow for. A cell belongs to whoever wires the
tree, not to an actor, so its value survives the writer's restart.

Versions start at 1 with the first ``set``; version 0 means "never set". ``at_s`` is the Trio
time of the ``set``, for staleness checks (``trio.current_time() - latest.at_s``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


@attrs.frozen
class Versioned(Generic[T]):
    """A value as it was set: its version and when (Trio clock)."""

    version: int
    value: T
    at_s: float


@attrs.define(eq=False)
class LatestCell(Generic[T]):
    """Holds the latest value; ``set`` never blocks, readers wait for a newer version."""

    _latest: Versioned[T] | None = attrs.field(init=False, default=None)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)

    @property
    def version(self) -> int:
        """The version of the current value; 0 if the cell was never set."""
        return 0 if self._latest is None else self._latest.version

    def set(self, value: T) -> int:
        """Replace the value and wake every waiting reader; returns the new version."""
        latest = Versioned(self.version + 1, value, trio.current_time())
        self._latest = latest
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        return latest.version

    def latest(self) -> Versioned[T] | None:
        """The current value with its version, or None if never set. Never waits."""
        return self._latest

    async def wait_newer(self, than_version: int = 0) -> Versioned[T]:
        """Wait until the cell holds a version newer than ``than_version``; return it."""
        if self._latest is not None and self._latest.version > than_version:
            await trio.lowlevel.checkpoint()
            return self._latest
        while self._latest is None or self._latest.version <= than_version:
            await self._changed.wait()
        return self._latest

    async def updates(self, since_version: int = 0) -> AsyncIterator[Versioned[T]]:
        """Yield each newer value as it arrives (values set in between are skipped)."""
        seen = since_version
        while True:
            latest = await self.wait_newer(seen)
            seen = latest.version
            yield latest
