"""What a supervisor runs: the `Actor` protocol.

An actor is any object with ``async run(*, task_status=trio.TASK_STATUS_IGNORED)``. The contract
a supervisor relies on:

* ``run`` calls ``task_status.started()`` once it is ready to serve (connection open, state
  loaded). The supervisor starts the next sibling only after that call, so a child can rely on
  every earlier sibling being ready. Raising before ``started()`` is a failed start and counts
  as a crash; so is returning before it, for a PERMANENT actor (`ReturnedBeforeReady`). A
  TRANSIENT or TEMPORARY actor that returns without ``started()`` has finished a one-shot job.
* ``run`` returns when the actor's work is done, raises when it failed, and is cancelled (Trio
  cancellation) when the supervisor stops it for good.
* Optionally, ``request_stop()`` (synchronous, must not block): the supervisor calls it first
  when it wants the actor gone and then waits the child's grace period for ``run`` to return on
  its own, so the actor can flush, close and say goodbye to its peer. An actor without
  ``request_stop`` has no way to hear such a request, so it is cancelled at once. Once
  cancelled, it has the spec's ``kill_timeout_s`` to end (keep shielded clean-up bounded). An
  exception raised while stopping is recorded as ``ExitReason.SHUTDOWN_ERROR``.

A fresh instance is built for every start (``ChildSpec.factory``): nothing survives a restart
inside the actor. State that must outlive a crash lives outside it (a `LatestCell`, a file).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import attrs
import trio


@runtime_checkable
class Actor(Protocol):
    """Anything a `Supervisor` can run."""

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Do the actor's work; call ``task_status.started()`` once ready."""


@runtime_checkable
class Stoppable(Protocol):
    """An actor that can be asked to stop gracefully before it is cancelled."""

    def request_stop(self) -> None:
        """Ask ``run`` to return soon. Called at most once per instance; must not block."""


@attrs.define
class FunctionActor:
    """Turns an ``async def fn(*args, task_status=...)`` into an actor.

    For the common case where an actor is one loop and needs no graceful stop: the function is
    cancelled when the supervisor stops it. ``ChildSpec.from_function`` builds the spec.
    """

    fn: Callable[..., Awaitable[object]]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Await the function, handing it the supervisor's ``task_status``."""
        await self.fn(*self.args, **self.kwargs, task_status=task_status)
