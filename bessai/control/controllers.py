"""Closed-loop slot controllers: ``peak_shave`` and ``export_limit``, on the device's own meter.

Signs: the meter (``meter_power``) is + export / - import; the battery setpoint and reading
(``battery_power``) are + charge / - discharge. On the AC bus ``meter = pv - load - battery``,
so the site's uncontrolled net power is ``net = meter + battery`` and a setpoint ``b`` gives a
meter reading of ``net - b``.

* **peak_shave** (``limit_w``: the most grid import allowed): aims import at
  ``limit_w - deadband_w``; acts at once when import is above ``limit_w`` (discharge more, or
  charge less), and charges back — ramped — only when import is below ``limit_w - 2*deadband_w``.
  So it discharges through a load peak and recharges from the grid while there is headroom.
* **export_limit** (``limit_w``: the most export allowed): aims export at ``limit_w -
  deadband_w`` by charging; acts at once when export is above ``limit_w``, and lowers the charge
  — ramped — only when export is below ``limit_w - 2*deadband_w``. It never discharges.
  (Curtailing PV when the battery cannot take more needs an active-power-limit tag the profile
  does not have yet: then export stays above the limit and the event says so.)

Stated bounds (`ControllerConfig`, settings ``SCHEDULE_CONTROL_STEP_S``,
``SCHEDULE_DEADBAND_W``, ``SCHEDULE_RAMP_W_PER_S``): one decision per control step; a move that
protects the limit is taken whole in one step, a move that gives headroom back is limited to
``ramp_w_per_s`` * the time since the last write; nothing is written for a change within the
deadband. The executor writes at most once per `ControllerConfig.write_interval_s` (the control
step, but never more often than ``COMMAND_MIN_INTERVAL_S``). Step response: a load step is
corrected within one control step plus two poll periods (the reading, then the write).

`decide` is pure: no I/O, no clock.
"""

from __future__ import annotations

import attrs

from bessai.control.schedule import SlotAction
from bessai.settings import Settings, setting_default


@attrs.frozen
class ControllerConfig:
    """How the slot controllers step (see the module docstring)."""

    step_s: float = attrs.field(default=setting_default("schedule_control_step_s"),
                                validator=attrs.validators.gt(0))
    deadband_w: float = attrs.field(default=setting_default("schedule_deadband_w"),
                                    validator=attrs.validators.ge(0))
    ramp_w_per_s: float = attrs.field(default=setting_default("schedule_ramp_w_per_s"),
                                      validator=attrs.validators.gt(0))
    min_interval_s: float = 0.0
    """The command gate's COMMAND_MIN_INTERVAL_S: no controller writes more often."""
    meter_tag: str = "meter_power"
    battery_tag: str = "battery_power"

    @property
    def write_interval_s(self) -> float:
        return max(self.step_s, self.min_interval_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> ControllerConfig:
        """From the SCHEDULE_* and COMMAND_MIN_INTERVAL_S settings (the defaults above are
        theirs)."""
        return cls(step_s=settings.schedule_control_step_s,
                   deadband_w=settings.schedule_deadband_w,
                   ramp_w_per_s=settings.schedule_ramp_w_per_s,
                   min_interval_s=settings.command_min_interval_s)


def decide(kind: SlotAction, *, limit_w: float, meter_w: float, battery_w: float,
           setpoint_w: float, since_write_s: float, max_charge_w: float,
           max_discharge_w: float, config: ControllerConfig) -> float | None:
    """The new battery setpoint in W (+ charge), or None to leave the device as it is.

    ``setpoint_w`` is what the slot last wrote (0 at the slot's start); ``max_*`` are the most
    the slot may use right now (device caps, slot power cap, safety blocks as 0).
    """
    net = meter_w + battery_w
    db = config.deadband_w
    ramp = config.ramp_w_per_s * max(since_write_s, 0.0)
    if kind is SlotAction.PEAK_SHAVE:
        imported = -meter_w
        target = _clamp(net + (limit_w - db), -max_discharge_w, max_charge_w)
        violated = imported > limit_w
        if violated and target < setpoint_w:
            new = target  # protect the limit: the whole move at once
        elif imported < limit_w - 2 * db and target > setpoint_w:
            new = min(target, setpoint_w + ramp)  # give headroom back slowly
        else:
            return None
    elif kind is SlotAction.EXPORT_LIMIT:
        exported = meter_w
        target = _clamp(net - (limit_w - db), 0.0, max_charge_w)
        violated = exported > limit_w
        if violated and target > setpoint_w:
            new = target
        elif exported < limit_w - 2 * db and target < setpoint_w:
            new = max(target, setpoint_w - ramp)
        else:
            return None
    else:
        raise ValueError(f"{kind} is not a controller slot")
    if abs(new - setpoint_w) <= db and not violated:
        return None
    return new


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
