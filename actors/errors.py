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
    """A supervisor gave up (restart intensity exceeded, or a child overran its stop) and
    stopped its children."""

    supervisor: str
    child_id: str
    last_exception: BaseException | None
    intensity: int
    period_s: float

    def __str__(self) -> str:
        if isinstance(self.last_exception, StopOverrun):
            return (
                f"supervisor {self.supervisor!r} gave up: {self.last_exception} Its other "
                "children are stopped."
            )
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


@attrs.define(auto_exc=True, eq=False, str=False)
class StopOverrun(Exception):
    """A child did not end within its kill timeout after it was cancelled.

    Trio cannot kill a task: an actor that shields itself from cancellation, or waits in a
    thread that ignores it, keeps running. The supervisor reports the overrun (ERROR log,
    ``STOP_OVERRUN`` event, ``last_failure``) and escalates, because it can no longer promise
    that the child's old instance has ended; its ``run`` still ends only once that task ends.
    """

    supervisor: str
    child_id: str
    kill_timeout_s: float

    def __str__(self) -> str:
        return (
            f"child {self.child_id!r} of supervisor {self.supervisor!r} was still running "
            f"{self.kill_timeout_s:g} s after it was cancelled: it shields itself from "
            "cancellation or blocks in a thread. Make its clean-up bounded (a shielded scope "
            "with its own deadline; trio.to_thread.run_sync(..., abandon_on_cancel=True))."
        )


@attrs.define(auto_exc=True, eq=False, str=False)
class StartFailed(Exception):
    """``add_child`` started a child that failed before it reported ready; the spec is dropped.

    ``exception`` is the child's error (also the ``__cause__``): what it raised, or a
    `ReturnedBeforeReady` if it returned without calling ``task_status.started()``.
    """

    supervisor: str
    child_id: str
    exception: BaseException

    def __str__(self) -> str:
        return (
            f"child {self.child_id!r} of supervisor {self.supervisor!r} failed to start: "
            f"{self.exception!r}. It was not added; fix the cause and add it again."
        )


class ReturnedBeforeReady(RuntimeError):
    """A PERMANENT actor's ``run`` returned without calling ``task_status.started()``."""


class SupervisorNotRunning(RuntimeError):
    """A dynamic operation was attempted on a supervisor that is not running (or is stopping)."""


class UnknownChild(LookupError):
    """No child with that id under this supervisor."""
