"""Dispatch and the simulated device take their roles from the device profile, nothing else.

A profile whose dispatch section says other tags and values is obeyed as written; a device with
no profile dispatch section (or none given) is read-only, never driven with Huawei's registers.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from bessai.control.device_link import Priority
from bessai.control.dispatch import Dispatcher, DispatchTags, ReadOnlyDevice
from bessai.device.profile import Profile, TagWrite, load_profile
from bessai.model import Action, Command
from bessai.sim.inverter import SimulatedInverter
from bessai.sim.model import BatteryModel, DailyCurves

HUAWEI = load_profile(Path(__file__).resolve().parents[2] / "profiles" / "huawei_sun2000.json")


@attrs.define
class RecordingWriter:
    """A `Writer` that keeps what it was asked to write (the device link's seam)."""

    writes: list[tuple[str, float | int, Priority]] = attrs.field(factory=list)

    async def write(self, tag: str, value: float | int, priority: Priority) -> None:
        self.writes.append((tag, value, priority))


def _swapped_modes(profile: Profile) -> Profile:
    """The profile with charge and discharge values swapped, a 3-minute lease and no presets."""
    assert profile.dispatch is not None
    spec = attrs.evolve(profile.dispatch, charge_value=2, discharge_value=1, preset=(),
                        lease=attrs.evolve(profile.dispatch.lease, period=3))
    return attrs.evolve(profile, dispatch=spec)


def _command(action: Action, power_w: float = 1500.0) -> Command:
    return Command("c1", "site", "inv1", action, power_w, 0.0, 1e12)


async def test_dispatch_writes_the_tags_and_values_its_profile_states() -> None:
    writer = RecordingWriter()
    profile = _swapped_modes(HUAWEI)
    dispatcher = Dispatcher(writer, DispatchTags.from_profile(profile))
    await dispatcher.apply(_command(Action.CHARGE), None)
    assert [(tag, value) for tag, value, _ in writer.writes] == [
        ("forcible_charge_power", 1500), ("forcible_period", 3), ("forcible_mode", 2)]
    assert DispatchTags.from_profile(profile).forcing(2) is Action.CHARGE
    assert DispatchTags.from_profile(profile).renew_interval_s == 20.0


async def test_dispatch_without_a_profile_refuses_commands_and_writes_nothing() -> None:
    writer = RecordingWriter()
    dispatcher = Dispatcher(writer, DispatchTags())
    with pytest.raises(ReadOnlyDevice):
        await dispatcher.apply(_command(Action.CHARGE), None)
    assert await dispatcher.safety_stop() is None
    assert writer.writes == []
    assert DispatchTags().forcing(1) is None


async def test_dispatch_tags_of_a_profile_without_dispatch_are_read_only() -> None:
    tags = DispatchTags.from_profile(attrs.evolve(HUAWEI, dispatch=None))
    assert tags.read_only
    assert tags.mode_tag == ""
    assert tags.forcing(1) is None


def _inverter(profile: Profile) -> SimulatedInverter:
    return SimulatedInverter(profile=profile, model=BatteryModel(), curves=DailyCurves(),
                             start_time=0.0, start_of_day_s=0.0)


def test_the_simulated_device_forces_by_its_profiles_mode_values() -> None:
    inverter = _inverter(_swapped_modes(HUAWEI))
    inverter.write("forcible_charge_power", 2000, 0.0)
    inverter.write("forcible_period", 3, 0.0)
    inverter.write("forcible_mode", 2, 0.0)  # charge, in this profile
    assert inverter.target_power_w(0.0, 0.0) == 2000.0
    assert inverter.lease_deadline == 180.0  # 3 minutes, the profile's unit
    inverter.sync(181.0)
    assert inverter.forced_mode == 0  # the lease ran out: the profile's stop value


def test_a_device_without_a_dispatch_section_holds_no_forcing_registers() -> None:
    inverter = _inverter(attrs.evolve(HUAWEI, dispatch=None))
    assert not any(name.startswith("forcible") for name in inverter.settings)
    assert inverter.forced_mode == 0
    assert inverter.lease_deadline is None


def test_a_device_starts_with_every_dispatch_tag_of_its_profile_at_rest() -> None:
    assert HUAWEI.dispatch is not None
    spec = attrs.evolve(HUAWEI.dispatch, stop_value=1, charge_value=0,
                        preset=(TagWrite("working_mode", 0),))
    inverter = _inverter(attrs.evolve(HUAWEI, dispatch=spec))
    assert inverter.settings["forcible_mode"] == 1  # stop, as this profile says
    assert inverter.settings["working_mode"] == 2  # the shipped setting, not the preset value
    assert inverter.forced_mode == 1
    assert not inverter.forcing
