"""actors: supervised actors for Trio, with Erlang/OTP semantics.

A `Supervisor` runs children described by `ChildSpec` values: it starts them in order (each
after the previous reported ready through ``task_status.started()``), restarts them by
`Strategy` and `Restart` type with `Backoff` between restarts, gives up with one clear
`SupervisorEscalation` when restarts exceed its intensity, and stops them in reverse order,
each with its grace period, then cancellation. A supervisor is itself an actor, so trees nest,
and it runs in any Trio nursery next to your own tasks::

    async with trio.open_nursery() as nursery:
        sup = actors.Supervisor(children=[actors.ChildSpec("poller", Poller)], name="app")
        await nursery.start(sup.run)
        ...
        sup.request_stop()

Mailboxes connect actors without coupling their lifetimes: `open_mailbox` (bounded,
backpressure), `LatestCell` (newest value, writer never blocks), `DropOldestRing` (writer never
blocks, drops and counts the oldest). An `IsolatedBranch` runs a nested supervisor whose
escalation is absorbed (a degraded state, capped backoff) instead of ending its parent: for a
subtree that depends on an outside resource. This package never imports the gateway
(``bessai``).
"""

from actors.actor import Actor, FunctionActor, Stoppable
from actors.backoff import Backoff
from actors.branch import BranchStateHook, IsolatedBranch
from actors.cell import LatestCell, Versioned
from actors.errors import SupervisorEscalation, SupervisorNotRunning, UnknownChild
from actors.events import (
    ChildInfo,
    ChildState,
    EventHook,
    EventKind,
    ExitReason,
    Failure,
    SupervisorEvent,
)
from actors.mailbox import open_mailbox
from actors.ring import DropOldestRing
from actors.spec import ChildSpec, Restart, Strategy
from actors.supervisor import ReturnedBeforeReady, Supervisor, supervisor_spec

__all__ = [
    "Actor",
    "Backoff",
    "BranchStateHook",
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
    "Restart",
    "ReturnedBeforeReady",
    "Stoppable",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorEvent",
    "SupervisorNotRunning",
    "UnknownChild",
    "Versioned",
    "open_mailbox",
    "supervisor_spec",
]
