"""`systemctl stop` / `docker stop` with the cloud and the collector down, as the runbook
promises: the real gateway process does not wait on either (the stop takes under a second on a
quiet machine), and nothing accepted is lost (what did not leave stays in the spool for the next
start).

The stop is judged by what the gateway logs, not by this test's stopwatch: the uplink's drain
gives up because nothing leaves (not after its share of SHUTDOWN_DEADLINE_S), the collector known
to be down gets one short flush (`FAILING_FLUSH_S`, not the flush deadline), and the whole stop,
SHUTDOWN_REQUESTED to GATEWAY_STOPPED by the gateway's own timestamps, stays far below any of the
waits it avoids (the 10 s drain share, the 5 s flush, the 30 s publish timeout).
"""

from __future__ import annotations

import json

import httpx
import pytest

from bessai.observe.actor import FAILING_FLUSH_S
from tests.e2e.procs import (
    free_port,
    logfmt_ts,
    run_cli,
    sim_port,
    start_gateway,
    start_sim,
    stop_within_deadline,
    wait_until,
)

pytestmark = [pytest.mark.e2e]

DEADLINE_S = 20.0
"""SHUTDOWN_DEADLINE_S here: long, so that a stop which waited on the cloud would show."""

STOP_BOUND_S = 3.0
"""The stop by the gateway's own clock: about 1 s measured, well under every avoided wait."""


def test_stop_takes_under_a_second_with_the_cloud_black_holed_and_the_collector_down(
        tmp_path, procs, black_hole):
    sim = start_sim(0)
    procs.append(sim)
    port = sim_port(sim)
    spool = tmp_path / "spool.sqlite"
    status_bind = f"127.0.0.1:{free_port()}"
    env = {"SITE_ID": "stop-site", "INVERTER_IP": "127.0.0.1", "INVERTER_PORT": str(port),
           "SPOOL_PATH": str(spool), "STATUS_BIND": status_bind,
           "SHUTDOWN_DEADLINE_S": str(DEADLINE_S),
           "GCP_PROJECT_ID": "bessai-stop", "PUBSUB_TOPIC": "bessai-telemetry",
           "PUBSUB_EMULATOR_HOST": black_hole,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # refused
           "OTEL_METRIC_EXPORT_INTERVAL": "300"}
    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"event=GATEWAY_READY", 30)
    gateway.wait_for(r"event=TELEMETRY_EXPORT_FAILING", 20)

    def spooled() -> int:  # readings pile up in the spool while the uplink's request hangs
        status = httpx.get(f"http://{status_bind}/status", timeout=5, trust_env=False).json()
        depth = int(status["spool"]["depth"])
        return depth if depth >= 2 else 0

    before = wait_until(spooled, 20, "two readings in the spool")
    mark = gateway.mark()
    stop_within_deadline(gateway, DEADLINE_S)
    tail = "\n".join(gateway.lines[-40:])
    assert gateway.matching(r'event=uplink_drain_stopped reason="no progress"', after=mark), tail
    assert gateway.matching(rf"event=TELEMETRY_FLUSH_TIMEOUT deadline_s={FAILING_FLUSH_S} ",
                            after=mark), tail
    took = (logfmt_ts(gateway.matching(r"event=GATEWAY_STOPPED", after=mark)[0])
            - logfmt_ts(gateway.matching(r"event=SHUTDOWN_REQUESTED", after=mark)[0]))
    print(f"stop with the cloud black-holed and the collector down: {took:.2f} s (gateway log)")
    assert took < STOP_BOUND_S, f"{took:.2f} s\n{tail}"
    stats = run_cli(["spool", "stats", "--json", "--path", str(spool)], {})
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["depth"] >= before  # kept for the next start, not lost
