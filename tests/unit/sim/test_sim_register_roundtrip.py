"""Property: every writable tag reads back what was written, at the tag's resolution."""

from __future__ import annotations

import attrs
from conftest import PROFILE_PATH
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bessai.device import codec
from bessai.device.profile import Table, load_profile
from bessai.sim.inverter import SimulatedInverter
from bessai.sim.model import BatteryModel, DailyCurves
from bessai.sim.registers import RegisterImage

PROFILE = load_profile(PROFILE_PATH)
# Tags with a life of their own (the heartbeat is write-only; the mode lapses with its lease).
SETTINGS = sorted(
    name
    for name, tag in PROFILE.tags.items()
    if tag.writable and tag.readable and name != PROFILE.dispatch.mode_tag
)


def _image() -> RegisterImage:
    inverter = SimulatedInverter(
        profile=PROFILE,
        model=BatteryModel(),
        curves=DailyCurves(),
        start_time=0.0,
    )
    return RegisterImage(profile=PROFILE, inverter=inverter, clock=lambda: 0.0)


@st.composite
def tag_and_value(draw: st.DrawFn) -> tuple[str, float]:
    name = draw(st.sampled_from(SETTINGS))
    tag = PROFILE.tag(name)
    lo, hi = round(tag.min * tag.gain), round(tag.max * tag.gain)
    raw = draw(st.integers(lo, hi))
    return name, raw / tag.gain if tag.gain != 1 else raw


@settings(max_examples=200, deadline=None)
@given(st.lists(tag_and_value(), min_size=1, max_size=8))
def test_every_rw_setting_reads_back_what_was_written(writes):
    image = _image()
    expected: dict[str, float] = {}
    for name, value in writes:
        tag = PROFILE.tag(name)
        assert image.write(tag.address, codec.encode(tag, value), "prop") is None
        expected[name] = value
    for name, value in expected.items():
        tag = PROFILE.tag(name)
        registers = image.read(Table.HOLDING, tag.address, tag.count)
        assert codec.decode_value(tag, registers) == value
    assert [(r.tag, r.value) for r in image.inverter.write_log] == writes


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SETTINGS), st.integers(1, 1000))
def test_values_above_max_are_refused_and_change_nothing(name, excess):
    image = _image()
    tag = PROFILE.tag(name)
    raw_max = round(tag.max * tag.gain)
    _, hi = codec.raw_range(tag)
    raw = min(raw_max + excess, hi)
    assume(raw > raw_max)  # the type can hold a larger value
    before = image.read(Table.HOLDING, tag.address, tag.count)
    words = codec.uint_to_registers(raw, tag.count)
    assert image.write(tag.address, words, "prop") == 0x03
    assert image.read(Table.HOLDING, tag.address, tag.count) == before
    assert attrs.asdict(image.inverter.model) == attrs.asdict(_image().inverter.model)
