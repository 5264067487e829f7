"""Observability: logs, metrics, traces and the status endpoint.

Actors depend only on `MetricSink` / `Tracer` (and ``structlog.get_logger()``); everything that
knows OpenTelemetry, HTTP or stdout lives here and is wired once, by the gateway tree.
"""

from bessai.observe.actor import SwitchableSink, SwitchableTracer, TelemetryActor
from bessai.observe.health import check_health, health_from_status
from bessai.observe.logs import (
    configure_logging,
    get_log_level,
    reload_log_level_on_sighup,
    set_log_level,
)
from bessai.observe.otel import OtelSink, Telemetry, TelemetryConfig
from bessai.observe.redact import redact_text, redact_value
from bessai.observe.sink import NULL_SINK, MetricSink, NullSink, RecordingSink
from bessai.observe.status import StatusServer
from bessai.observe.tracing import NULL_TRACER, NullTracer, SpanHandle, Tracer

__all__ = [
    "NULL_SINK",
    "NULL_TRACER",
    "MetricSink",
    "NullSink",
    "NullTracer",
    "OtelSink",
    "RecordingSink",
    "SpanHandle",
    "StatusServer",
    "SwitchableSink",
    "SwitchableTracer",
    "Telemetry",
    "TelemetryActor",
    "TelemetryConfig",
    "Tracer",
    "check_health",
    "configure_logging",
    "get_log_level",
    "health_from_status",
    "redact_text",
    "redact_value",
    "reload_log_level_on_sighup",
    "set_log_level",
]
