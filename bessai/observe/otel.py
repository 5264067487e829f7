"""OpenTelemetry export: metrics and traces over OTLP/HTTP protobuf, best effort and bounded.

A `Telemetry` owns one MeterProvider and one TracerProvider (never the OTel globals, so a test
can build many) and hands out an `OtelSink` (the `MetricSink` the actors report through) and an
`OtelTracer`. With no endpoint it is disabled: NULL sink, NULL tracer, no threads.

What a dead, slow or failing collector costs, and nothing more:

* **the caller never blocks**: a sink call is an in-memory aggregation; a span end is a
  ``deque.appendleft``. All network I/O happens in the SDK's background threads
  (PeriodicExportingMetricReader, BatchSpanProcessor);
* **memory is bounded**: metric state by the SDK's per-instrument cardinality limit (cumulative
  aggregation does not grow with time), spans by ``max_queue_size`` (the oldest are dropped);
* **every loss is counted**, exactly, in ``bessai.telemetry.dropped{signal, reason}`` (and in
  `Telemetry.drops`, readable without a collector): ``queue_full`` when the span queue
  overflows, ``export_failed`` for each span or data point in a failed export, ``sink_error``
  and ``kind_conflict`` for misuse of the sink;
* **retries are bounded**: the OTLP HTTP client retries 429/502/503/504 and connection errors with
  exponential backoff (1 s, 2 s, 4 s... honouring Retry-After) but never past ``timeout`` for
  the whole export, so ``export_timeout_s`` bounds each export; after that the batch is dropped
  and counted. Cumulative counters lose no totals across a failed export, only resolution;
* **a transition is logged once**: ``TELEMETRY_EXPORT_FAILING`` when a signal starts failing,
  ``TELEMETRY_EXPORT_RECOVERED`` when it works again (the exporter's per-attempt logs are
  silenced by `configure_logging`);
* **shutdown has a deadline**: `Telemetry.shutdown` flushes off the event loop and gives up
  after ``deadline_s``.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import attrs
import structlog
import trio

from bessai.observe.catalog import BY_NAME, Kind
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.observe.tracing import NULL_TRACER, OtelTracer, Tracer

if TYPE_CHECKING:
    # The SDK is typed; it is imported at run time only where a Telemetry is built (the OTLP
    # exporters pull in requests and protobuf), so a disabled gateway never pays for it.
    from opentelemetry.metrics import CallbackOptions, Counter, Meter, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

SERVICE_NAME = "bessai-edge-gateway"
_T = TypeVar("_T")
_Number = TypeVar("_Number", int, float)
_Scalar = str | bool | int | float
"""An OTel attribute value as the gateway sends it (sequences are never sent)."""
log = structlog.get_logger("bessai.observe.otel")


def _check_endpoint(_: Any, __: Any, value: str | None) -> None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT={value!r} is not an http(s) URL — set it to the "
            "collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318 (or leave it empty "
            "to disable telemetry)"
        )


def _positive(_: Any, attribute: attrs.Attribute[_Number], value: _Number) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name}={value!r} must be greater than 0")


@attrs.frozen
class TelemetryConfig:
    """Where and how to export. ``endpoint`` is the OTLP/HTTP base URL (``/v1/...`` appended)."""

    endpoint: str | None = attrs.field(default=None, validator=_check_endpoint)
    site_id: str | None = None
    host_name: str = attrs.field(factory=socket.gethostname)
    service_name: str = SERVICE_NAME
    service_version: str | None = None
    export_interval_s: float = attrs.field(default=15.0, validator=_positive)
    export_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    schedule_delay_s: float = attrs.field(default=2.0, validator=_positive)
    max_queue_size: int = attrs.field(default=2048, validator=_positive)
    max_export_batch_size: int = attrs.field(default=512, validator=_positive)
    shutdown_deadline_s: float = attrs.field(default=5.0, validator=_positive)

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> TelemetryConfig:
        """Read ``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``SITE_ID``; keyword overrides win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {"endpoint": env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
                                  "site_id": env.get("SITE_ID") or None}
        values.update(overrides)
        return cls(**values)


STANDARD_VARIABLES = (
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
)
"""The OpenTelemetry SDK's own variables the gateway honours (read by the SDK itself, from the
process environment). They win over the project's settings (``TelemetryConfig``)."""

_TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
                      "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")


def project_resource(defaults: Mapping[str, str]) -> Resource:
    """The OTel resource: the project's attributes (service.name, service.version, site.id,
    host.name), overridden by ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` as the SDK's
    own detector reads them (``Resource.create`` alone would let the defaults win)."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    return Resource.create(dict(defaults)).merge(OTELResourceDetector().detect())


def adopt_standard_variables(file_values: Mapping[str, str]) -> list[str]:
    """Put the `STANDARD_VARIABLES` found in the gateway's env file into the process environment
    (where the SDK reads them), unless the environment already sets them (it wins, as for every
    key). Returns the names adopted. Docker's ``env_file`` and systemd's ``EnvironmentFile`` put
    them there already; this covers a file the gateway reads itself (``--env-file``)."""
    adopted = []
    for name in STANDARD_VARIABLES:
        value = file_values.get(name)
        if value and not os.environ.get(name):
            os.environ[name] = value
            adopted.append(name)
    return adopted


@attrs.define
class DropCounter:
    """Thread-safe tally of lost telemetry by (signal, reason); mirrored to the OTel counter."""

    _counts: dict[tuple[str, str], int] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _counter: Counter | None = None

    def add(self, signal: str, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            key = (signal, reason)
            self._counts[key] = self._counts.get(key, 0) + n
        if self._counter is not None:
            try:
                self._counter.add(n, {"signal": signal, "reason": reason})
            except Exception:
                pass

    def total(self, signal: str | None = None, reason: str | None = None) -> int:
        with self._lock:
            return sum(v for (s, r), v in self._counts.items()
                       if (signal is None or s == signal) and (reason is None or r == reason))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f"{s}.{r}": v for (s, r), v in sorted(self._counts.items())}


class _ExportHealth:
    """Logs one line per transition between exporting and failing, per signal."""

    def __init__(self, signal: str, endpoint: str) -> None:
        self.signal = signal
        self.endpoint = endpoint
        self.failing = False
        self.dropped_while_failing = 0

    def ok(self) -> None:
        if self.failing:
            self.failing = False
            log.info("TELEMETRY_EXPORT_RECOVERED", signal=self.signal, endpoint=self.endpoint,
                     dropped=self.dropped_while_failing)
            self.dropped_while_failing = 0

    def failed(self, dropped: int) -> None:
        self.dropped_while_failing += dropped
        if not self.failing:
            self.failing = True
            log.warning("TELEMETRY_EXPORT_FAILING", signal=self.signal, endpoint=self.endpoint,
                        hint="collector unreachable, slow or rejecting; telemetry is dropped "
                             "and counted, the gateway is unaffected")


def _counting_span_exporter(inner: SpanExporter, drops: DropCounter,
                            health: _ExportHealth) -> SpanExporter:
    """The OTLP span exporter unchanged, except that spans lost in a failed export are counted.

    The SDK base class is imported here, where telemetry is built, not when the module is.
    """
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingSpanExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            try:
                result = inner.export(spans)
            except Exception:
                result = SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                health.ok()
            else:
                drops.add("spans", "export_failed", len(spans))
                health.failed(len(spans))
            return result

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return inner.force_flush(timeout_millis)

    return CountingSpanExporter()


def _count_points(metrics_data: MetricsData) -> int:
    try:
        return sum(len(metric.data.data_points)
                   for rm in metrics_data.resource_metrics
                   for sm in rm.scope_metrics
                   for metric in sm.metrics)
    except Exception:
        return 1


def _counting_metric_exporter(inner: MetricExporter, drops: DropCounter,
                              health: _ExportHealth) -> MetricExporter:
    """The OTLP metric exporter unchanged, except that data points lost in a failed export are
    counted. Its preferred temporality and aggregation are copied from the inner exporter, where
    the SDK keeps them in private attributes: read defensively (a dict or nothing), so an SDK
    that renames them costs the preference, not the export."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    temporality = getattr(inner, "_preferred_temporality", None)
    aggregation = getattr(inner, "_preferred_aggregation", None)

    class CountingMetricExporter(MetricExporter):
        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                   **kwargs: Any) -> MetricExportResult:
            try:
                result = inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            except Exception:
                result = MetricExportResult.FAILURE
            if result is MetricExportResult.SUCCESS:
                health.ok()
            else:
                points = _count_points(metrics_data)
                drops.add("metrics", "export_failed", points)
                health.failed(points)
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return inner.force_flush(timeout_millis=timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    return CountingMetricExporter(
        preferred_temporality=temporality if isinstance(temporality, dict) else None,
        preferred_aggregation=aggregation if isinstance(aggregation, dict) else None)


class _CountingDeque(collections.deque[_T], Generic[_T]):
    """The span queue: bounded like the SDK's, but it counts what its bound pushes out.

    ``appendleft`` on a full deque silently drops the oldest item; checking the length and
    appending under one lock (``pop`` takes it too) makes the count exact, not a racy estimate.
    """

    def __init__(self, maxlen: int, on_drop: Callable[[], None]) -> None:
        super().__init__([], maxlen)
        self._lock = threading.Lock()
        self._on_drop = on_drop

    def appendleft(self, item: _T) -> None:
        with self._lock:
            full = len(self) == self.maxlen
            super().appendleft(item)
        if full:
            self._on_drop()

    # deque.pop takes no index, unlike MutableSequence.pop (typeshed ignores it for deque too)
    def pop(self) -> _T:  # type: ignore[override]
        with self._lock:
            return super().pop()


@runtime_checkable
class _SdkBatchQueue(Protocol):
    """What the span-drop count relies on in the SDK's private batch processor
    (``BatchSpanProcessor._batch_processor``, a ``BatchProcessor`` of
    ``opentelemetry.sdk._shared_internal``): the bounded deque its worker thread empties with
    ``pop()``, and a shutdown that takes a timeout. Checked with `isinstance` at run time, so an
    SDK that renames them is noticed instead of failing."""

    _queue: collections.deque[ReadableSpan]

    # the SDK annotates timeout_millis as int but only divides it; a float deadline is what we pass
    def shutdown(self, timeout_millis: float = 30000) -> None: ...


def _counting_span_processor(exporter: SpanExporter, drops: DropCounter,
                             shutdown_timeout_ms: Callable[[], float],
                             **kwargs: Any) -> BatchSpanProcessor:
    """A BatchSpanProcessor whose bounded queue counts the spans it drops, and whose shutdown
    waits at most ``shutdown_timeout_ms()`` (read when it shuts down).

    The SDK drops the oldest span when its queue is full and only logs it. Right after
    construction (queue still empty) the SDK's deque is replaced by a `_CountingDeque` of the
    same bound. If a future SDK renames these internals (`_SdkBatchQueue`), queue drops go
    uncounted (a warning says so) and nothing else changes.
    """
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class CountingBatchSpanProcessor(BatchSpanProcessor):
        def __init__(self) -> None:
            super().__init__(exporter, **kwargs)
            inner = getattr(self, "_batch_processor", None)
            self._sdk_batch = inner if isinstance(inner, _SdkBatchQueue) else None
            queue = self._sdk_batch._queue if self._sdk_batch is not None else None
            if (self._sdk_batch is not None and isinstance(queue, collections.deque)
                    and queue.maxlen and not queue):
                self._sdk_batch._queue = _CountingDeque(
                    queue.maxlen, lambda: drops.add("spans", "queue_full"))
            else:
                log.warning("TELEMETRY_QUEUE_DROPS_UNCOUNTED",
                            hint="this OpenTelemetry SDK version hides its span queue; "
                                 "spans dropped by a full queue will not be counted")

        def shutdown(self) -> None:
            if self._sdk_batch is not None:
                self._sdk_batch.shutdown(timeout_millis=shutdown_timeout_ms())
            else:
                super().shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    return CountingBatchSpanProcessor()


def _otel_attributes(attributes: dict[str, Any]) -> dict[str, _Scalar]:
    return {k: v if isinstance(v, str | bool | int | float) else str(v)
            for k, v in attributes.items() if v is not None}


class _LastValueGauge:
    """A synchronous gauge for SDKs without one: an observable gauge reading the last values.

    Holds one value per attribute set, at most ``max_series`` of them (the SDK's default
    cardinality limit); a new attribute set beyond that is ignored.
    """

    def __init__(self, meter: Meter, name: str, unit: str, description: str,
                 max_series: int = 2000) -> None:
        self._values: dict[frozenset[tuple[str, _Scalar]],
                           tuple[float, dict[str, _Scalar]]] = {}
        self._lock = threading.Lock()
        self._max_series = max_series
        meter.create_observable_gauge(name, callbacks=[self._observe], unit=unit,
                                      description=description)

    def set(self, value: float, attributes: dict[str, _Scalar]) -> None:
        key = frozenset(attributes.items())
        with self._lock:
            if key in self._values or len(self._values) < self._max_series:
                self._values[key] = (value, attributes)

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        with self._lock:
            return [Observation(value, attributes) for value, attributes in self._values.values()]


_METHOD_KIND = {"count": Kind.COUNTER, "record": Kind.HISTOGRAM, "gauge": Kind.GAUGE}

_Report = Callable[[float, dict[str, _Scalar]], None]
"""How a value reaches an instrument: its ``add``, ``record`` or ``set`` (one per kind)."""


class OtelSink:
    """A `MetricSink` over an OTel meter; instruments are created lazily on first use.

    Never raises and never blocks: a bad call is counted in ``bessai.telemetry.dropped`` with
    reason ``sink_error`` (bad value) or ``kind_conflict`` (a name used with two instrument
    kinds; the catalogue's kind wins and a warning is logged once per name).
    """

    def __init__(self, meter: Meter, drops: DropCounter) -> None:
        self._meter = meter
        self._drops = drops
        self._instruments: dict[str, tuple[Kind, _Report]] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def _instrument(self, name: str, method: str) -> _Report | None:
        entry = self._instruments.get(name)
        if entry is None:
            with self._lock:
                entry = self._instruments.get(name)
                if entry is None:
                    entry = self._create(name, _METHOD_KIND[method])
                    self._instruments[name] = entry
        kind, instrument = entry
        if kind is not _METHOD_KIND[method]:
            self._drops.add("metrics", "kind_conflict")
            if name not in self._warned:
                self._warned.add(name)
                log.warning("TELEMETRY_METRIC_KIND_CONFLICT", metric=name, kind=kind.value,
                            used_as=_METHOD_KIND[method].value,
                            hint="report this metric with the sink method for its kind "
                                 "(see docs/telemetry.md)")
            return None
        return instrument

    def _create(self, name: str, asked: Kind) -> tuple[Kind, _Report]:
        spec = BY_NAME.get(name)
        kind = spec.kind if spec else asked
        unit = spec.unit if spec else ""
        description = spec.description if spec else ""
        if kind is Kind.COUNTER:
            return kind, self._meter.create_counter(name, unit=unit, description=description).add
        if kind is Kind.HISTOGRAM:
            buckets = list(spec.buckets) if spec and spec.buckets else None
            return kind, self._meter.create_histogram(
                name, unit=unit, description=description,
                explicit_bucket_boundaries_advisory=buckets).record
        if hasattr(self._meter, "create_gauge"):
            return kind, self._meter.create_gauge(name, unit=unit, description=description).set
        return kind, _LastValueGauge(self._meter, name, unit, description).set  # SDK < 1.23

    def count(self, name: str, value: int = 1, **attributes: Any) -> None:
        try:
            instrument = self._instrument(name, "count")
            if instrument is not None:
                instrument(value, _otel_attributes(attributes))
        except Exception:
            self._drops.add("metrics", "sink_error")

    def record(self, name: str, value: float, **attributes: Any) -> None:
        try:
            instrument = self._instrument(name, "record")
            if instrument is not None:
                instrument(value, _otel_attributes(attributes))
        except Exception:
            self._drops.add("metrics", "sink_error")

    def gauge(self, name: str, value: float, **attributes: Any) -> None:
        try:
            instrument = self._instrument(name, "gauge")
            if instrument is not None:
                instrument(value, _otel_attributes(attributes))
        except Exception:
            self._drops.add("metrics", "sink_error")


class Telemetry:
    """Owns the OTel providers for one gateway run: build, use ``sink``/``tracer``, shut down."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        self.drops = DropCounter()
        self.sink: MetricSink = NULL_SINK
        self.tracer: Tracer = NULL_TRACER
        self._meter_provider: MeterProvider | None = None
        self._tracer_provider: TracerProvider | None = None
        self._span_shutdown_timeout_ms = 30_000.0
        self._health: tuple[_ExportHealth, ...] = ()
        self._closed = False
        if config.enabled:
            self._build()

    @property
    def enabled(self) -> bool:
        return self._meter_provider is not None

    @property
    def export_failing(self) -> bool:
        """True while the collector is known to fail (an export of either signal failed last)."""
        return any(h.failing for h in self._health)

    def _build(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        config = self.config
        base = str(config.endpoint).rstrip("/")
        resource_attributes: dict[str, str] = {"service.name": config.service_name,
                                               "host.name": config.host_name}
        if config.site_id:
            resource_attributes["site.id"] = config.site_id
        if config.service_version:
            resource_attributes["service.version"] = config.service_version
        resource = project_resource(resource_attributes)
        # The standard variables win over the project's defaults: None lets the SDK read them.
        env = os.environ
        timeout_s = None if any(env.get(k) for k in _TIMEOUT_VARIABLES) else config.export_timeout_s
        interval_ms = (None if env.get("OTEL_METRIC_EXPORT_INTERVAL")
                       else config.export_interval_s * 1000)

        self._health = (_ExportHealth("metrics", base), _ExportHealth("spans", base))
        metric_exporter = _counting_metric_exporter(
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout_s),
            self.drops, self._health[0])
        reader = PeriodicExportingMetricReader(
            metric_exporter,
            export_interval_millis=interval_ms,
            export_timeout_millis=config.export_timeout_s * 1000,
        )
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self._meter_provider.get_meter("bessai")
        self.drops._counter = meter.create_counter(
            "bessai.telemetry.dropped", unit=BY_NAME["bessai.telemetry.dropped"].unit,
            description=BY_NAME["bessai.telemetry.dropped"].description)
        self.sink = OtelSink(meter, self.drops)

        span_exporter = _counting_span_exporter(
            OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=timeout_s),
            self.drops, self._health[1])
        span_processor = _counting_span_processor(
            span_exporter, self.drops, lambda: self._span_shutdown_timeout_ms,
            max_queue_size=config.max_queue_size,
            max_export_batch_size=min(config.max_export_batch_size, config.max_queue_size),
            schedule_delay_millis=config.schedule_delay_s * 1000,
            export_timeout_millis=config.export_timeout_s * 1000,
        )
        self._tracer_provider = TracerProvider(resource=resource)
        self._tracer_provider.add_span_processor(span_processor)
        self.tracer = OtelTracer(self._tracer_provider.get_tracer("bessai"))

    def _shutdown_blocking(self, deadline_s: float) -> None:
        """Flush spans, then metrics (so drops counted while flushing spans are exported).

        Each gets half the deadline; the caller enforces the whole deadline on Trio's clock.
        """
        half_ms = max(deadline_s * 500, 1.0)
        self._span_shutdown_timeout_ms = half_ms
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown(timeout_millis=half_ms)

    async def shutdown(self, deadline_s: float | None = None) -> bool:
        """Flush and stop the exporters within ``deadline_s``; True if it finished in time.

        Runs in a worker thread so the event loop never waits on the collector; past the
        deadline the (daemon) thread is abandoned and what it held is lost, never waited for.
        """
        if not self.enabled or self._closed:
            return True
        self._closed = True
        deadline = self.config.shutdown_deadline_s if deadline_s is None else deadline_s
        finished = False
        with trio.move_on_after(deadline):
            await trio.to_thread.run_sync(self._shutdown_blocking, deadline,
                                          abandon_on_cancel=True)
            finished = True
        if finished:
            log.info("TELEMETRY_FLUSHED", dropped=self.drops.total())
        else:
            log.warning("TELEMETRY_FLUSH_TIMEOUT", deadline_s=deadline,
                        dropped=self.drops.total(),
                        hint="the collector did not take the last batch in time; it is lost")
        self.sink = NULL_SINK
        self.tracer = NULL_TRACER
        return finished
