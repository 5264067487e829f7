"""The standard OpenTelemetry variables reach the SDK, as an operator sets them: the real gateway
process (with the simulator process) exporting to the project's real OTLP/HTTP receiver.

The project's settings give the defaults (service.name, service.version, site.id, a 15 s
export interval); OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_METRIC_EXPORT_INTERVAL and
OTEL_EXPORTER_OTLP_HEADERS win, whether set in the environment or in the env file."""

from __future__ import annotations

import time

import pytest

import bessai
from tests.e2e.procs import free_port, sim_port, start_gateway, start_sim
from tests.integration._otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.e2e]


def test_collector_sees_the_version_and_the_standard_variables(tmp_path, procs):
    sim = start_sim(0)
    procs.append(sim)
    port = sim_port(sim)
    env_file = tmp_path / "gateway.env"
    env_file.write_text("OTEL_EXPORTER_OTLP_HEADERS=x-collector-tenant=bess-7\n")
    with OtlpReceiver() as receiver:
        env = {"SITE_ID": "otel-site", "INVERTER_IP": "127.0.0.1", "INVERTER_PORT": str(port),
               "SPOOL_PATH": str(tmp_path / "spool.sqlite"),
               "STATUS_BIND": f"127.0.0.1:{free_port()}", "SHUTDOWN_DEADLINE_S": "5",
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_SERVICE_NAME": "bessai-cl-7",
               "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,site.region=cl",
               "OTEL_METRIC_EXPORT_INTERVAL": "300"}
        gateway = start_gateway(env, "--env-file", str(env_file))
        procs.append(gateway)
        gateway.wait_for(r"event=GATEWAY_READY", 20)
        deadline = time.monotonic() + 10  # the project's default interval is 15 s
        while len(receiver.metric_requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(receiver.metric_requests) >= 2, "OTEL_METRIC_EXPORT_INTERVAL was ignored"
        resource, _ = receiver.metrics()[0]
        headers = list(receiver.headers)
    assert resource["service.version"] == bessai.__version__
    assert resource["service.name"] == "bessai-cl-7"
    assert resource["deployment.environment"] == "staging"
    assert resource["site.region"] == "cl"
    assert resource["site.id"] == "otel-site"
    assert all(h.get("x-collector-tenant") == "bess-7" for h in headers), headers[:1]
