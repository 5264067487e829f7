"""Fixtures for the simulator's in-process tests (the client lives in sim_testclient.py)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from bessai.device.profile import Profile, load_profile

PROFILE_PATH = Path(__file__).resolve().parents[3] / "profiles" / "huawei_sun2000.json"


@pytest.fixture(scope="session")
def huawei_profile() -> Profile:
    return load_profile(PROFILE_PATH)


@pytest.fixture
def relaxed_profile(huawei_profile: Profile) -> Profile:
    """The Huawei profile with a device watchdog of two days (for tests not about it)."""
    return attrs.evolve(
        huawei_profile, watchdog=attrs.evolve(huawei_profile.watchdog, device_timeout_s=172_800.0)
    )
