"""The errors of the actors runtime.

A supervisor that gives up raises exactly one `SupervisorEscalation` to its parent, never an
ExceptionGroup: it names the supervisor, the child that kept failing and that child's last
exception. When supervisors nest, each level wraps the one below, and ``path``/``root_exception``
walk down to the leaf that actually failed.
"""

from __future__ import annotations

import attrs


@attrs.define(auto_exc=True, eq=False, str=False)
class SupervisorEscalation(Exception):
    """A supervisor exceeded its restart intensity, stopped its children and gave up."""

    supervisor: str
    child_id: str
    last_exception: BaseException | None
    intensity: int
    period_s: float

    def __str__(self) -> str:
        if self.last_exception is None:
            last = "it returned normally; a PERMANENT child must keep running (use "\
                   "Restart.TRANSIENT for work that finishes)"
        else:
            last = f"last failure: {self.last_exception!r}"
        return (
            f"supervisor {self.supervisor!r} gave up: child {self.child_id!r} needed more than "
            f"{self.intensity} restart(s) within {self.period_s:g} s ({last}). Its children are "
            f"stopped. Fix the cause of the failures, or raise intensity/period_s if they are "
            f"expected (better: handle expected faults inside the actor)."
        )

    @property
    def path(self) -> tuple[str, ...]:
        """Child ids from this supervisor down to the leaf that failed."""
        inner = self.last_exception
        if isinstance(inner, SupervisorEscalation):
            return (self.child_id, *inner.path)
        return (self.child_id,)

    @property
    def root_exception(self) -> BaseException | None:
        """The exception of the leaf actor whose failures started the escalation."""
        inner = self.last_exception
        if isinstance(inner, SupervisorEscalation):
            return inner.root_exception
        return inner


class SupervisorNotRunning(RuntimeError):
    """A dynamic operation was attempted on a supervisor that is not running."""


class UnknownChild(LookupError):
    """No child with that id under this supervisor."""
