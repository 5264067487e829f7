"""A SIGHUP that changes OTEL_EXPORTER_OTLP_ENDPOINT moves the export, without a restart: the
telemetry actor builds new exporters, switches the stable sink to them, flushes the old ones.
Two real OTLP receivers (opentelemetry-proto over http.server)."""

from __future__ import annotations

import trio
import trio.testing
from _otlp_receiver import OtlpReceiver

from bessai.observe import NULL_SINK
from bessai.observe.actor import TelemetryActor
from bessai.observe.otel import TelemetryConfig
from tests.waits import wait_real


def config(endpoint: str | None) -> TelemetryConfig:
    return TelemetryConfig(endpoint=endpoint, site_id="plant-1", host_name="edge-7",
                           export_interval_s=0.1, schedule_delay_s=0.05, export_timeout_s=1.0,
                           shutdown_deadline_s=3.0)


async def test_a_new_endpoint_takes_the_export_and_the_old_one_is_flushed() -> None:
    with OtlpReceiver() as old, OtlpReceiver() as new:
        actor = TelemetryActor(config(old.endpoint))
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            actor.sink.count("bessai.safety.blocks", rule="soc_min", device="inv1")
            await wait_real(lambda: "bessai.safety.blocks" in old.metric_names())
            before = actor.telemetry
            assert before is not None
            actor.reconfigure(attrs_evolve(actor.config, new.endpoint))
            await wait_real(lambda: actor.status()["endpoint"] == new.endpoint)
            await wait_real(lambda: actor.telemetry is not None
                             and actor.telemetry.config.endpoint == new.endpoint)
            actor.sink.count("bessai.spool.drops", reason="budget")
            await wait_real(lambda: "bessai.spool.drops" in new.metric_names())
            await wait_real(lambda: before.sink is NULL_SINK)  # the old flush has ended
            hits_at_switch, new_hits = sum(old.hits.values()), sum(new.hits.values())
            # three more export rounds (0.1 s each) reach the new endpoint; none the old one
            await wait_real(lambda: sum(new.hits.values()) >= new_hits + 3)
            assert sum(old.hits.values()) == hits_at_switch  # the old exporters are shut down
            nursery.cancel_scope.cancel()
        assert "bessai.spool.drops" not in old.metric_names()


def attrs_evolve(cfg: TelemetryConfig, endpoint: str) -> TelemetryConfig:
    import attrs

    return attrs.evolve(cfg, endpoint=endpoint)
