"""The chaos suite's CI share: each scenario of bench.chaos.scenarios as a test.

A scenario passes when every criterion holds (`Result.checks`); a failure prints the figures,
the failed criteria and the seed to re-run it with ``python -m bench.chaos --only NAME --seed N``.
"""

from __future__ import annotations

import pytest

from bench.chaos.scenarios import SCENARIOS, run_scenario, run_standalone
from tests.disk_faults import require_root

SEED = 20261127

pytestmark = [pytest.mark.emulator, pytest.mark.chaos]


def _param(s):
    marks = [] if s.ci else [pytest.mark.chaos_long]
    return pytest.param(s, id=s.name, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS if s.standalone is None])
async def test_scenario_meets_its_criteria(clock, tmp_path, pubsub_emulator, scenario):
    if scenario.tmpfs_size is not None:
        require_root()  # the spool's filesystem is a real tmpfs the script fills
    result = await run_scenario(scenario, pubsub_emulator.host, tmp_path, SEED)
    assert result.passed, result.summary()


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS if s.standalone is not None])
def test_real_process_scenario_meets_its_criteria(tmp_path, pubsub_emulator, scenario):
    result = run_standalone(scenario, pubsub_emulator.host, tmp_path, SEED)
    assert result.passed, result.summary()
