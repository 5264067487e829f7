"""actors: supervised actors for Trio, with Erlang/OTP semantics.

A `Supervisor` runs children described by `ChildSpec` values: it starts them in order (each
after the previous reported ready through ``task_status.started()``), restarts them by
`Strategy` and `Restart` type with `Backoff` between restarts, gives up with one clear
`SupervisorEscalation` when restarts exceed its intensity, and stops them in reverse order,
each with its grace period, then cancellation, then a kill timeout: a stop always has a
bound. A supervisor is itself an actor, so trees nest, and it runs in any Trio nursery next to
your own tasks::

    async with trio.open_nursery() as nursery:
        sup = actors.Supervisor(children=[actors.ChildSpec("poller", Poller)], name="app")
        await nursery.start(sup.run)
        ...
        sup.request_stop()

Mailboxes connect actors without coupling their lifetimes: `open_mailbox` (bounded,
backpressure), `LatestCell` (newest value, writer never blocks), `DropOldestRing` (writer never
blocks, drops and counts the oldest); `call` is a request/reply over a mailbox with a timeout.
An `IsolatedBranch` runs a nested supervisor whose escalation is absorbed (a degraded state,
capped backoff) instead of ending its parent: for a subtree that depends on an outside
resource. This package never imports the gateway (``bessai``) and depends only on trio and
attrs.
"""

import logging as _logging

from actors.actor import Actor, FunctionActor, Stoppable
from actors.backoff import Backoff
from actors.branch import BranchStateHook, IsolatedBranch
from actors.call import CallTimeout, Request, call
from actors.cell import LatestCell, Versioned
from actors.errors import (
    ReturnedBeforeReady,
    StartFailed,
    StopOverrun,
    SupervisorEscalation,
    SupervisorNotRunning,
    UnknownChild,
)
from actors.events import (
    ChildInfo,
    ChildState,
    EventHook,
    EventKind,
    ExitReason,
    Failure,
    SupervisorEvent,
    SupervisorState,
)
from actors.mailbox import open_mailbox
from actors.ring import DropOldestRing
from actors.spec import ChildSpec, Restart, Strategy
from actors.supervisor import Supervisor, SupervisorRef, supervisor_spec

# A library logs, the application decides where logs go: without this handler Python's
# "last resort" would print every child_failed warning to stderr of an app that never configured
# logging (and already sees the failure through on_event).
_logging.getLogger("actors").addHandler(_logging.NullHandler())

__all__ = [
    "Actor",
    "Backoff",
    "BranchStateHook",
    "CallTimeout",
    "ChildInfo",
    "ChildSpec",
    "ChildState",
    "DropOldestRing",
    "EventHook",
    "EventKind",
    "ExitReason",
    "Failure",
    "FunctionActor",
    "IsolatedBranch",
    "LatestCell",
    "Request",
    "Restart",
    "ReturnedBeforeReady",
    "StartFailed",
    "StopOverrun",
    "Stoppable",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorEvent",
    "SupervisorNotRunning",
    "SupervisorRef",
    "SupervisorState",
    "UnknownChild",
    "Versioned",
    "call",
    "open_mailbox",
    "supervisor_spec",
]
