"""What a supervisor tells the outside world: lifecycle events and introspection values.

Every value here is frozen, so a hook or a status page can keep it without seeing it change.
Times (``at_s``, ``since_s``) are Trio clock readings (``trio.current_time()``), comparable with
each other and virtual under ``MockClock``; they are not wall-clock timestamps.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from actors.spec import Restart


class EventKind(enum.Enum):
    """What happened to a child (or to the supervisor itself, for ESCALATED)."""

    STARTED = "started"
    """A child reported ready for the first time."""
    RESTARTED = "restarted"
    """A child reported ready again after a restart."""
    EXITED = "exited"
    """A child instance ended: it returned, failed, or was stopped by its supervisor."""
    ESCALATED = "escalated"
    """The supervisor exceeded its restart intensity (or a child overran its stop); it gives up."""
    STOP_OVERRUN = "stop_overrun"
    """A child was still running its kill timeout after it was cancelled (see `StopOverrun`)."""


class ExitReason(enum.Enum):
    """How a child instance ended; decides, with its restart type, whether it is restarted."""

    NORMAL = "normal"
    """``run`` returned on its own."""
    FAILED = "failed"
    """``run`` raised (before or after reporting ready)."""
    STOPPED = "stopped"
    """The supervisor stopped it (shutdown, removal, or a sibling's restart)."""
    SHUTDOWN_ERROR = "shutdown_error"
    """The supervisor was stopping it and ``run`` raised instead of ending cleanly (a final
    flush that failed). Recorded as a failure, logged at ERROR; never restarted for it."""


class ChildState(enum.Enum):
    """Where a child is in its life, as introspection reports it."""

    STARTING = "starting"
    """Running, has not reported ready yet."""
    RUNNING = "running"
    """Reported ready."""
    STOPPING = "stopping"
    """Asked to stop; within its grace period or being cancelled."""
    BACKOFF = "backoff"
    """Not running; a (re)start is scheduled."""
    STOPPED = "stopped"
    """Not running and not scheduled (transient child that finished, or supervisor stopped)."""


class SupervisorState(enum.Enum):
    """Where a supervisor is in its life (``Supervisor.state``)."""

    IDLE = "idle"
    """Built, ``run`` not called yet."""
    STARTING = "starting"
    """``run`` is starting the children in order; not every child reported ready yet."""
    RUNNING = "running"
    """Every child reported ready once; the supervisor restarts what fails."""
    STOPPING = "stopping"
    """A stop was requested (or it escalates, or was cancelled): children are being stopped.
    ``add_child`` is refused from the moment the stop is requested."""
    STOPPED = "stopped"
    """``run`` has ended."""


@attrs.frozen
class Failure:
    """The last failure of a child: enough for a log line or a status page."""

    exception_repr: str
    at_s: float
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class SupervisorEvent:
    """One lifecycle event, passed to the supervisor's ``on_event`` hook."""

    kind: EventKind
    supervisor: str
    child_id: str | None
    at_s: float
    restarts: int = 0
    """The child's restart count after this event."""
    reason: ExitReason | None = None
    """For EXITED: how the instance ended."""
    exception_repr: str | None = None
    """For EXITED with FAILED or SHUTDOWN_ERROR, STOP_OVERRUN and ESCALATED: the exception."""
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)
    """The exception itself (same cases as ``exception_repr``)."""


EventHook = Callable[[SupervisorEvent], None]
"""Receives every event synchronously; keep it quick. Its exceptions are logged and ignored."""


@attrs.frozen
class ChildInfo:
    """A snapshot of one child, as ``Supervisor.which_children()`` reports it."""

    id: str
    state: ChildState
    restart: Restart
    restarts: int
    """How many times this child was started again after its first start."""
    last_failure: Failure | None
    since_s: float | None
    """When the child last reported ready (None if it never did, or is not running)."""
    is_supervisor: bool = False
    """Its current (or last) instance is a `Supervisor` (reach it with ``Supervisor.nested``)."""
    children: tuple[ChildInfo, ...] = ()
    """For a running nested supervisor, with ``which_children(recursive=True)``: its children."""
