"""Run a supervisor beside a test, the way an embedder does, and keep what ``run`` raised."""

from __future__ import annotations

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
