"""`IsolatedBranch`: a nested supervisor whose escalation stops at its own door.

OTP's answer to "this subtree may fail without taking its siblings down" is a supervisor
whose escalation its parent absorbs. A plain nested `Supervisor` escalates into its parent's
intensity; a crash loop in a branch that depends on an outside resource (a disk, a network)
then ends the whole tree, and the restart meets the same resource and loops. `IsolatedBranch`
runs a supervisor built fresh by ``build`` and, when that supervisor escalates, turns it into a
*degraded* state instead of raising:

* the escalation is reported once (``on_state(True, escalation)``), the branch waits per
  ``backoff`` (capped, jittered) and builds a new supervisor; it never raises to its parent,
  whatever the children do (cancellation from outside still ends it, with the inner
  supervisor's ordered shutdown);
* it is *recovered* (``on_state(False, None)``, once) when a rebuilt supervisor has run for
  ``backoff.reset_after_s`` without escalating; the backoff then starts from its first step;
* it reports ready to its parent once the first inner supervisor did, or once that first
  supervisor escalated while starting: the parent's later children (for a gateway, the device
  sites) must not wait on a branch that cannot start.

Introspection follows the branch: `which_children` answers for the supervisor running now.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs
import trio

from actors.backoff import Backoff
from actors.errors import SupervisorEscalation
from actors.events import ChildInfo
from actors.supervisor import Supervisor

BranchStateHook = Callable[[bool, SupervisorEscalation | None], None]
"""``(degraded, escalation)``: called on entering (True, the escalation) and leaving (False)."""


@attrs.define(eq=False)
class IsolatedBranch:
    """Runs ``build()`` supervisors one after the other; absorbs their escalations."""

    build: Callable[[], Supervisor]
    backoff: Backoff = attrs.field(factory=lambda: Backoff(initial_s=1.0, max_s=60.0,
                                                           reset_after_s=120.0))
    on_state: BranchStateHook | None = None
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    current: Supervisor | None = attrs.field(default=None, init=False)
    degraded: bool = attrs.field(default=False, init=False)
    escalations: int = attrs.field(default=0, init=False)
    last_escalation: SupervisorEscalation | None = attrs.field(default=None, init=False)
    _stop: bool = attrs.field(default=False, init=False, repr=False)
    _waiting: trio.CancelScope | None = attrs.field(default=None, init=False, repr=False)

    def request_stop(self) -> None:
        self._stop = True
        if self._waiting is not None:
            self._waiting.cancel()
        if self.current is not None:
            self.current.request_stop()

    def which_children(self) -> list[ChildInfo]:
        return [] if self.current is None else self.current.which_children()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        ready = _FirstReady(task_status)
        streak = 0
        while not self._stop:
            supervisor = self.build()
            self.current = supervisor
            started_s = trio.current_time()
            escalation = await self._run_one(supervisor, ready)
            if escalation is None:
                return  # stopped on request
            ready.started()  # the first supervisor could not start: do not hold the parent
            if trio.current_time() - started_s >= self.backoff.reset_after_s:
                streak = 0
            self.escalations += 1
            self.last_escalation = escalation
            if not self.degraded:
                self.degraded = True
                self._notify(True, escalation)
            delay = self.backoff.delay(streak, self.rng)
            streak += 1
            with trio.CancelScope() as self._waiting:
                await trio.sleep(delay)
            self._waiting = None
        ready.started()

    async def _run_one(self, supervisor: Supervisor,
                       ready: _FirstReady) -> SupervisorEscalation | None:
        result: list[SupervisorEscalation | None] = []
        async with trio.open_nursery() as nursery:

            async def body() -> None:
                try:
                    await supervisor.run(task_status=ready)
                except SupervisorEscalation as escalation:
                    result.append(escalation)
                else:
                    result.append(None)
                nursery.cancel_scope.cancel()

            nursery.start_soon(body)
            if self.degraded:
                nursery.start_soon(self._recover_after, self.backoff.reset_after_s)
        return result[0] if result else None

    async def _recover_after(self, quiet_s: float) -> None:
        await trio.sleep(quiet_s)
        if self.degraded:
            self.degraded = False
            self._notify(False, None)

    def _notify(self, degraded: bool, escalation: SupervisorEscalation | None) -> None:
        if self.on_state is not None:
            self.on_state(degraded, escalation)


@attrs.define(eq=False)
class _FirstReady:
    """Passes the first ``started()`` on to the parent; later ones (rebuilt supervisors) are
    the branch's own business."""

    task_status: Any
    called: bool = False

    def started(self, value: Any = None) -> None:
        if not self.called:
            self.called = True
            self.task_status.started(value)
