"""A real OTLP/HTTP protobuf receiver for tests, on opentelemetry-proto, in a thread.

It decodes what the SDK's exporters send to ``/v1/metrics`` and ``/v1/traces`` and keeps the
whole requests (resource attributes included). ``status`` turns it into a fault receiver
(e.g. 503 with Retry-After) without changing the code under test; every request is counted.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def attrs_of(key_values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in key_values:
        value = kv.value
        which = value.WhichOneof("value")
        out[kv.key] = getattr(value, which) if which else None
    return out


class OtlpReceiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.trace_requests: list[ExportTraceServiceRequest] = []
        self.hits: dict[str, int] = {}
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.retry_after: str | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.hits[self.path] = receiver.hits.get(self.path, 0) + 1
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    status = receiver.status
                if status != 200:
                    self.send_response(status)
                    if receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest.FromString(body)
                    with receiver.lock:
                        receiver.metric_requests.append(request)
                    reply = ExportMetricsServiceResponse().SerializeToString()
                elif self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    with receiver.lock:
                        receiver.trace_requests.append(request)
                    reply = ExportTraceServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # --- what arrived -------------------------------------------------------------------

    def metrics(self) -> list[tuple[dict[str, Any], Any]]:
        """Every metric received, with its resource attributes."""
        with self.lock:
            requests = list(self.metric_requests)
        return [(attrs_of(rm.resource.attributes), metric)
                for request in requests for rm in request.resource_metrics
                for sm in rm.scope_metrics for metric in sm.metrics]

    def metric_names(self) -> set[str]:
        return {metric.name for _, metric in self.metrics()}

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every point received for metric ``name``."""
        out = []
        for _, metric in self.metrics():
            if metric.name != name:
                continue
            data = getattr(metric, metric.WhichOneof("data"))
            out.extend((attrs_of(p.attributes), p) for p in data.data_points)
        return out

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        with self.lock:
            requests = list(self.trace_requests)
        return [(attrs_of(rs.resource.attributes), span)
                for request in requests for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]
