"""The top supervisor's restart policy: a crash loop escalates, an occasional crash does not."""

import random

import pytest
import trio

from actors import ChildSpec, Supervisor, SupervisorEscalation
from bessai.gateway import GATEWAY_BACKOFF, GATEWAY_INTENSITY, GATEWAY_PERIOD_S


class AlwaysCrashes:
    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        raise RuntimeError("bug")


def _gateway_like(child_factory) -> Supervisor:
    return Supervisor(children=[ChildSpec("buggy", child_factory)], intensity=GATEWAY_INTENSITY,
                      period_s=GATEWAY_PERIOD_S, backoff=GATEWAY_BACKOFF, name="gateway",
                      rng=random.Random(1))


async def test_a_crash_looping_child_escalates_within_a_minute(autojump_clock):
    started = trio.current_time()
    with pytest.raises(SupervisorEscalation) as caught:
        await _gateway_like(AlwaysCrashes).run()
    assert caught.value.child_id == "buggy"
    assert trio.current_time() - started < 60


async def test_a_crash_every_ten_minutes_never_escalates(autojump_clock):
    class CrashesEveryTenMinutes:
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            await trio.sleep(600)
            raise RuntimeError("rare bug")

    sup = _gateway_like(CrashesEveryTenMinutes)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(6 * 3600)
        assert sup.running
        assert sup.child_info("buggy").restarts >= 30
        sup.request_stop()
