"""The metric catalogue: every metric the gateway exports, its instrument kind, unit and meaning.

This table is the contract between the actors (which report through a `MetricSink` by name) and
dashboards; docs/telemetry.md reproduces it. `OtelSink` uses it to create each instrument with
its unit, description and (for histograms) bucket boundaries. A name that is not listed still
works: its kind follows the sink method used (``count`` → counter, ``record`` → histogram,
``gauge`` → gauge) with no unit.
"""

from __future__ import annotations

from enum import Enum

import attrs


class Kind(Enum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


@attrs.frozen
class MetricSpec:
    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


_SECONDS_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SECONDS_GAP = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("bessai.device.poll.duration", Kind.HISTOGRAM, "s",
               "Time for one poll cycle of a device (all coalesced reads)",
               ("site", "device", "outcome"), _SECONDS_FAST),
    MetricSpec("bessai.device.snapshot.age", Kind.GAUGE, "s",
               "Age of the latest snapshot when last checked; grows while the link is down",
               ("site", "device")),
    MetricSpec("bessai.device.link.state", Kind.GAUGE, "1",
               "Modbus link to the device: 1 up, 0 down", ("site", "device")),
    MetricSpec("bessai.watchdog.heartbeat.gap", Kind.HISTOGRAM, "s",
               "Time between two successful heartbeat writes (must stay under 15 s)",
               ("site", "device"), _SECONDS_GAP),
    MetricSpec("bessai.safety.blocks", Kind.COUNTER, "{block}",
               "SAFETY_BLOCK events by rule (soc_min, soc_max, temp_max, stale_data...)",
               ("site", "device", "rule")),
    MetricSpec("bessai.commands", Kind.COUNTER, "{command}",
               "Dispatch commands by outcome (applied, blocked, expired, invalid, failed)",
               ("site", "device", "outcome")),
    MetricSpec("bessai.spool.depth", Kind.GAUGE, "{row}",
               "Rows waiting in the durable outbox", ()),
    MetricSpec("bessai.spool.bytes", Kind.GAUGE, "By",
               "Bytes used by the durable outbox", ()),
    MetricSpec("bessai.spool.oldest_age", Kind.GAUGE, "s",
               "Age of the oldest row not yet published", ()),
    MetricSpec("bessai.uplink.publish", Kind.COUNTER, "{message}",
               "Messages in publish attempts by result status (ok, retry, dead_letter, "
               "auth, config)", ("status",)),
    MetricSpec("bessai.spool.dropped", Kind.COUNTER, "{row}",
               "Rows dropped from the outbox by reason (budget, dead_letter)", ("reason",)),
    MetricSpec("bessai.actor.restarts", Kind.COUNTER, "{restart}",
               "Restarts of supervised children by child id", ("child",)),
    MetricSpec("bessai.telemetry.dropped", Kind.COUNTER, "{item}",
               "Telemetry lost on the way to the collector, by signal (spans, metrics) and "
               "reason (queue_full, export_failed, sink_error, kind_conflict)",
               ("signal", "reason")),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}


def markdown_table() -> str:
    """The catalogue as a Markdown table (docs/telemetry.md is checked against it)."""
    rows = ["| metric | kind | unit | attributes | meaning |", "|---|---|---|---|---|"]
    for spec in METRICS:
        attributes = ", ".join(f"`{a}`" for a in spec.attributes) or "-"
        rows.append(f"| `{spec.name}` | {spec.kind.value} | `{spec.unit}` | {attributes} | "
                    f"{spec.description} |")
    return "\n".join(rows)
