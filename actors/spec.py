"""How a child is supervised: `ChildSpec`, `Restart` and `Strategy` (Erlang/OTP's vocabulary).

A `ChildSpec` is a frozen value: the supervisor keeps it for the child's whole life and builds a
fresh actor from ``factory`` for every start, so no state leaks from a crashed instance into its
successor.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from typing import ParamSpec

import attrs

from actors.actor import Actor, FunctionActor

P = ParamSpec("P")


class Restart(enum.Enum):
    """When a child that ended is started again (OTP restart types)."""

    PERMANENT = "permanent"
    """Always restarted, even after a normal return: for actors that must always run."""
    TRANSIENT = "transient"
    """Restarted only after a failure (an exception); a normal return means the job is done."""
    TEMPORARY = "temporary"
    """Never restarted; removed from the supervisor when it ends, however it ends."""


class Strategy(enum.Enum):
    """Which siblings are restarted with a failed child (OTP restart strategies)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child: siblings are independent."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: they share state and cannot outlive each other's restart."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and every child started after it: later children depend on earlier."""


def _check_grace(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0 and not math.isnan(value)):
        raise ValueError(
            f"grace_s={value!r} must be >= 0 (0 cancels at once, math.inf waits for the actor "
            "to return on its own)"
        )


def _check_kill_timeout(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0 and not math.isnan(value)):
        raise ValueError(
            f"kill_timeout_s={value!r} must be >= 0 (how long a cancelled child may take to "
            "end before the overrun is reported and the supervisor escalates)"
        )


def _check_id(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"child id {value!r} must be a non-empty string, e.g. 'device_link'")


@attrs.frozen
class ChildSpec:
    """One child of a supervisor.

    A stop is bounded in three steps, like OTP's ``shutdown``: ``grace_s`` is how long the child
    gets to return after ``request_stop()`` before it is cancelled (0 cancels at once,
    ``math.inf`` waits as long as it takes: use it for nested supervisors, whose own children
    have their own grace; a cancellation from outside cuts an infinite grace). Actors without
    ``request_stop`` are cancelled at once whatever the grace, since they cannot be asked. Once
    cancelled, the child has ``kill_timeout_s`` to end; past it the supervisor reports the
    overrun (`StopOverrun`) and escalates. A nested `Supervisor` gets no kill timeout: its stop
    is bounded by its own children's.
    """

    id: str = attrs.field(validator=_check_id)
    factory: Callable[[], Actor] = attrs.field(validator=attrs.validators.is_callable())
    restart: Restart = attrs.field(
        default=Restart.PERMANENT, validator=attrs.validators.instance_of(Restart)
    )
    grace_s: float = attrs.field(default=5.0, converter=float, validator=_check_grace)
    kill_timeout_s: float = attrs.field(default=10.0, converter=float,
                                        validator=_check_kill_timeout)
    """Generous by default: it catches a hung stop, not an actor's bounded, shielded clean-up
    (a flush with its own deadline of a few seconds)."""

    @classmethod
    def from_function(
        cls,
        id: str,
        fn: Callable[P, Awaitable[object]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ChildSpec:
        """A child that runs ``await fn(*args, **kwargs, task_status=...)``; cancelled when
        stopped (PERMANENT, ``grace_s=0``).

        Typed with a ParamSpec, so mypy checks ``args`` and ``kwargs`` against ``fn`` (which
        must also accept ``task_status`` as a keyword). A ParamSpec leaves no room for options
        of the spec itself: change them with ``attrs.evolve(spec, restart=Restart.TRANSIENT)``.
        """
        if "task_status" in kwargs:
            raise TypeError("task_status is passed by the supervisor; do not give it")

        def build() -> Actor:
            return FunctionActor(fn, args, dict(kwargs))

        return cls(id=id, factory=build, grace_s=0.0)
