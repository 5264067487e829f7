"""``bessai.actor.restarts{supervisor, child}`` from real `actors` supervisors, nested ones
included, through `TelemetryActor.on_event` (the hook the gateway installs on every supervisor)."""

from __future__ import annotations

from typing import Any

import trio

from actors import Backoff, ChildSpec, Strategy, Supervisor, supervisor_spec
from bessai.observe import RecordingSink, TelemetryActor, TelemetryConfig


def telemetry() -> tuple[TelemetryActor, RecordingSink]:
    actor = TelemetryActor(TelemetryConfig(endpoint=None))
    sink = RecordingSink()
    actor.sink.target = sink
    return actor, sink


class Flaky:
    """Reports ready, then crashes while ``crashes_left`` > 0 (shared across instances)."""

    def __init__(self, state: dict[str, int], *, before_ready: bool = False) -> None:
        self.state, self.before_ready = state, before_ready

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        crash = self.state["crashes_left"] > 0
        self.state["crashes_left"] -= 1
        if crash and self.before_ready:
            raise RuntimeError("crashed while starting")
        task_status.started()
        if crash:
            await trio.sleep(1)
            raise RuntimeError("crashed while running")
        await trio.sleep_forever()


class Idle:
    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


FAST = Backoff(initial_s=0.1, max_s=0.1, jitter=0.0)


async def test_restarts_in_a_nested_site_supervisor_count_under_its_own_name(
        autojump_clock: trio.testing.MockClock) -> None:
    actor, sink = telemetry()
    crashes = {"crashes_left": 2}
    site = supervisor_spec("site_inv1", [ChildSpec("device_link", lambda: Flaky(crashes)),
                                         ChildSpec("watchdog", Idle)],
                           name="site:inv1", strategy=Strategy.REST_FOR_ONE, intensity=5,
                           backoff=FAST, on_event=actor.on_event)
    root = Supervisor(children=[ChildSpec("uplink", Idle), site], name="gateway",
                      on_event=actor.on_event, backoff=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(10)
        root.request_stop()
    # rest_for_one: each crash of the link restarts the link and the watchdog after it
    assert sink.total("bessai.actor.restarts", supervisor="site:inv1", child="device_link") == 2
    assert sink.total("bessai.actor.restarts", supervisor="site:inv1", child="watchdog") == 2
    assert sink.total("bessai.actor.restarts", supervisor="gateway") == 0
    assert actor.restarts == {"site:inv1/device_link": 2, "site:inv1/watchdog": 2}


async def test_a_restart_that_crashes_before_ready_is_still_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    actor, sink = telemetry()
    crashes = {"crashes_left": 3}
    root = Supervisor(children=[ChildSpec("recorder", lambda: Flaky(crashes, before_ready=True))],
                      name="gateway", on_event=actor.on_event, backoff=FAST, intensity=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(10)
        info = root.which_children()[0]
        root.request_stop()
    assert info.restarts == 3
    assert sink.total("bessai.actor.restarts", supervisor="gateway", child="recorder") == 3


async def test_a_restarted_site_supervisor_keeps_counting_its_children_from_zero(
        autojump_clock: trio.testing.MockClock) -> None:
    """A new nested supervisor instance starts its children's counts at 0 again; the hook must
    count its restarts, not wait for the old instance's numbers to be exceeded."""
    actor, sink = telemetry()
    crashes = {"crashes_left": 1}

    def site() -> Supervisor:
        return Supervisor(children=[ChildSpec("device_link", lambda: Flaky(crashes))],
                          name="site:inv1", intensity=5, backoff=FAST, on_event=actor.on_event)

    async with trio.open_nursery() as nursery:
        first = site()
        await nursery.start(first.run)
        await trio.sleep(5)
        first.request_stop()
    crashes["crashes_left"] = 1
    async with trio.open_nursery() as nursery:
        second = site()
        await nursery.start(second.run)
        await trio.sleep(5)
        second.request_stop()
    assert sink.total("bessai.actor.restarts", supervisor="site:inv1", child="device_link") == 2
