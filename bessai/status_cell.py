"""Status cells: what a running actor tells ``/status`` about itself, kept by the tree.

An actor instance is gone once it crashes; what it knew must not be read from it afterwards.
So every actor that has a status to show writes it, while it runs, into a `StatusCell` that
the tree built once (`SiteContext` holds a site's; the `Gateway` the cloud link's and the
commands link's), and the cell is marked ended — with why — the moment the instance ends.
``/status`` reads only cells: during a restart backoff it says the actor is restarting (and
what it died of) instead of repeating the dead instance's last state, and nothing keeps a
reference to an actor instance to ask it later.

Invariants: `StatusCell.publish` and `StatusCell.ended` never block and never raise; a cell
holds at most one value, from the instance running now (None between instances).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Generic, TypeVar

import attrs
import trio

from bessai.bounds import clip
from bessai.link import Link, LinkState

T = TypeVar("T")


class Presence(enum.StrEnum):
    """Whether an instance is running to publish into a cell."""

    NEVER_STARTED = "never_started"
    RUNNING = "running"
    RESTARTING = "restarting"
    """The instance ended with an error; its supervisor starts a new one after its backoff."""
    STOPPED = "stopped"
    """The instance ended normally (a stop request, the end of the tree)."""


@attrs.define(eq=False)
class StatusCell(Generic[T]):
    """The latest status published by whichever instance of one actor runs now."""

    _value: T | None = attrs.field(default=None, init=False)
    presence: Presence = attrs.field(default=Presence.NEVER_STARTED, init=False)
    since: float | None = attrs.field(default=None, init=False)
    """Trio time of the last change of presence (None before the first start)."""
    ended_reason: str | None = attrs.field(default=None, init=False)
    """Why the last instance ended (``stopped`` or its error, clipped), while none runs."""

    @property
    def value(self) -> T | None:
        """The running instance's latest status; None while no instance runs."""
        return self._value

    def publish(self, value: T) -> None:
        """Called by the running instance at every change of its status."""
        if self.presence is not Presence.RUNNING:
            self.presence, self.since, self.ended_reason = Presence.RUNNING, _now(), None
        self._value = value

    def ended(self, error: BaseException | None) -> None:
        """Called once when the instance ends: its status is dropped, never shown again."""
        self._value = None
        self.since = _now()
        cause = _cause(error)
        if cause is None:
            self.presence, self.ended_reason = Presence.STOPPED, "stopped"
        else:
            self.presence = Presence.RESTARTING
            self.ended_reason = clip(f"{type(cause).__name__}: {cause}", 300)

    @contextlib.contextmanager
    def running(self) -> Iterator[StatusCell[T]]:
        """Mark the cell ended when the block ends, however it ends (return, cancellation,
        crash): the actor's ``run`` wraps its body in it."""
        try:
            yield self
        except BaseException as error:
            self.ended(error)
            raise
        self.ended(None)


@attrs.frozen
class LinkReport:
    """A peer link's state as the actor that owns the link publishes it (the uplink's Pub/Sub
    publish path, the commands pull): the `Link` state machine's view plus the count of
    messages it moved (``published`` / ``handled``) and of those it could not hand on (the
    commands handler failed: redelivered)."""

    state: LinkState
    reason: str | None
    down_since: float | None
    count: int = 0
    failed: int = 0

    @classmethod
    def of(cls, link: Link, count: int, failed: int = 0) -> LinkReport:
        return cls(link.state, link.reason, link.down_since, count, failed)

    @property
    def is_down(self) -> bool:
        return self.state in (LinkState.DOWN, LinkState.PROBING)


def link_view(cell: StatusCell[LinkReport], count_name: str,
              failed_name: str | None = None) -> dict[str, object] | None:
    """The ``/status`` entry of a peer link (None before its actor first ran). While no instance
    runs the state is the cell's presence (``restarting`` with the error, or ``stopped``)."""
    report = cell.value
    now = _now()
    if report is None:
        if cell.presence is Presence.NEVER_STARTED:
            return None
        view: dict[str, object] = {
            "state": str(cell.presence), "reason": cell.ended_reason,
            "down_for_s": None if cell.since is None else round(now - cell.since, 3),
            count_name: None}
    else:
        view = {"state": str(report.state), "reason": report.reason,
                "down_for_s": None if report.down_since is None
                else round(now - report.down_since, 3),
                count_name: report.count}
    if failed_name is not None:
        view[failed_name] = None if report is None else report.failed
    return view


def _cause(error: BaseException | None) -> BaseException | None:
    """The error an instance died of; None when it was stopped (cancelled) or returned.
    Trio wraps what escapes a nursery in a group: the first leaf that is not a cancellation."""
    if error is None or isinstance(error, trio.Cancelled):
        return None
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            cause = _cause(inner)
            if cause is not None:
                return cause
        return None
    return error


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # outside Trio (a unit test building a status document)
        return 0.0
