"""The store's thread: one OS thread that opens the spool's file, owns it, and closes it.

Why a thread of its own: SQLite blocks (fsync, a held write lock for ``busy_timeout_s``), and
the event loop must never wait on the disk. Why ONE thread that owns the `Store` (instead of
handing a shared connection to whatever thread `trio.to_thread` picks): the connection then has
exactly one owner, as every resource here does. The Trio side holds a `StoreThread`, never the
connection; it sends calls (``fn(store, *args)``) that run on the thread, in order, and awaits
their values. A call after the thread was told to stop raises `StoreClosed` at once, so a
lease racing a close can never reach a closed (or None) connection.

Calls are serialized by a limiter (a `trio.CapacityLimiter(1)` unless one is injected): a call
holds it from before it is queued until its value is back, which lets a virtual-time test
freeze the clock while the disk works (tests/pubsub_faults.py ``FreezingLimiter``). Once queued,
a call is not cancellable (like `trio.to_thread.run_sync`): the store's state must not depend
on whether the caller was still waiting.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

import attrs
import trio

from bessai.uplink.spool.store import Store

T = TypeVar("T")
Said = TypeVar("Said")


class Limiter(Protocol):
    """What serializes the calls: anything that admits ONE borrower at a time."""

    async def acquire_on_behalf_of(self, borrower: object) -> None: ...

    def release_on_behalf_of(self, borrower: object) -> None: ...


class StoreClosed(Exception):
    """The store's thread was told to stop (the spool closed) before this call was queued."""


@attrs.define(eq=False)
class _Call(Generic[T]):
    """One call to run on the thread, and its answer for the waiting Trio task."""

    fn: Callable[[Any], T]
    """Called with the store (or, for the opening call, with None)."""
    last: bool
    """The thread ends after this call (it closed the store)."""
    context: contextvars.Context = attrs.field(factory=contextvars.copy_context)
    """The caller's context (structlog's bound values), as `trio.to_thread` would carry it."""
    done: trio.Event = attrs.field(factory=trio.Event)
    value: T | None = None
    error: BaseException | None = None

    def run(self, store: Any, token: trio.lowlevel.TrioToken) -> None:
        """On the thread: run, keep the value or the error, wake the caller."""
        try:
            self.value = self.context.run(self.fn, store)
        except BaseException as exc:  # handed to the caller, who raises it
            self.error = exc
        try:
            token.run_sync_soon(self.done.set)
        except trio.RunFinishedError:
            pass  # nobody is waiting any more


@attrs.define(eq=False)
class StoreThread:
    """The thread that owns one open `Store`. Made by `start`, ended by a call with ``last``."""

    limiter: Limiter
    _calls: queue.SimpleQueue[_Call[Any]] = attrs.field(factory=queue.SimpleQueue, init=False)
    _token: trio.lowlevel.TrioToken = attrs.field(factory=trio.lowlevel.current_trio_token,
                                                  init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    """Set (on the Trio side) when the last call is queued; later calls raise `StoreClosed`."""

    @classmethod
    async def start(cls, opener: Callable[[], tuple[Store, Said]],
                    limiter: Limiter) -> tuple[StoreThread, Said]:
        """Start a thread that makes its store with ``opener`` (which may block on the disk);
        returns the thread and what the opener said beside the store. If the opener raises,
        the thread ends and the error is raised here."""
        worker = cls(limiter)

        def make(_: None) -> Said:
            store, said = opener()
            worker_store.append(store)
            return said

        worker_store: list[Store] = []
        first: _Call[Said] = _Call(make, last=False)
        task = trio.lowlevel.current_task()
        await limiter.acquire_on_behalf_of(task)
        try:
            threading.Thread(target=worker._main, args=(first, worker_store),
                             name="bessai-spool-store", daemon=True).start()
            with trio.CancelScope(shield=True):
                await first.done.wait()
        finally:
            limiter.release_on_behalf_of(task)
        return worker, _unwrap(first)

    async def call(self, fn: Callable[..., T], *args: Any, last: bool = False) -> T:
        """``fn(store, *args)`` on the thread; its value, or the error it raised.

        ``last``: the thread ends after this call, which must leave the store closed.
        """
        if self._stopping:
            raise StoreClosed()
        task = trio.lowlevel.current_task()
        await self.limiter.acquire_on_behalf_of(task)
        try:
            if self._stopping:  # stopped while this call waited for its turn
                raise StoreClosed()
            self._stopping = last
            job: _Call[T] = _Call(lambda store: fn(store, *args), last=last)
            self._calls.put(job)
            with trio.CancelScope(shield=True):
                await job.done.wait()
        finally:
            self.limiter.release_on_behalf_of(task)
        return _unwrap(job)

    def _main(self, first: _Call[Any], made: list[Store]) -> None:
        """The thread: open, then serve calls until the last one."""
        first.run(None, self._token)
        if not made:
            return  # the opener raised: there is no store to serve
        store = made.pop()
        while True:
            job = self._calls.get()
            job.run(store, self._token)
            if job.last:
                return


def _unwrap(job: _Call[T]) -> T:
    if job.error is not None:
        raise job.error
    return cast(T, job.value)  # None only when fn returned None
