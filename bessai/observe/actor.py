"""The telemetry actor: first child started, last stopped; owns the OTel export for one run.

The gateway wires every actor with ``telemetry_actor.sink`` and ``telemetry_actor.tracer`` at
construction, before anything runs. Those are stable proxies: they forward to NULL until `run`
has built the exporters, to the live `Telemetry` while it runs, and back to NULL once it stops,
so a restart of this actor never leaves another actor holding a dead sink.

`on_event` is the supervisor hook of the ``actors`` runtime: it logs every supervision event and
counts restarts in ``bessai.actor.restarts{supervisor, child}`` (and in `restarts`, for the status
page), nested supervisors included.
It accepts any object with ``kind`` and ``child_id`` attributes and never raises.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import attrs
import structlog
import trio

from bessai.observe.otel import Telemetry, TelemetryConfig
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.observe.tracing import NULL_TRACER, SpanHandle, Tracer

log = structlog.get_logger("bessai.observe.actor")

FAILING_FLUSH_S = 0.1
"""The last flush's deadline when the collector is already known to fail."""


@attrs.define
class SwitchableSink:
    """A `MetricSink` forwarding to whatever telemetry is live (NULL when none)."""

    target: MetricSink = NULL_SINK

    def count(self, name: str, value: int = 1, **attributes: Any) -> None:
        self.target.count(name, value, **attributes)

    def record(self, name: str, value: float, **attributes: Any) -> None:
        self.target.record(name, value, **attributes)

    def gauge(self, name: str, value: float, **attributes: Any) -> None:
        self.target.gauge(name, value, **attributes)


@attrs.define
class SwitchableTracer:
    """A `Tracer` forwarding to whatever telemetry is live (NULL when none)."""

    target: Tracer = NULL_TRACER

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[SpanHandle]:
        return self.target.span(name, **attributes)


def _kind_name(kind: object) -> str:
    name = getattr(kind, "name", None) or getattr(kind, "value", None) or kind
    return str(name)


@attrs.define
class TelemetryActor:
    """Runs a `Telemetry` for the life of the tree; flushes it with a deadline when stopped."""

    config: TelemetryConfig
    sink: SwitchableSink = attrs.field(factory=SwitchableSink)
    tracer: SwitchableTracer = attrs.field(factory=SwitchableTracer)
    restarts: dict[str, int] = attrs.field(factory=dict)
    """Restarts by child for the status page: ``child`` under the root supervisor,
    ``supervisor/child`` under a nested one (``site:inv1/watchdog``)."""
    telemetry: Telemetry | None = None
    root_supervisor: str = "gateway"
    _seen_restarts: dict[tuple[str, str], int] = attrs.field(factory=dict, init=False)
    _reconfigured: trio.Event = attrs.field(factory=trio.Event, init=False)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        telemetry = self._start()
        task_status.started()
        try:
            while True:
                await self._reconfigured.wait()
                self._reconfigured = trio.Event()
                old, telemetry = telemetry, self._start()
                # The new exporters are live before the old ones flush: nothing is reported
                # into a sink that is shutting down. The flush is bounded by its deadline.
                with trio.CancelScope(shield=True):
                    await old.shutdown(self.config.shutdown_deadline_s)
        finally:
            self.sink.target = NULL_SINK
            self.tracer.target = NULL_TRACER
            # A collector known to be down gets one short try, not the whole flush deadline:
            # what it would not take is dropped (and counted) either way.
            deadline_s = self.config.shutdown_deadline_s
            if telemetry.export_failing:
                deadline_s = min(deadline_s, FAILING_FLUSH_S)
            with trio.CancelScope(shield=True):
                await telemetry.shutdown(deadline_s)

    def reconfigure(self, config: TelemetryConfig) -> None:
        """Export with ``config`` from now on (a reload changed OTEL_EXPORTER_OTLP_ENDPOINT): the
        running actor builds new exporters, switches the sink and tracer to them, then flushes
        the old ones. Never blocks the caller."""
        self.config = config
        self._reconfigured.set()

    def _start(self) -> Telemetry:
        telemetry = Telemetry(self.config)
        self.telemetry = telemetry
        self.sink.target = telemetry.sink
        self.tracer.target = telemetry.tracer
        if telemetry.enabled:
            log.info("TELEMETRY_STARTED", endpoint=self.config.endpoint,
                     export_interval_s=self.config.export_interval_s)
        else:
            log.info("TELEMETRY_DISABLED",
                     hint="set OTEL_EXPORTER_OTLP_ENDPOINT to export metrics and traces")
        return telemetry

    def drops(self) -> dict[str, int]:
        """Telemetry lost so far, by ``signal.reason`` (for the status page)."""
        return self.telemetry.drops.snapshot() if self.telemetry is not None else {}

    def status(self) -> dict[str, Any]:
        """The ``telemetry`` section of the status document."""
        return {"enabled": bool(self.telemetry is not None and self.telemetry.enabled),
                "endpoint": self.config.endpoint, "dropped": self.drops(),
                "restarts": dict(self.restarts)}

    def on_event(self, event: object) -> None:
        """Supervisor hook: log the event; count restarts in ``bessai.actor.restarts``.

        Written against ``actors.SupervisorEvent`` (kind STARTED/RESTARTED/EXITED/ESCALATED,
        child_id, supervisor, restarts, reason, exception_repr) but reads every attribute
        defensively, so any object with ``kind`` and ``child_id`` works.

        A restart is counted from the event's ``restarts`` (the child's count after the event),
        not from RESTARTED alone: a restarted instance that crashes before reporting ready
        never emits RESTARTED, yet it was restarted. Counts are kept per (supervisor, child),
        so a nested site supervisor's ``watchdog`` is not confused with another site's, and a
        fresh supervisor instance (its counts back at 0) is followed from its new numbers.
        """
        try:
            kind = _kind_name(getattr(event, "kind", "unknown")).lower()
            child = str(getattr(event, "child_id", None) or "-")
            supervisor = str(getattr(event, "supervisor", None) or "-")
            reason = getattr(event, "reason", None)
            reason_name = _kind_name(reason).lower() if reason is not None else None
            fields: dict[str, Any] = {"child": child}
            for extra in ("supervisor", "restarts"):
                value = getattr(event, extra, None)
                if value is not None:
                    fields[extra] = value
            if reason_name is not None:
                fields["reason"] = reason_name
            error = getattr(event, "exception_repr", None)
            if error is not None:
                fields["error"] = error
            self._count_restarts(supervisor, child, kind, getattr(event, "restarts", None))
            if "restart" in kind:
                log.warning("ACTOR_RESTARTED", **fields)
            elif "escalat" in kind:
                log.critical("ACTOR_ESCALATED", **fields)
            elif reason_name == "failed" or "crash" in kind or "fail" in kind:
                log.error("ACTOR_CRASHED", **fields)
            else:
                log.info("actor_" + kind, **fields)
        except Exception:
            pass

    def _count_restarts(self, supervisor: str, child: str, kind: str, restarts: object) -> None:
        key = (supervisor, child)
        if not isinstance(restarts, int) or isinstance(restarts, bool):
            new = 1 if "restart" in kind else 0  # an event without counts: one per RESTARTED
        else:
            seen = self._seen_restarts.get(key, 0)
            if restarts < seen:  # a new supervisor instance: its counts start again
                seen = 0
            self._seen_restarts[key] = restarts
            new = restarts - seen
        if new <= 0:
            return
        label = child if supervisor in ("-", self.root_supervisor) else f"{supervisor}/{child}"
        self.restarts[label] = self.restarts.get(label, 0) + new
        self.sink.count("bessai.actor.restarts", new, supervisor=supervisor, child=child)
