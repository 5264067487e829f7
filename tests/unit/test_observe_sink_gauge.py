"""OtelSink's gauges work on SDKs with a synchronous Gauge and, through an observable gauge
holding the last values, on older ones without it."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from bessai.observe.otel import DropCounter, OtelSink


class _MeterWithoutSyncGauge:
    """A real SDK meter that hides ``create_gauge``, as OpenTelemetry SDK < 1.23 did."""

    def __init__(self, meter: Any) -> None:
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        if name == "create_gauge":
            raise AttributeError(name)
        return getattr(self._meter, name)


def _gauge_points(reader: InMemoryMetricReader, name: str) -> dict[tuple, float]:
    data = reader.get_metrics_data()
    return {tuple(sorted(p.attributes.items())): p.value
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == name for p in m.data.data_points}


@pytest.mark.parametrize("hide_sync_gauge", [False, True])
def test_gauge_reports_the_last_value_per_attribute_set(hide_sync_gauge: bool) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("test")
    sink = OtelSink(_MeterWithoutSyncGauge(meter) if hide_sync_gauge else meter, DropCounter())
    sink.gauge("bessai.device.link_up", 1, device="inv1")
    sink.gauge("bessai.device.link_up", 0, device="inv1")
    sink.gauge("bessai.device.link_up", 1, device="inv2")
    assert _gauge_points(reader, "bessai.device.link_up") == {
        (("device", "inv1"),): 0, (("device", "inv2"),): 1}
    provider.shutdown()
