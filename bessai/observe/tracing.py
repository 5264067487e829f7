"""Spans without OpenTelemetry in the actors: ``with tracer.span("poll", device="inv1"):``.

Actors take a `Tracer` (default `NULL_TRACER`) the same way they take a `MetricSink`, and never
import OpenTelemetry. `NULL_TRACER.span()` costs one attribute lookup and allocates nothing.

Invariants of `OtelTracer`:

* attributes are redacted (`bessai.observe.redact`) and coerced to OTel types (``None`` dropped,
  other objects turned into strings);
* an exception leaving the block marks the span ERROR with ``error.type`` = the class name, but
  its *message* and traceback are never recorded (they may hold credentials); a Trio
  cancellation is not an error, it sets ``cancelled=true``;
* the exception is never swallowed, and a failure inside the SDK never reaches the actor.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from bessai.observe.redact import redact_fields

if TYPE_CHECKING:  # the OTel API, for the checker; imported at run time only by Telemetry
    from opentelemetry import trace


class SpanHandle(Protocol):
    def set(self, **attributes: Any) -> None:
        """Add attributes once they are known (batch size, HTTP status)."""


class Tracer(Protocol):
    def span(self, name: str, **attributes: Any) -> AbstractContextManager[SpanHandle]:
        """A context manager timing the block as a span named ``name``."""


class _NullSpan:
    __slots__ = ()

    def set(self, **attributes: Any) -> None:
        pass

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_SPAN = _NullSpan()


class NullTracer:
    """Records nothing; the default for actors built without telemetry."""

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[SpanHandle]:
        return _NULL_SPAN


NULL_TRACER = NullTracer()


def otel_attributes(attributes: dict[str, Any]) -> dict[str, str | bool | int | float]:
    """Redacted attributes with OTel-compatible values."""
    clean: dict[str, str | bool | int | float] = {}
    for key, value in redact_fields(attributes).items():
        if value is None:
            continue
        clean[key] = value if isinstance(value, str | bool | int | float) else str(value)
    return clean


class _OtelSpanHandle:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, **attributes: Any) -> None:
        try:
            self._span.set_attributes(otel_attributes(attributes))
        except Exception:
            pass


class _OtelSpanContext:
    __slots__ = ("_cm", "_span")

    def __init__(self, tracer: trace.Tracer, name: str, attributes: dict[str, Any]) -> None:
        self._cm: AbstractContextManager[trace.Span] = tracer.start_as_current_span(
            name, attributes=otel_attributes(attributes),
            record_exception=False, set_status_on_exception=False,
        )
        self._span: trace.Span | None = None  # stays None if entering fails

    def __enter__(self) -> SpanHandle:
        try:
            self._span = self._cm.__enter__()
        except Exception:
            return _NULL_SPAN
        return _OtelSpanHandle(self._span)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        span = self._span
        if span is None:  # entering failed: there is no span to end
            return None
        try:
            if exc_type is not None:
                from opentelemetry.trace import Status, StatusCode

                if issubclass(exc_type, Exception):
                    span.set_attribute("error.type", exc_type.__qualname__)
                    span.set_status(Status(StatusCode.ERROR, exc_type.__qualname__))
                else:
                    span.set_attribute("cancelled", True)
            self._cm.__exit__(None, None, None)
        except Exception:
            pass
        return None


class OtelTracer:
    """Spans through an OpenTelemetry tracer owned by a `bessai.observe.otel.Telemetry`."""

    def __init__(self, otel_tracer: trace.Tracer) -> None:
        self._tracer = otel_tracer

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[SpanHandle]:
        try:
            return _OtelSpanContext(self._tracer, name, attributes)
        except Exception:
            return _NULL_SPAN
