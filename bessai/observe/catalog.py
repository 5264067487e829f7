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
_C, _H, _G = Kind.COUNTER, Kind.HISTOGRAM, Kind.GAUGE

METRICS: tuple[MetricSpec, ...] = (
    # device link (one per device)
    MetricSpec("bessai.device.poll_latency_s", _H, "s",
               "Time for one poll of a device: all coalesced reads of a poll class (poll: fast, "
               "or all for the every-tag poll)",
               ("device", "poll"), _SECONDS_FAST),
    MetricSpec("bessai.device.write_latency_s", _H, "s",
               "Time for one write through the device link, by priority",
               ("device", "priority"), _SECONDS_FAST),
    MetricSpec("bessai.device.snapshot_age_s", _G, "s",
               "Age of the latest snapshot; grows while the link is down", ("device",)),
    MetricSpec("bessai.device.link_up", _G, "1",
               "Modbus link to the device: 1 up, 0 down", ("device",)),
    MetricSpec("bessai.device.link_down", _C, "{transition}",
               "Transitions of a device (unit) to down: its connection lost, or it stopped "
               "answering", ("device",)),
    MetricSpec("bessai.device.connection_down", _C, "{transition}",
               "Transitions of an endpoint's connection (shared by its units) to down",
               ("connection",)),
    MetricSpec("bessai.device.connection_state", _G, "1",
               "An endpoint's connection: 0 down or connecting, 3 up", ("link",)),
    MetricSpec("bessai.device.poll_errors", _C, "{poll}", "Polls that failed", ("device",)),
    MetricSpec("bessai.device.publish_errors", _C, "{snapshot}",
               "Snapshots the device link could not hand to a consumer", ("device",)),
    # watchdog
    MetricSpec("bessai.watchdog.heartbeat_gap_s", _H, "s",
               "Time between two successful heartbeat writes (Huawei needs < 15 s)",
               ("device",), _SECONDS_GAP),
    MetricSpec("bessai.watchdog.heartbeat_late", _C, "{heartbeat}",
               "Heartbeats written later than their interval plus tolerance", ("device",)),
    MetricSpec("bessai.watchdog.heartbeat_failures", _C, "{heartbeat}",
               "Heartbeat writes that failed", ("device",)),
    MetricSpec("bessai.watchdog.lease_failures", _C, "{renewal}",
               "Forced-command lease renewals that failed", ("device",)),
    # safety guard and command gate
    MetricSpec("bessai.safety.blocks", _C, "{block}",
               "SAFETY_BLOCK events by rule (soc_min, soc_max, temp_max, stale...)",
               ("device", "rule")),
    MetricSpec("bessai.safety.clears", _C, "{clear}",
               "SAFETY_CLEAR events (a block released past its hysteresis)", ("device", "rule")),
    MetricSpec("bessai.safety.blocked", _G, "1",
               "1 while a direction (charge, discharge) is blocked by any rule, else 0",
               ("device", "direction")),
    MetricSpec("bessai.safety.stops", _C, "{stop}",
               "Forced commands stopped on the device because they worsened a block",
               ("device",)),
    MetricSpec("bessai.safety.stop_failures", _C, "{stop}",
               "Attempts to stop a forced command that failed", ("device",)),
    MetricSpec("bessai.commands", _C, "{command}",
               "Dispatch commands by decision (accepted, clamped, rejected); device is `-` for a "
               "command no device of this gateway could take (malformed, other site or device)",
               ("device", "decision")),
    MetricSpec("bessai.commands.received", _C, "{message}",
               "Command messages pulled from Pub/Sub and handled (then acknowledged)"),
    MetricSpec("bessai.commands.handler_failures", _C, "{message}",
               "Command messages whose handler raised (not acknowledged; Pub/Sub redelivers)"),
    MetricSpec("bessai.commands.signature_rejected", _C, "{command}",
               "Commands refused for their signature (missing, unknown key, invalid, scope)",
               ("fault",)),
    MetricSpec("bessai.clock.skew_s", _G, "s",
               "Pub/Sub's clock minus this host's, measured from pull answers (+: host behind)"),
    MetricSpec("bessai.clock.untrusted", _G, "1",
               "1 while the clock skew is over CLOCK_SKEW_MAX_S (charge/discharge refused)"),
    # local schedules (issue 15)
    MetricSpec("bessai.schedules", _C, "{schedule}",
               "Schedule messages by decision (accepted, rejected); device is `-` when the "
               "message named none", ("device", "decision")),
    MetricSpec("bessai.schedule.writes", _C, "{write}",
               "Changes the schedule executor put on the device, by action and reason "
               "(start, slot_start, resume, restore, controller, expired)",
               ("device", "action", "reason")),
    MetricSpec("bessai.schedule.transitions", _C, "{transition}",
               "Schedule slots overridden by a direct command or held by safety",
               ("device", "state")),
    MetricSpec("bessai.schedule.apply_failures", _C, "{write}",
               "Schedule writes the device refused or that failed (retried every poll)",
               ("device",)),
    # spool and uplink
    MetricSpec("bessai.spool.depth", _G, "{row}", "Rows waiting in the durable outbox"),
    MetricSpec("bessai.spool.bytes", _G, "By", "Bytes used by the durable outbox"),
    MetricSpec("bessai.spool.oldest_age_s", _G, "s",
               "Age of the oldest row not yet published (0 when empty)"),
    MetricSpec("bessai.spool.drops", _C, "{row}",
               "Readings lost before publishing, by reason (budget, max_age, invalid, "
               "disk_fault: refused while the disk could not take writes, file_deleted: in a "
               "spool file deleted under the gateway, ring_full: the recorder fell behind the "
               "polls); each also becomes a gap record",
               ("reason",)),
    MetricSpec("bessai.spool.disk_faults", _C, "{fault}",
               "Disk faults the spool entered (SPOOL_DISK_FAULT), by condition (disk_full, "
               "read_only, permission_denied, locked, deleted, corrupt, io_error)",
               ("condition",)),
    MetricSpec("bessai.spool.dead_letters", _C, "{row}",
               "Poison messages moved to the dead-letter table"),
    MetricSpec("bessai.uplink.link_state", _G, "1",
               "Cloud link: 0 down, 1 probing, 2 degraded, 3 up", ("link",)),
    MetricSpec("bessai.publish.latency_s", _H, "s", "Time for one Pub/Sub publish request",
               (), _SECONDS_FAST),
    MetricSpec("bessai.publish.results", _C, "{request}",
               "Publish requests by result status (HTTP code or transport error)",
               ("status",)),
    MetricSpec("bessai.publish.messages", _C, "{message}",
               "Messages acknowledged by Pub/Sub (and deleted from the spool)"),
    MetricSpec("bessai.publish.retries", _C, "{message}", "Messages put back for a retry"),
    MetricSpec("bessai.publish.config_faults", _C, "{fault}",
               "403/404 from Pub/Sub: a configuration fault an operator must fix"),
    MetricSpec("bessai.publish.all_rejected", _C, "{episode}",
               "Times Pub/Sub rejected every message and the uplink began holding rows "
               "(UPLINK_ALL_REJECTED)"),
    # supervision and telemetry itself
    MetricSpec("bessai.actor.restarts", _C, "{restart}",
               "Restarts of supervised children by child id and supervisor (`gateway`, "
               "`site:<device>` for a device's nested site supervisor)", ("supervisor", "child")),
    MetricSpec("bessai.telemetry.dropped", _C, "{item}",
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
