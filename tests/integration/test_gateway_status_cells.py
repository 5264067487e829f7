"""``/status`` reads what the tree owns, never a dead actor instance (issue 17).

The real `Gateway` runs with the in-process simulator and publishes to Google's Pub/Sub emulator
through a transport WRAPPING the real one; the wrapper raises an unexpected error (a bug, not a
network fault: it escapes the uplink, which crashes) on one publish. While the data supervisor
waits out its restart backoff, the status document must say the cloud link's actor is
restarting and why — not repeat the dead uplink's last "up" — and once the new instance runs,
its own state. Virtual time (MockClock, autojump 0.05 s: real sockets are involved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio.testing import MockClock

from actors import EventKind, ExitReason, SupervisorEvent
from bessai.clock import trio_wall_clock
from bessai.gateway import Gateway
from bessai.settings import get_settings
from bessai.sim import Simulator
from tests.conftest_pubsub import PubsubTopic
from tests.pubsub_faults import frozen_virtual_time

SITE = "plant-9"
DEVICE = "inv1"


class PublishBug(RuntimeError):
    pass


@attrs.define
class BugOnPublish(httpx.AsyncBaseTransport):
    """Forwards to the emulator; raises `PublishBug` on the publish after `arm` was called."""

    inner: httpx.AsyncBaseTransport
    armed: bool = False

    def arm(self) -> None:
        self.armed = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.armed and request.url.path.endswith(":publish"):
            self.armed = False
            raise PublishBug("injected bug in the publish path")
        with frozen_virtual_time():  # a real request takes no virtual time
            return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def virtual_clock() -> MockClock:
    return MockClock(autojump_threshold=0.05)


async def wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    with trio.move_on_after(timeout_s):
        while not condition():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout_s} s (virtual): {what}")


@pytest.mark.emulator
async def test_status_says_restarting_not_the_dead_uplinks_state_during_its_backoff(
        virtual_clock: MockClock, tmp_path: Path, pubsub_topic: PubsubTopic) -> None:
    settings = get_settings(env={
        "SITE_ID": SITE, "INVERTER_IP": "127.0.0.1", "DEVICE_ID": DEVICE,
        "SPOOL_PATH": str(tmp_path / "outbox.sqlite"), "LOG_LEVEL": "WARNING",
        "PUBSUB_EMULATOR_HOST": pubsub_topic.emulator.host,
        "GCP_PROJECT_ID": pubsub_topic.project, "PUBSUB_TOPIC": pubsub_topic.topic},
        env_file=None)
    transport = BugOnPublish(httpx.AsyncHTTPTransport())
    at_crash: list[dict[str, Any]] = []
    gw: Gateway | None = None

    def on_event(event: SupervisorEvent) -> None:
        # Called by the data supervisor the moment the crashed uplink is reaped, before its
        # restart backoff: exactly what /status would answer then.
        if (event.kind is EventKind.EXITED and event.child_id == "uplink"
                and event.reason is ExitReason.FAILED):
            assert gw is not None
            at_crash.append(gw.status())

    async with trio.open_nursery() as nursery:
        sim = Simulator(str(settings.devices[0].profile), soc_pct=50.0)
        await nursery.start(sim.run)
        gw = Gateway(settings, wall_clock=trio_wall_clock(), http_transport=transport,
                     status_server=False, event_hook=on_event,
                     stream_factories={DEVICE: sim.stream_factory()})
        await nursery.start(gw.run)
        await wait_for(lambda: (gw.status()["links"].get("cloud") or {}).get("published"),
                       "the uplink published a first reading")
        assert gw.status()["links"]["cloud"]["state"] == "up"

        transport.arm()  # the next publish (readings arrive every second) hits the bug
        await wait_for(lambda: at_crash, "the uplink crashed")

        during = at_crash[0]
        cloud = during["links"]["cloud"]
        assert cloud["state"] == "restarting", cloud  # not the dead instance's "up"
        assert "PublishBug: injected bug in the publish path" in cloud["reason"]
        assert cloud["published"] is None  # no count from an instance that is gone
        assert during["actors"]["data/uplink"]["state"] != "running"

        # The new instance publishes its own state into the same cell.
        await wait_for(lambda: gw.status()["actors"]["data/uplink"]["restarts"] == 1
                       and gw.status()["links"]["cloud"]["state"] == "up",
                       "the restarted uplink is up")
        assert gw.status()["links"]["cloud"]["reason"] is None
        gw.request_stop()
        await gw.supervisor_done.wait()
        after_stop = gw.status()["links"]["cloud"]
        assert (after_stop["state"], after_stop["reason"]) == ("stopped", "stopped")
        nursery.cancel_scope.cancel()
