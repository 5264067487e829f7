"""The whole gateway's telemetry (issue 6), proved against a real OTLP/HTTP receiver.

The real `Gateway` runs with the in-process simulator (its ``stream_factories`` seam), the uplink
publishes to Google's Pub/Sub emulator through a fault-injecting transport wrapping the real one
(tests/pubsub_faults.py), and OpenTelemetry exports to the opentelemetry-proto receiver of
tests/integration/_otlp_receiver.py. Nothing is mocked: faults are injected at the seams.

* The scenario runs in virtual time (MockClock, autojump 0.05 s: real sockets and threads are
  involved); the SDK's exporters run on the real clock in their own threads, so the test waits
  for the receiver in real time.
* The collector-down test runs on the real clock: a blocked event loop would not show in virtual
  time, and the point is that a dead collector costs the poll loop and the heartbeat nothing.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from _otlp_receiver import OtlpReceiver, attrs_of
from trio.testing import MockClock

from bessai.clock import trio_wall_clock
from bessai.gateway import Gateway
from bessai.observe.catalog import BY_NAME, Kind
from bessai.settings import get_settings
from bessai.sim import Simulator
from tests.conftest_pubsub import PubsubTopic
from tests.pubsub_faults import FaultyTransport, frozen_virtual_time

SITE = "plant-7"
DEVICE = "inv1"

# Every metric issue 6 asks for, with one attribute set that the scenario must produce.
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "bessai.device.poll_latency_s": [{"device": DEVICE, "poll": "fast"},
                                     {"device": DEVICE, "poll": "all"}],
    "bessai.device.snapshot_age_s": [{"device": DEVICE}],
    "bessai.device.link_up": [{"device": DEVICE}],
    "bessai.watchdog.heartbeat_gap_s": [{"device": DEVICE}],
    "bessai.safety.blocks": [{"device": DEVICE, "rule": "soc_min"}],
    "bessai.commands": [{"device": DEVICE, "decision": "rejected"},
                        {"device": "-", "decision": "rejected"}],
    "bessai.spool.depth": [{}],
    "bessai.spool.bytes": [{}],
    "bessai.spool.oldest_age_s": [{}],
    "bessai.publish.results": [{"status": "200"}, {"status": "503"}],
    "bessai.spool.drops": [{"reason": "budget"}],
    # the connect path is the endpoint connection's (its owner runs under the gateway)
    "bessai.actor.restarts": [{"supervisor": "gateway", "child": "connection_127.0.0.1:502"}],
}

_DATA_FIELD = {Kind.COUNTER: "sum", Kind.HISTOGRAM: "histogram", Kind.GAUGE: "gauge"}


@pytest.fixture
def virtual_clock() -> MockClock:
    """Virtual time that jumps only after 50 ms of real idleness (real sockets and threads)."""
    return MockClock(autojump_threshold=0.05)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def gateway_settings(tmp_path: Path, endpoint: str, **env: str) -> Any:
    values = {"SITE_ID": SITE, "INVERTER_IP": "127.0.0.1", "DEVICE_ID": DEVICE,
              "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
              "SPOOL_PATH": str(tmp_path / "outbox.sqlite"), "LOG_LEVEL": "WARNING"}
    values.update(env)
    return get_settings(env=values, env_file=None)


def crash_first_connect(factory: Callable[[], Any]) -> Callable[[], Any]:
    """A stream factory whose first call raises an unexpected error (a bug, not a device fault:
    it escapes the connection's owner, so the gateway supervisor restarts it)."""
    calls = 0

    async def connect() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected bug in the device link's connect path")
        return await factory()

    return connect


def command(command_id: str, action: str, *, device: str = DEVICE, power_w: float = 2000.0,
            now: float) -> bytes:
    return json.dumps({"id": command_id, "site_id": SITE, "device_id": device,
                       "action": action, "power_w": power_w, "issued_at": now,
                       "expires_at": now + 120}).encode()


async def wait_real(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` in real time (the SDK's export threads run on it)."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        await trio.to_thread.run_sync(time.sleep, 0.05)
    return True


def missing(receiver: OtlpReceiver) -> list[str]:
    """Expected (metric, attributes) pairs not received yet, and missing span names."""
    out = []
    for name, wanted in EXPECTED.items():
        got = [a for a, _ in receiver.points(name)]
        out += [f"{name}{w}" for w in wanted if not any(w.items() <= a.items() for a in got)]
    spans = {s.name for _, s in receiver.spans()}
    out += [f"span {n}" for n in ("poll_cycle", "publish_batch") if n not in spans]
    return out


@pytest.mark.emulator
async def test_gateway_exports_every_issue6_metric_with_its_attributes_spans_and_resource(
        virtual_clock: MockClock, tmp_path: Path, receiver: OtlpReceiver,
        pubsub_topic: PubsubTopic) -> None:
    settings = gateway_settings(
        tmp_path, receiver.endpoint, PUBSUB_EMULATOR_HOST=pubsub_topic.emulator.host,
        GCP_PROJECT_ID=pubsub_topic.project, PUBSUB_TOPIC=pubsub_topic.topic)
    transport = FaultyTransport(httpx.AsyncHTTPTransport())
    wall = trio_wall_clock()
    async with trio.open_nursery() as nursery:
        sim = Simulator(str(settings.devices[0].profile), soc_pct=3.0)  # below SOC_MIN 5 %
        await nursery.start(sim.run)
        gw = Gateway(settings, wall_clock=wall, http_transport=transport, status_server=False,
                     stream_factories={DEVICE: crash_first_connect(sim.stream_factory())})
        # The gateway built its telemetry config from the settings (endpoint, site, host);
        # only the export cadence is shortened for the test.
        gw.telemetry.config = attrs.evolve(gw.telemetry.config, export_interval_s=0.2,
                                           schedule_delay_s=0.05)
        gw.spool.max_bytes = 6_000  # a tiny disk budget: the outage below overflows it
        now = trio.current_time()
        transport.storm(503, 2)
        transport.cut(now + 2.0, now + 30.0)  # the cloud is unreachable for 28 s
        await nursery.start(gw.run)

        site = gw.sites[DEVICE]
        with trio.fail_after(30):
            await site.ctx.link.wait_up()  # after the injected crash and the restart
        await trio.sleep(2)
        outcomes = [await gw.router.handle_command_message(command(cid, action, **kw, now=wall()))
                    for cid, action, kw in (("c-charge", "charge", {}),
                                            ("c-discharge", "discharge", {}),
                                            ("c-elsewhere", "charge", {"device": "inv9"}))]
        # The outage, the uplink's backoff (capped at 60 s) and its recovery, ten heartbeats.
        await trio.sleep(100)
        published = gw.cloud_status.value.count  # what the running uplink published
        with frozen_virtual_time():  # the gateway waits while the exporter catches up
            arrived = await wait_real(lambda: not missing(receiver), timeout_s=20)
        gw.request_stop()
        await gw.supervisor_done.wait()
        nursery.cancel_scope.cancel()

    assert arrived, f"never received: {missing(receiver)}"
    assert [o.decision.value for o in outcomes][1:] == ["rejected", "rejected"]
    assert outcomes[0].decision.value in ("accepted", "clamped")
    assert any(a.get("decision") == outcomes[0].decision.value and a["device"] == DEVICE
               for a, _ in receiver.points("bessai.commands"))

    # Each metric arrives as the catalogue's instrument kind, with its unit.
    by_name = {metric.name: metric for _, metric in receiver.metrics()}
    for name in EXPECTED:
        spec = BY_NAME[name]
        assert by_name[name].WhichOneof("data") == _DATA_FIELD[spec.kind], name
        assert by_name[name].unit == spec.unit, name

    link_up = [p.as_double or p.as_int for _, p in receiver.points("bessai.device.link_up")]
    assert 1 in link_up  # up while running (the last export, at stop, says 0: link stopped)
    gaps = [p for _, p in receiver.points("bessai.watchdog.heartbeat_gap_s")]
    assert max(p.count for p in gaps) >= 2
    assert max(p.max for p in gaps) < 15.0  # Huawei needs a heartbeat within 15 s

    # Every resource carries service.name, site.id and host.name.
    resources = [r for r, _ in receiver.metrics()] + [r for r, _ in receiver.spans()]
    assert resources
    for resource in resources:
        assert resource["service.name"] == "bessai-edge-gateway"
        assert resource["site.id"] == SITE
        assert resource["host.name"] == socket.gethostname()

    polls = [attrs_of(s.attributes) for _, s in receiver.spans() if s.name == "poll_cycle"]
    assert {p["poll"] for p in polls} >= {"fast", "all"}
    for p in polls:
        assert p["device"] == DEVICE
        assert p["requests"] >= 1
        assert p["outcome"] in ("ok", "partial")
        assert p["tags_ok"] + p["tags_failed"] > 0
    batches = [attrs_of(s.attributes) for _, s in receiver.spans() if s.name == "publish_batch"]
    statuses = {b["status"] for b in batches}
    assert {"200", "503", "ConnectError"} <= statuses
    assert all(b["messages"] >= 1 for b in batches)
    assert sum(b["messages"] for b in batches if b["status"] == "200") >= published > 0


POLL_S = 0.5  # a Huawei fast poll takes ~0.3 s (its requests are 50 ms apart: cooldown_s)
HEARTBEAT_S = 0.5
RUN_S = 4.0


async def run_timed(settings: Any, *, duration_s: float, telemetry: dict[str, float]
                    ) -> tuple[list[float], float, Gateway]:
    """Run the gateway on the real clock; return the fast polls' intervals and the largest
    heartbeat gap."""
    taken: list[float] = []
    async with trio.open_nursery() as nursery:
        sim = Simulator(str(settings.devices[0].profile), soc_pct=50.0)
        await nursery.start(sim.run)
        gw = Gateway(settings, stream_factories={DEVICE: sim.stream_factory()},
                     status_server=False)
        gw.telemetry.config = attrs.evolve(gw.telemetry.config, **telemetry)
        site = gw.sites[DEVICE]
        site.config = attrs.evolve(site.config, heartbeat=attrs.evolve(
            site.config.heartbeat, interval_s=HEARTBEAT_S))
        site.outputs = [*site.outputs, lambda snapshot: taken.append(snapshot.taken_at)]
        await nursery.start(gw.run)
        await site.ctx.link.wait_up()
        start = len(taken)
        await trio.sleep(duration_s)
        intervals = [b - a for a, b in zip(taken[start:], taken[start + 1:], strict=False)]
        max_gap = site.ctx.heartbeat.max_gap_s
        gw.request_stop()
        await gw.supervisor_done.wait()
        nursery.cancel_scope.cancel()
    return intervals, max_gap, gw


async def test_dead_collector_costs_the_poll_loop_and_heartbeat_nothing_and_drops_are_counted(
        tmp_path: Path, receiver: OtlpReceiver, black_hole: str) -> None:
    # Each export to the black hole hangs for export_timeout_s (1 s): if any of it ran on the
    # event loop, polls and heartbeats would be a second late, far beyond the tolerance below.
    fast = {"export_interval_s": 0.2, "schedule_delay_s": 0.05, "export_timeout_s": 1.0,
            "shutdown_deadline_s": 1.0}
    env = {"POLL_INTERVAL_S": str(POLL_S), "SHUTDOWN_DEADLINE_S": "1"}
    up, up_gap, _ = await run_timed(gateway_settings(tmp_path / "up", receiver.endpoint, **env),
                                    duration_s=RUN_S, telemetry=fast)
    down, down_gap, gw = await run_timed(
        gateway_settings(tmp_path / "down", f"http://{black_hole}", **env),
        duration_s=RUN_S, telemetry=fast)
    report = (f"poll interval collector up: median {statistics.median(up):.4f} max "
              f"{max(up):.4f}; black-holed: median {statistics.median(down):.4f} max "
              f"{max(down):.4f}; heartbeat max gap up {up_gap:.3f} down {down_gap:.3f}")
    print(report)
    assert receiver.metric_names(), "the baseline run exported nothing: the receiver is broken"
    assert len(down) >= 0.8 * RUN_S / POLL_S, report
    assert abs(statistics.median(down) - POLL_S) < 0.02, report
    assert abs(statistics.median(down) - statistics.median(up)) < 0.02, report
    # Tolerance for a shared 2-core machine's scheduling noise, well below one export timeout.
    assert max(down) < POLL_S + 0.4, report
    assert down_gap < HEARTBEAT_S + 0.4, report
    dropped = gw.telemetry.drops()
    assert dropped.get("metrics.export_failed", 0) > 0, dropped
    assert dropped.get("spans.export_failed", 0) + dropped.get("spans.queue_full", 0) > 0, dropped
