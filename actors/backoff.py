"""The pause before a restart: jittered exponential backoff that forgets after a quiet period.

A child that crashes at once after every start must not spin the CPU or hammer its peer, and a
fleet of gateways restarted by the same outage must not retry in lock-step. So the n-th
consecutive restart of a child waits ``initial_s * multiplier**n`` (capped at ``max_s``), reduced
by a random fraction of up to ``jitter`` (``jitter=1`` is AWS's "full jitter"). A child that ran
for ``reset_after_s`` before failing is considered healthy again: its next restart waits
``initial_s`` once more.

`Backoff` is a frozen value; randomness comes from a ``random.Random`` the caller passes, so a
test seeds it and gets the same delays every run.
"""

from __future__ import annotations

import random

import attrs


def _non_negative(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"Backoff.{attr.name}={value!r} must be >= 0")


@attrs.frozen
class Backoff:
    """Delay policy between restarts of one child. ``Backoff.none()`` restarts at once."""

    initial_s: float = attrs.field(default=0.1, converter=float, validator=_non_negative)
    max_s: float = attrs.field(default=30.0, converter=float, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, converter=float)
    jitter: float = attrs.field(default=0.2, converter=float)
    reset_after_s: float = attrs.field(default=60.0, converter=float, validator=_non_negative)

    @multiplier.validator
    def _check_multiplier(self, _attr: attrs.Attribute[float], value: float) -> None:
        if not value >= 1:
            raise ValueError(f"Backoff.multiplier={value!r} must be >= 1 (1 = constant delay)")

    @jitter.validator
    def _check_jitter(self, _attr: attrs.Attribute[float], value: float) -> None:
        if not 0 <= value <= 1:
            raise ValueError(
                f"Backoff.jitter={value!r} must be within [0, 1]: the largest fraction "
                "taken off a delay at random (0 = none, 1 = full jitter)"
            )

    @classmethod
    def none(cls) -> Backoff:
        """No pause at all: restart as soon as the old instance has ended."""
        return cls(initial_s=0.0, max_s=0.0, jitter=0.0)

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay before consecutive restart number ``attempt`` (0-based)."""
        if self.initial_s == 0:
            return 0.0
        try:
            raw = self.initial_s * self.multiplier**attempt
        except OverflowError:
            return self.max_s
        return min(raw, self.max_s)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The jittered delay: within ``[ceiling * (1 - jitter), ceiling]``."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1.0 - self.jitter * rng.random())
