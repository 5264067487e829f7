"""Register codec: every type round-trips, gains and sentinels apply, nothing wraps around."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bessai.device import CodecError, Tag, decode, encode
from bessai.device.codec import raw_range

TYPES_INT = ["u16", "i16", "u32", "i32", "u64", "i64"]


def _tag(type_, gain=1, **kw):
    return Tag(name="t", address=100, type=type_, gain=gain, **kw)


def test_huawei_values_decode_with_gain_and_sign():
    assert decode(_tag("u16", 10), [653]).value == pytest.approx(65.3)
    assert decode(_tag("i16", 10), [0xFF9C]).value == pytest.approx(-10.0)
    assert decode(_tag("i32"), [0xFFFF, 0xFA24]).value == -1500
    assert decode(_tag("u16", 100), [5001]).value == pytest.approx(50.01)
    assert decode(_tag("u32"), [0x0001, 0x0000]).value == 65536


def test_invalid_sentinel_gives_an_invalid_reading_with_reason():
    tag = _tag("i32", invalid=(0x7FFFFFFF,))
    reading = decode(tag, [0x7FFF, 0xFFFF])
    assert (reading.value, reading.valid) == (None, False)
    assert reading.reason == "invalid_sentinel 0x7FFFFFFF"
    assert decode(tag, [0x7FFF, 0xFFFE]).valid


def test_nan_float_is_invalid_not_a_number():
    reading = decode(_tag("f32"), [0x7FC0, 0x0000])
    assert not reading.valid
    assert reading.reason.startswith("not_a_number")


def test_wrong_register_count_is_a_codec_error():
    with pytest.raises(CodecError, match="spans 2 register"):
        decode(_tag("u32"), [1])
    with pytest.raises(CodecError, match="16-bit"):
        decode(_tag("u16"), [70000])


def test_encode_refuses_values_outside_the_type_instead_of_wrapping():
    with pytest.raises(CodecError, match=r"outside 0\.\.65535"):
        encode(_tag("u16", 10), 6553.6)
    with pytest.raises(CodecError):
        encode(_tag("u32"), -1)
    with pytest.raises(CodecError, match="needs a number"):
        encode(_tag("u16"), "5")
    with pytest.raises(CodecError, match="needs a number"):
        encode(_tag("u16"), True)
    with pytest.raises(CodecError):
        encode(_tag("i16"), float("nan"))
    with pytest.raises(CodecError, match="holds 4 bytes"):
        encode(_tag("string", length=2), "HUAWEI")


def test_encode_rounds_to_resolution():
    assert encode(_tag("u16", 10), 45.3) == [453]
    assert encode(_tag("i16", 10), -0.1) == [0xFFFF]


@pytest.mark.parametrize("type_", TYPES_INT)
@given(data=st.data())
def test_integer_types_round_trip(type_, data):
    gain = data.draw(st.sampled_from([1, 10, 100, 1000]))
    tag = _tag(type_, gain)
    lo, hi = raw_range(tag)
    if gain != 1:  # a float holds 53 bits: scaled 64-bit values are exact only up to there
        lo, hi = max(lo, -(2**50)), min(hi, 2**50)
    raw = data.draw(st.integers(lo, hi))
    value = raw if gain == 1 else raw / gain
    regs = encode(tag, value)
    assert len(regs) == tag.count
    assert all(0 <= r <= 0xFFFF for r in regs)
    back = decode(tag, regs).value
    assert back == pytest.approx(value, abs=0.5 / gain)
    assert encode(tag, back) == regs


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_f32_round_trips(value):
    tag = _tag("f32")
    assert decode(tag, encode(tag, value)).value == value


@given(st.sampled_from([1, 2, 4]).flatmap(
    lambda n: st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)))
def test_bitfield_round_trips_every_bit_pattern(regs):
    tag = _tag("bitfield", length=len(regs))
    value = decode(tag, regs).value
    assert encode(tag, value) == regs


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20))
def test_string_round_trips(text):
    tag = _tag("string", length=10)
    assert decode(tag, encode(tag, text)).value == text


@pytest.mark.parametrize("type_", [*TYPES_INT, "f32"])
@given(data=st.data())
def test_any_registers_decode_without_raising(type_, data):
    tag = _tag(type_, 10)
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=tag.count, max_size=tag.count))
    reading = decode(tag, regs)
    assert reading.valid is (reading.value is not None)
    if reading.valid:
        assert math.isfinite(reading.value)
