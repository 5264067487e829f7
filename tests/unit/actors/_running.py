"""Run a supervisor beside a test, the way an embedder does, and keep what ``run`` raised."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from actors import Supervisor, SupervisorEscalation


@attrs.define(eq=False)
class Running:
    """A supervisor started with ``nursery.start``; ``error`` holds its escalation, if any."""

    sup: Supervisor
    error: SupervisorEscalation | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    ended_at_s: float | None = None


async def start(nursery: trio.Nursery, sup: Supervisor) -> Running:
    """``await nursery.start(sup.run)``, with an escalation kept instead of raised."""
    running = Running(sup)

    async def go(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        reported = False

        class Status:
            def started(self, value: Any = None) -> None:
                nonlocal reported
                reported = True
                task_status.started(value)

        try:
            await sup.run(task_status=Status())
        except SupervisorEscalation as exc:
            running.error = exc
        finally:
            running.ended_at_s = trio.current_time()
            running.done.set()
        if not reported:
            task_status.started()

    await nursery.start(go)
    return running


async def run_beside(sup: Supervisor,
                     driver: Callable[[], Awaitable[Any]]) -> SupervisorEscalation | None:
    """Run ``sup`` in this task beside ``driver`` (cancelled once ``sup.run`` returns); what
    ``sup.run`` escalated, or None when it stopped on request."""
    escalation = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver)
        try:
            await sup.run()
        except SupervisorEscalation as exc:
            escalation = exc
        nursery.cancel_scope.cancel()
    return escalation
