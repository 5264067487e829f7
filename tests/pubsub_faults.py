"""A fault-injecting httpx transport WRAPPING the real transport to the emulator.

The code under test is the code that ships: only the transport seam is wrapped. Faults are
scheduled in Trio time (virtual under MockClock):

- `cut(start, end)`: requests in the window fail with `httpx.ConnectError` (link down), or
  hang forever if ``blackhole`` is set;
- `storm(status, count, retry_after)`: the next ``count`` requests get ``status``;
- `poison_marker`: a publish whose body contains the marker is answered 400 (as production
  would for a message the emulator does not check);
- `unauthorized_left`: the next requests get 401 (their bearer tokens are recorded);
- `lose_left`: forward to the emulator, then drop the response (a duplicate maker).

Under a `MockClock` with ``autojump_threshold=0``, virtual time is frozen while a request is
with the real emulator (the threshold is raised to infinity for that moment): real I/O takes
no virtual time, so a real socket never races a virtual deadline (an httpx timeout, a backoff),
and the clock jumps freely the rest of the time.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import httpx
import trio
from trio.testing import MockClock

_frozen = 0


@contextlib.contextmanager
def frozen_virtual_time() -> Iterator[None]:
    """Stop a MockClock's autojump while real I/O is in flight (nestable, task-safe)."""
    global _frozen
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, MockClock):
        yield
        return
    if _frozen == 0:
        clock._saved_threshold = clock.autojump_threshold  # type: ignore[attr-defined]
        clock.autojump_threshold = math.inf
    _frozen += 1
    try:
        yield
    finally:
        _frozen -= 1
        if _frozen == 0:
            clock.autojump_threshold = clock._saved_threshold  # type: ignore[attr-defined]


@attrs.define
class FreezingLimiter:
    """A capacity limiter for `Spool` that freezes virtual time while its thread runs.

    Under autojump threshold 0 a MockClock jumps whenever every task is blocked — including
    while one waits for a worker thread — so SQLite work would appear to take until the next
    deadline. Wrapped in this, thread work takes no virtual time, like real I/O in the
    transport above.
    """

    inner: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _frozen: Any = None

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self.inner.acquire_on_behalf_of(borrower)
        self._frozen = frozen_virtual_time()
        self._frozen.__enter__()

    def release_on_behalf_of(self, borrower: object) -> None:
        frozen, self._frozen = self._frozen, None
        if frozen is not None:
            frozen.__exit__(None, None, None)
        self.inner.release_on_behalf_of(borrower)


@attrs.define
class FaultyTransport(httpx.AsyncBaseTransport):
    inner: httpx.AsyncBaseTransport
    on_restored: Callable[[], None] | None = None
    call_times: list[float] = attrs.field(factory=list)
    timeline: list[tuple[str, Any]] | None = None
    """If set, every forwarded request appends ("<verb>", parsed JSON body)."""
    cuts: list[tuple[float, float]] = attrs.field(factory=list)
    storms: list[tuple[int, int, str | None]] = attrs.field(factory=list)
    poison_marker: bytes | None = None
    unauthorized_left: int = 0
    lose_left: int = 0
    blackhole: bool = False
    """During a cut, hang (as a black-holed network does) instead of refusing the connection."""
    cut_after_loss: bool = False
    seen_tokens: list[str] = attrs.field(factory=list)
    calls: int = 0
    failed: int = 0
    forwarded: int = 0
    status_counts: dict[int, int] = attrs.field(factory=dict)
    _was_cut: bool = False

    def cut(self, start: float, end: float) -> None:
        self.cuts.append((start, end))

    def end_cuts(self) -> None:
        """Restore the link now (cuts opened with an infinite end)."""
        now = trio.current_time()
        self.cuts = [(start, min(end, now)) for start, end in self.cuts]

    def storm(self, status: int, count: int, retry_after: str | None = None) -> None:
        self.storms.append((status, count, retry_after))

    def _in_cut(self) -> bool:
        now = trio.current_time()
        return any(start <= now < end for start, end in self.cuts)

    def _answer(self, request: httpx.Request, status: int, headers: dict | None = None,
                message: str = "injected") -> httpx.Response:
        self.failed += 1
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        body = json.dumps({"error": {"code": status, "message": message}}).encode()
        return httpx.Response(status, headers=headers or {}, content=body, request=request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.call_times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self._in_cut():
            self._was_cut = True
            self.failed += 1
            if self.blackhole:
                await trio.sleep_forever()  # packets vanish: only a deadline ends this
            raise httpx.ConnectError("injected: link cut", request=request)
        if self._was_cut:
            self._was_cut = False
            if self.on_restored is not None:
                self.on_restored()
        if self.storms:
            status, count, retry_after = self.storms[0]
            if count <= 1:
                self.storms.pop(0)
            else:
                self.storms[0] = (status, count - 1, retry_after)
            return self._answer(request, status,
                                {"retry-after": retry_after} if retry_after else None)
        token = request.headers.get("authorization", "")
        if self.unauthorized_left > 0:
            self.unauthorized_left -= 1
            self.seen_tokens.append(token)
            return self._answer(request, 401, message="token expired")
        if token:
            self.seen_tokens.append(token)
            request.headers.pop("authorization")  # the emulator takes no credentials
        if self.poison_marker is not None and request.url.path.endswith(":publish"):
            content = await request.aread()
            messages = json.loads(content)["messages"]
            import base64
            if any(self.poison_marker in base64.b64decode(m["data"]) for m in messages):
                return self._answer(request, 400, message="Invalid message")
        self.forwarded += 1
        if self.timeline is not None:
            verb = request.url.path.rsplit(":", 1)[-1]
            self.timeline.append((verb, json.loads(await request.aread() or b"null")))
        with frozen_virtual_time():
            response = await self.inner.handle_async_request(request)
            await response.aread()
        if self.lose_left > 0 and request.url.path.endswith(":publish"):
            self.lose_left -= 1
            self.failed += 1
            if self.cut_after_loss:
                self.cut(trio.current_time(), math.inf)
            raise httpx.ReadError("injected: response lost after the server accepted it",
                                  request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
