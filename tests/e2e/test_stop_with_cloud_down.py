"""`systemctl stop` / `docker stop` with the cloud and the collector down, as the runbook
promises: the real gateway process stops in under a second, and nothing accepted is lost (what
did not leave stays in the spool for the next start)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.e2e.procs import free_port, run_cli, start_gateway, start_sim

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def black_hole() -> Iterator[str]:
    """host:port that accepts connections and never answers (a black-holed cloud)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_stop_takes_under_a_second_with_the_cloud_black_holed_and_the_collector_down(
        tmp_path, procs, black_hole):
    sim = start_sim(0)
    procs.append(sim)
    port = int(sim.wait_for(r"SIM_LISTENING").split("port=")[1].split()[0])
    spool = tmp_path / "spool.sqlite"
    env = {"SITE_ID": "stop-site", "INVERTER_IP": "127.0.0.1", "INVERTER_PORT": str(port),
           "SPOOL_PATH": str(spool), "STATUS_BIND": f"127.0.0.1:{free_port()}",
           "GCP_PROJECT_ID": "bessai-stop", "PUBSUB_TOPIC": "bessai-telemetry",
           "PUBSUB_EMULATOR_HOST": black_hole,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # refused
           "OTEL_METRIC_EXPORT_INTERVAL": "300"}
    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"event=GATEWAY_READY", 30)
    gateway.wait_for(r"event=TELEMETRY_EXPORT_FAILING", 20)
    time.sleep(2.0)  # readings pile up in the spool while the uplink's request hangs
    started = time.monotonic()
    gateway.send(signal.SIGTERM)
    rc = gateway.wait(30)
    took = time.monotonic() - started
    print(f"stop with the cloud black-holed and the collector down: {took:.2f} s")
    assert rc == 0, gateway.output()[-3000:]
    assert took < 1.0, f"took {took:.2f} s\n" + "\n".join(gateway.lines[-40:])
    assert gateway.matching(r"event=GATEWAY_STOPPED")
    stats = run_cli(["spool", "stats", "--json", "--path", str(spool)], {})
    assert stats.returncode == 0, stats.stderr
    assert '"depth": 0' not in stats.stdout  # kept for the next start, not lost
