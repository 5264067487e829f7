"""The safety rules and their hysteresis, as the runbook promises them (pure logic, no I/O)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bessai.control.limits import (
    INVALID_DATA,
    NO_DATA,
    SOC_MAX,
    SOC_MIN,
    STALE_DATA,
    TEMP_MAX,
    UNKNOWN,
    Limits,
    SafetyState,
    evaluate,
    limits_from,
    transitions,
)
from bessai.model import Snapshot, TagReading

# 5.0 / 98.0 / 45.0 as in the runbook; hysteresis 1.0 % and 2.0 °C; stale after 3 s
LIMITS = Limits(soc_hysteresis_pct=1.0, temp_hysteresis_c=2.0)


def snap(soc=50.0, temp=25.0, taken_at=0.0, **extra):
    readings = {}
    for tag, value in {"soc": soc, "battery_temp": temp, **extra}.items():
        if value is Ellipsis:
            continue  # leave the tag out of the snapshot
        readings[tag] = value if isinstance(value, TagReading) else TagReading(value)
    return Snapshot("site1", "inv1", ts=1_767_225_600.0 + taken_at, taken_at=taken_at,
                    readings=readings)


def run(values, tag="soc", limits=LIMITS):
    """Feed a sequence of readings; return every state in order."""
    state, states = UNKNOWN, []
    for i, v in enumerate(values):
        state = evaluate(snap(taken_at=float(i), **{tag: v}), float(i), state, limits)
        states.append(state)
    return states


def test_defaults_are_the_runbook_limits_and_the_settings_hysteresis():
    assert Limits() == Limits(soc_min_pct=5.0, soc_max_pct=98.0, temp_max_c=45.0,
                              soc_hysteresis_pct=2.0, temp_hysteresis_c=3.0)


def test_normal_readings_block_nothing():
    state = evaluate(snap(), 0.0, UNKNOWN, LIMITS)
    assert state.ok
    assert not state.blocked_charge
    assert not state.blocked_discharge


def test_nothing_read_yet_blocks_both_directions():
    assert evaluate(None, 10.0, SafetyState(), LIMITS) == UNKNOWN
    assert UNKNOWN.blocked_charge
    assert UNKNOWN.blocked_discharge
    assert UNKNOWN.rules() == (NO_DATA,)


def test_soc_below_min_blocks_discharge_only():
    state = evaluate(snap(soc=4.2), 0.0, SafetyState(), LIMITS)
    assert state.blocked_discharge
    assert not state.blocked_charge
    hit = state.active[SOC_MIN]
    assert (hit.value, hit.limit, hit.tag) == (4.2, 5.0, "soc")


def test_soc_exactly_at_min_does_not_block():
    assert evaluate(snap(soc=5.0), 0.0, SafetyState(), LIMITS).ok


def test_soc_above_max_blocks_charge_only():
    state = evaluate(snap(soc=98.5), 0.0, SafetyState(), LIMITS)
    assert state.blocked_charge
    assert not state.blocked_discharge
    assert state.active[SOC_MAX].limit == 98.0


def test_over_temperature_blocks_both_directions():
    state = evaluate(snap(temp=45.1), 0.0, SafetyState(), LIMITS)
    assert state.blocked_charge
    assert state.blocked_discharge
    assert state.rules() == (TEMP_MAX,)


def test_hottest_of_several_temperature_sensors_trips_the_rule():
    limits = Limits(temp_tags=("battery_temp", "battery_temp_2"))
    state = evaluate(snap(temp=30.0, battery_temp_2=46.0), 0.0, SafetyState(), limits)
    assert state.active[TEMP_MAX].tag == "battery_temp_2"
    assert state.active[TEMP_MAX].value == 46.0


def test_soc_min_clears_only_at_min_plus_hysteresis():
    states = run([4.9, 5.5, 5.9, 6.0])
    assert [SOC_MIN in s.active for s in states] == [True, True, True, False]


def test_soc_max_clears_only_at_max_minus_hysteresis():
    states = run([98.1, 97.5, 97.1, 97.0])
    assert [SOC_MAX in s.active for s in states] == [True, True, True, False]


def test_over_temperature_clears_only_two_degrees_below_the_limit():
    states = run([45.5, 44.0, 43.1, 43.0], tag="battery_temp")
    assert [TEMP_MAX in s.active for s in states] == [True, True, True, False]


def test_stale_snapshot_blocks_both_directions():
    fresh = evaluate(snap(taken_at=100.0), 103.0, SafetyState(), LIMITS)
    stale = evaluate(snap(taken_at=100.0), 103.5, SafetyState(), LIMITS)
    assert fresh.ok
    assert stale.blocked_charge
    assert stale.blocked_discharge
    assert stale.active[STALE_DATA].value == pytest.approx(3.5)


@pytest.mark.parametrize(
    ("soc", "temp", "bad_tag"),
    [
        (TagReading(None, valid=False, reason="invalid_sentinel"), 25.0, "soc"),
        (Ellipsis, 25.0, "soc"),
        (50.0, TagReading(None, valid=False, reason="read failed"), "battery_temp"),
        (50.0, Ellipsis, "battery_temp"),
        (6553.5, 25.0, "soc"),   # 0xFFFF / 10 that slipped past the sentinel check
        (float("nan"), 25.0, "soc"),
        ("full", 25.0, "soc"),
        (50.0, 3276.7, "battery_temp"),
    ],
)
def test_missing_invalid_or_implausible_data_blocks_both_directions(soc, temp, bad_tag):
    state = evaluate(snap(soc=soc, temp=temp), 0.0, SafetyState(), LIMITS)
    assert state.blocked_charge
    assert state.blocked_discharge
    assert state.active[INVALID_DATA].tag == bad_tag


def test_soc_min_holds_through_a_data_gap_and_needs_hysteresis_to_clear():
    states = run([4.5, TagReading(None, valid=False), 5.5, 6.1])
    assert [SOC_MIN in s.active for s in states] == [True, True, True, False]
    assert INVALID_DATA in states[1].active


def test_temperature_rule_holds_while_a_second_sensor_is_unreadable():
    limits = Limits(temp_tags=("battery_temp", "battery_temp_2"))
    hot = evaluate(snap(temp=30.0, battery_temp_2=47.0), 0.0, SafetyState(), limits)
    gap = evaluate(snap(temp=30.0, battery_temp_2=TagReading(None, valid=False)), 1.0, hot, limits)
    assert TEMP_MAX in gap.active
    assert INVALID_DATA in gap.active


def test_transitions_name_new_blocks_and_clears():
    before = evaluate(snap(soc=4.0), 0.0, SafetyState(), LIMITS)
    after = evaluate(snap(soc=7.0, temp=46.0), 1.0, before, LIMITS)
    change = transitions(before, after)
    assert [h.rule for h in change.blocked] == [TEMP_MAX]
    assert [h.rule for h in change.cleared] == [SOC_MIN]


def test_reasons_name_only_the_rules_blocking_that_direction():
    state = evaluate(snap(soc=4.2, temp=46.0), 0.0, SafetyState(), LIMITS)
    assert state.reasons(charge=True) == "temp_max (battery_temp=46.0 > 45.0)"
    assert "soc_min (soc=4.2 < 5.0)" in state.reasons(charge=False)


def test_limits_are_overridable_per_site_and_typos_are_refused():
    limits = limits_from({"soc_min_pct": 10.0, "soc_hysteresis_pct": 2.5},
                         temp_tags=["battery_temp", "battery_temp_2"], poll_interval_s=2.0)
    assert limits.soc_min_pct == 10.0
    assert limits.stale_after_s == 6.0
    assert limits.temp_tags == ("battery_temp", "battery_temp_2")
    states = run([9.0, 12.0, 12.5], limits=limits)
    assert [SOC_MIN in s.active for s in states] == [True, True, False]
    with pytest.raises(ValueError, match="soc_min_pc"):
        limits_from({"soc_min_pc": 10.0})


def test_overlapping_limits_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="overlap"):
        Limits(soc_min_pct=50.0, soc_max_pct=51.0, soc_hysteresis_pct=1.0)


# --- hysteresis properties -----------------------------------------------------------------

def count_transitions(states, rule):
    blocks = clears = 0
    prev = False
    for s in states:
        now = rule in s.active
        blocks += now and not prev
        clears += prev and not now
        prev = now
    return blocks, clears


band = st.floats(min_value=LIMITS.soc_min_pct - LIMITS.soc_hysteresis_pct,
                 max_value=LIMITS.soc_min_pct + LIMITS.soc_hysteresis_pct,
                 exclude_max=True, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=40.0, max_value=90.0), st.lists(band, min_size=1, max_size=60))
def test_soc_oscillating_inside_the_hysteresis_band_never_chatters(start, values):
    blocks, clears = count_transitions(run([start, *values]), SOC_MIN)
    assert blocks <= 1
    assert clears == 0


temp_band = st.floats(min_value=LIMITS.temp_max_c - LIMITS.temp_hysteresis_c,
                      max_value=LIMITS.temp_max_c + 1.0, exclude_min=True, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(temp_band, min_size=1, max_size=60))
def test_temperature_oscillating_inside_the_band_never_chatters(values):
    blocks, clears = count_transitions(run([25.0, *values], tag="battery_temp"), TEMP_MAX)
    assert blocks <= 1
    assert clears == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1,
                max_size=80))
def test_every_soc_transition_is_justified_by_its_threshold(values):
    """A block needs a reading past the limit; a clear needs one past limit + hysteresis."""
    states = run(values)
    prev = UNKNOWN
    for value, state in zip(values, states, strict=True):
        change = transitions(prev, state)
        for hit in change.blocked:
            if hit.rule == SOC_MIN:
                assert value < LIMITS.soc_min_pct
            if hit.rule == SOC_MAX:
                assert value > LIMITS.soc_max_pct
        for hit in change.cleared:
            if hit.rule == SOC_MIN:
                assert value >= LIMITS.soc_min_pct + LIMITS.soc_hysteresis_pct
            if hit.rule == SOC_MAX:
                assert value <= LIMITS.soc_max_pct - LIMITS.soc_hysteresis_pct
        # and a reading past a limit is always blocked, whatever came before
        assert (SOC_MIN in state.active) or value >= LIMITS.soc_min_pct
        assert (SOC_MAX in state.active) or value <= LIMITS.soc_max_pct
        prev = state


def test_stale_data_clears_only_after_the_data_stayed_fresh_for_the_hold():
    stale = evaluate(snap(taken_at=0.0), 10.0, SafetyState(), LIMITS)
    assert STALE_DATA in stale.active
    back = evaluate(snap(taken_at=10.0), 10.1, stale, LIMITS)
    assert STALE_DATA in back.active  # fresh, but not for long enough yet
    later = evaluate(snap(taken_at=12.0), 12.5, back, LIMITS)
    assert STALE_DATA in later.active
    done = evaluate(snap(taken_at=13.0), 13.2, later, LIMITS)  # fresh 3.1 s > the 3 s hold
    assert done.ok


def test_a_device_slower_than_the_staleness_limit_stays_blocked_without_chattering():
    state, changes = SafetyState(), 0
    for poll in range(20):  # a snapshot every 5 s, evaluated every second: stale 3 s in 5
        taken = poll * 5.0
        for tick in range(5):
            new = evaluate(snap(taken_at=taken), taken + tick, state, LIMITS)
            changes += (STALE_DATA in new.active) != (STALE_DATA in state.active)
            state = new
    assert changes == 1  # blocked once, never cleared while the device stays this slow


def test_invalid_data_clears_with_the_same_hold():
    bad = evaluate(snap(soc=TagReading(None, valid=False)), 0.0, SafetyState(), LIMITS)
    good = evaluate(snap(taken_at=1.0), 1.0, bad, LIMITS)
    assert INVALID_DATA in good.active
    assert INVALID_DATA in evaluate(snap(taken_at=4.0), 4.0, good, LIMITS).active  # 3 s
    assert evaluate(snap(taken_at=4.1), 4.1, good, LIMITS).ok  # more than the 3 s hold
    no_hold = Limits(data_clear_hold_s=0.0)
    assert evaluate(snap(taken_at=1.0), 1.0, bad, no_hold).ok
