"""The slot controllers' decisions (pure): protect the limit at once, give headroom back ramped,
ignore changes within the deadband, never discharge to hold an export limit."""

from __future__ import annotations

import pytest

from bessai.control.controllers import ControllerConfig, decide
from bessai.control.schedule import SlotAction

CFG = ControllerConfig(step_s=10.0, deadband_w=200.0, ramp_w_per_s=50.0, min_interval_s=5.0)
PS, EL = SlotAction.PEAK_SHAVE, SlotAction.EXPORT_LIMIT


def shave(meter_w: float, battery_w: float = 0.0, setpoint_w: float = 0.0,
          since_write_s: float = 10.0) -> float | None:
    return decide(PS, limit_w=2000.0, meter_w=meter_w, battery_w=battery_w,
                  setpoint_w=setpoint_w, since_write_s=since_write_s, max_charge_w=5000.0,
                  max_discharge_w=5000.0, config=CFG)


def test_import_above_the_limit_is_shaved_in_one_step_to_the_deadband_inside_it():
    # 3500 W imported, battery idle: discharge 1700 W so that import is 1800 W (limit - deadband)
    assert shave(meter_w=-3500.0) == pytest.approx(-1700.0)
    # already discharging 1000 W and still 3000 W imported: the whole correction at once
    assert shave(meter_w=-3000.0, battery_w=-1000.0, setpoint_w=-1000.0) == pytest.approx(-2200.0)


def test_headroom_is_given_back_no_faster_than_the_ramp():
    # the peak is over: import 500 W while discharging 2000 W: charge back, but ramped
    new = shave(meter_w=-500.0, battery_w=-2000.0, setpoint_w=-2000.0, since_write_s=10.0)
    assert new == pytest.approx(-2000.0 + 50.0 * 10.0)


def test_no_write_inside_the_band_between_limit_and_two_deadbands_below():
    assert shave(meter_w=-1900.0, battery_w=-1000.0, setpoint_w=-1000.0) is None
    assert shave(meter_w=-1700.0, battery_w=-1000.0, setpoint_w=-1000.0) is None


def test_the_battery_limits_bound_the_shaving():
    assert decide(PS, limit_w=2000.0, meter_w=-9000.0, battery_w=0.0, setpoint_w=0.0,
                  since_write_s=10.0, max_charge_w=5000.0, max_discharge_w=0.0,
                  config=CFG) is None  # discharge blocked: nothing it can do


def test_export_limit_charges_the_surplus_and_never_discharges():
    # 4000 W exported with the battery idle: charge 2700 W so that export is 1300 W
    assert decide(EL, limit_w=1500.0, meter_w=4000.0, battery_w=0.0, setpoint_w=0.0,
                  since_write_s=10.0, max_charge_w=5000.0, max_discharge_w=5000.0,
                  config=CFG) == pytest.approx(2700.0)
    # export gone (importing 1000 W) while charging 2000 W: charge less, ramped, never below 0
    new = decide(EL, limit_w=1500.0, meter_w=-1000.0, battery_w=2000.0, setpoint_w=2000.0,
                 since_write_s=100.0, max_charge_w=5000.0, max_discharge_w=5000.0, config=CFG)
    assert new == pytest.approx(0.0)


def test_the_write_interval_is_never_shorter_than_the_command_min_interval():
    assert ControllerConfig(step_s=2.0, min_interval_s=5.0).write_interval_s == 5.0
    assert ControllerConfig(step_s=10.0, min_interval_s=5.0).write_interval_s == 10.0
