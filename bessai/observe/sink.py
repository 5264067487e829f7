"""The seam between actors and telemetry: a metric sink.

Actors record what they measure through a `MetricSink` and never import OpenTelemetry, so an
actor works (and is tested) without a collector, and telemetry can be swapped or disabled in one
place. Every method must be cheap and must never block or raise: a dead collector costs counted
drops inside the telemetry layer, never a stalled actor.

Metric names are dotted and start with ``bessai.`` (``bessai.safety.blocks``); attribute values
are short strings or numbers (``rule="soc_min"``, ``device="inv1"``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

import attrs


class MetricSink(Protocol):
    def count(self, name: str, value: int = 1, **attributes: Any) -> None:
        """Add to a monotonic counter (blocks, drops, restarts, publish results)."""

    def record(self, name: str, value: float, **attributes: Any) -> None:
        """Record one sample of a distribution (poll latency, heartbeat gap)."""

    def gauge(self, name: str, value: float, **attributes: Any) -> None:
        """Set the current value of a level (spool depth, link state, snapshot age)."""


class NullSink:
    """Discards everything; the default for actors built without telemetry."""

    def count(self, name: str, value: int = 1, **attributes: Any) -> None:
        pass

    def record(self, name: str, value: float, **attributes: Any) -> None:
        pass

    def gauge(self, name: str, value: float, **attributes: Any) -> None:
        pass


NULL_SINK = NullSink()


MetricKey = tuple[str, tuple[tuple[str, Any], ...]]
"""A metric name and its sorted attributes: ``("bessai.safety.blocks", (("rule", "soc_min"),))``."""


def _key(name: str, attributes: dict[str, Any]) -> MetricKey:
    return name, tuple(sorted(attributes.items()))


@attrs.define
class RecordingSink:
    """Keeps everything in memory, for tests and for the status endpoint's counters."""

    counters: dict[MetricKey, int] = attrs.field(factory=lambda: defaultdict(int))
    samples: dict[MetricKey, list[float]] = attrs.field(factory=lambda: defaultdict(list))
    gauges: dict[MetricKey, float] = attrs.field(factory=dict)

    def count(self, name: str, value: int = 1, **attributes: Any) -> None:
        self.counters[_key(name, attributes)] += value

    def record(self, name: str, value: float, **attributes: Any) -> None:
        self.samples[_key(name, attributes)].append(value)

    def gauge(self, name: str, value: float, **attributes: Any) -> None:
        self.gauges[_key(name, attributes)] = value

    def total(self, name: str, **attributes: Any) -> int:
        """Sum of a counter over every attribute set that includes ``attributes``."""
        want = set(attributes.items())
        return sum(v for (n, attrs_), v in self.counters.items()
                   if n == name and want <= set(attrs_))
