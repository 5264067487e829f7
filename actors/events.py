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
    """The supervisor exceeded its restart intensity and is giving up."""


class ExitReason(enum.Enum):
    """How a child instance ended; decides, with its restart type, whether it is restarted."""

    NORMAL = "normal"
    """``run`` returned on its own."""
    FAILED = "failed"
    """``run`` raised (before or after reporting ready)."""
    STOPPED = "stopped"
    """The supervisor stopped it (shutdown, removal, or a sibling's restart)."""


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
    """For EXITED with FAILED, and ESCALATED: the child's exception."""


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
