"""Request/reply between actors over a mailbox: `call` and `Request`, like ``gen_server:call``.

A server actor reads `Request` values from its mailbox and answers each with ``reply`` (or
``fail``); a client awaits `call`, which sends the request and waits for the answer, all within
``timeout_s``. What it keeps:

* **Bounded.** ``timeout_s`` covers the whole call: waiting for room in a full mailbox
  (backpressure), the server's work and the reply. On expiry the caller gets `CallTimeout`;
  a late reply is dropped, never delivered to a later call.
* **Never blocks the server.** ``reply`` is synchronous and cannot block: each request carries
  its own one-slot reply channel, and a caller that has gone away is simply not answered.
* **Errors travel.** ``fail(exc)`` re-raises ``exc`` in the caller, so a server can refuse a
  request without crashing itself.

It does not monitor the server: if the server dies with the request unanswered, the caller
learns it by the timeout (OTP's call also links a monitor; Trio has no process to monitor).
"""

from __future__ import annotations

import reprlib
from typing import Generic, TypeVar

import attrs
import trio

Q = TypeVar("Q")
R = TypeVar("R")


class CallTimeout(TimeoutError):
    """No reply within the call's ``timeout_s`` (mailbox full, server slow, or server gone)."""


@attrs.frozen(eq=False)
class _Answer(Generic[R]):
    value: R | None = None
    error: BaseException | None = None


@attrs.define(eq=False)
class Request(Generic[Q, R]):
    """One call as the server sees it: ``body`` to act on, ``reply``/``fail`` to answer once."""

    body: Q
    _reply: trio.MemorySendChannel[_Answer[R]] = attrs.field(repr=False)
    _answered: bool = attrs.field(init=False, default=False, repr=False)

    def reply(self, value: R) -> None:
        """Answer the call; never blocks. A second answer raises RuntimeError."""
        self._answer(_Answer(value=value))

    def fail(self, error: BaseException) -> None:
        """Answer the call with an error, raised in the caller; never blocks."""
        self._answer(_Answer(error=error))

    def _answer(self, answer: _Answer[R]) -> None:
        if self._answered:
            raise RuntimeError(
                f"request {reprlib.repr(self.body)} was already answered; answer once")
        self._answered = True
        try:
            self._reply.send_nowait(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the caller timed out or was cancelled: nobody to answer
        finally:
            self._reply.close()


async def call(mailbox: trio.MemorySendChannel[Request[Q, R]], body: Q, *,
               timeout_s: float) -> R:
    """Send ``body`` to the server behind ``mailbox`` and return its reply.

    Raises `CallTimeout` after ``timeout_s`` (for the whole call), the server's error if it
    answered with ``fail``, and ``trio.BrokenResourceError`` if the server's mailbox is closed.
    """
    send, receive = trio.open_memory_channel[_Answer[R]](1)
    request: Request[Q, R] = Request(body, send)
    with receive, trio.move_on_after(timeout_s) as timer:
        await mailbox.send(request)
        try:
            answer = await receive.receive()
        except trio.EndOfChannel:
            raise RuntimeError(
                f"request {reprlib.repr(body)} was closed without an answer") from None
        if answer.error is not None:
            raise answer.error
        return answer.value  # type: ignore[return-value]  # R may itself be Optional
    assert timer.cancelled_caught
    raise CallTimeout(f"no reply to {reprlib.repr(body)} within {timeout_s:g} s "
                      "(server busy, slow or gone)")
