"""Site physics for the simulator: a LUNA2000 battery, a PV array and a household load.

The job: given a battery power setpoint, advance the battery's state of charge and temperature
and the site's power flows over a span of time.

Invariants:

* **Energy balance on the AC bus, exactly per step**: ``meter = pv - load - battery`` where
  ``meter`` is + export and ``battery`` is + charge. Summed over a day the four integrals
  (``pv_wh - load_wh - battery_wh - export_wh``) cancel to float rounding.
* **Energy conservation in the battery**: with the one-way efficiency ``eta`` (0.95 by default,
  stated in :class:`SiteParams`), charging ``E`` Wh stores ``eta * E`` and discharging ``E`` Wh
  removes ``E / eta``; the difference is counted in ``losses_wh``, so
  ``stored_wh(end) - stored_wh(start) == battery_wh - losses_wh`` to float rounding.
* SOC never leaves [discharge cutoff, charge cutoff] because of battery power: a step that
  would cross a cutoff is shortened in energy so the SOC lands on it (the step's mean power is
  reported accordingly), and from then on the power in that direction is 0.
* PV and load follow daily curves that are a pure function of (seed, time of day, day index):
  the same seed gives the same day.
  A simulated day holds the two situations the local controllers exist for: midday PV well
  above the load (export, for ``export_limit``) and an evening load peak of about 4 kW
  (import above a typical limit, for ``peak_shave``).
* Temperature relaxes exponentially with time constant ``temp_tau_s`` toward
  ``ambient_c + temp_rise_c_per_w * |P|`` (exact solution per step, so step size does not matter
  for a constant power).
"""

from __future__ import annotations

import math
import random

import attrs

DAY_S = 86_400.0
SLOT_S = 900.0  # the curves' random texture changes every 15 minutes, interpolated linearly


@attrs.frozen
class SiteParams:
    """The simulated site's constants. Defaults: a LUNA2000-10 (10 kWh, 5 kW) beside 6 kWp of PV."""

    rated_capacity_wh: float = attrs.field(default=10_000.0, validator=attrs.validators.gt(0))
    max_charge_power_w: float = attrs.field(default=5_000.0, validator=attrs.validators.ge(0))
    max_discharge_power_w: float = attrs.field(default=5_000.0, validator=attrs.validators.ge(0))
    efficiency: float = attrs.field(
        default=0.95, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    pv_peak_w: float = attrs.field(default=6_000.0, validator=attrs.validators.ge(0))
    base_load_w: float = attrs.field(default=350.0, validator=attrs.validators.ge(0))
    ambient_c: float = 25.0
    temp_rise_c_per_w: float = 0.002  # 5 kW continuous settles 10 °C above ambient
    temp_tau_s: float = attrs.field(default=1_800.0, validator=attrs.validators.gt(0))
    inverter_rise_c_per_w: float = 0.003
    sunrise_h: float = 6.0
    sunset_h: float = 20.0
    evening_peak_w: float = attrs.field(default=2_500.0, validator=attrs.validators.ge(0))
    """Cooking and an EV on the charger around ``evening_peak_h``: with the evening habits it
    takes the household's import above a typical peak-shaving limit (2-3 kW) most days."""
    evening_peak_h: float = 18.5


@attrs.frozen
class DailyCurves:
    """PV production and household load as a function of time, deterministic from ``seed``.

    ``t_s`` counts seconds from midnight of day 0; day ``n`` gets its own weather and habits
    drawn from ``Random(f"{seed}:{n}")``.
    """

    params: SiteParams = attrs.field(factory=SiteParams)
    seed: int = 0

    def _slots(self, day: int) -> tuple[list[float], list[float]]:
        rng = random.Random(f"{self.seed}:{day}")
        n = int(DAY_S / SLOT_S) + 1
        clouds = [1.0 - 0.6 * rng.random() ** 3 for _ in range(n)]
        noise = [0.75 + 0.5 * rng.random() for _ in range(n)]
        return clouds, noise

    def _interp(self, values: list[float], t_in_day: float) -> float:
        pos = t_in_day / SLOT_S
        i = int(pos)
        frac = pos - i
        return values[i] * (1.0 - frac) + values[i + 1] * frac

    def pv_w(self, t_s: float) -> float:
        day, t_in_day = divmod(t_s, DAY_S)
        hour = t_in_day / 3_600.0
        p = self.params
        if not p.sunrise_h < hour < p.sunset_h:
            return 0.0
        x = math.sin(math.pi * (hour - p.sunrise_h) / (p.sunset_h - p.sunrise_h))
        clouds, _ = _cached_slots(self, int(day))
        return p.pv_peak_w * math.pow(x, 1.5) * self._interp(clouds, t_in_day)

    def load_w(self, t_s: float) -> float:
        day, t_in_day = divmod(t_s, DAY_S)
        hour = t_in_day / 3_600.0
        morning = 900.0 * math.exp(-(((hour - 7.5) / 1.0) ** 2))
        evening = 1_500.0 * math.exp(-(((hour - 19.5) / 1.5) ** 2))
        p = self.params
        peak = p.evening_peak_w * math.exp(-(((hour - p.evening_peak_h) / 0.6) ** 2))
        _, noise = _cached_slots(self, int(day))
        return (p.base_load_w + morning + evening + peak) * self._interp(noise, t_in_day)


_SLOT_CACHE: dict[tuple[DailyCurves, int], tuple[list[float], list[float]]] = {}


def _cached_slots(curves: DailyCurves, day: int) -> tuple[list[float], list[float]]:
    key = (curves, day)
    slots = _SLOT_CACHE.get(key)
    if slots is None:
        if len(_SLOT_CACHE) > 64:
            _SLOT_CACHE.clear()
        slots = _SLOT_CACHE[key] = curves._slots(day)
    return slots


@attrs.frozen
class Limits:
    """What the device allows the battery to do right now (from its settings registers)."""

    max_charge_w: float
    max_discharge_w: float
    charge_cutoff_pct: float = 100.0
    discharge_cutoff_pct: float = 0.0


@attrs.define(on_setattr=attrs.setters.NO_OP)  # validated at construction; hot path after
class BatteryModel:
    """The battery and the site's power flows, with energy counters for the balance checks."""

    params: SiteParams = attrs.field(factory=SiteParams)
    soc_pct: float = attrs.field(
        default=50.0, validator=[attrs.validators.ge(0), attrs.validators.le(100)]
    )
    temp_c: float = 25.0
    inverter_temp_c: float = 30.0
    # Last step's mean values (what the registers show).
    battery_power_w: float = 0.0
    pv_power_w: float = 0.0
    load_power_w: float = 0.0
    # Energy counters since construction (Wh). battery_wh is AC-side, + into the battery.
    pv_wh: float = 0.0
    load_wh: float = 0.0
    battery_wh: float = 0.0
    export_wh: float = 0.0
    losses_wh: float = 0.0

    @property
    def stored_wh(self) -> float:
        return self.soc_pct / 100.0 * self.params.rated_capacity_wh

    @property
    def active_power_w(self) -> float:
        """Inverter AC output: PV in, minus what went into the battery."""
        return self.pv_power_w - self.battery_power_w

    @property
    def meter_power_w(self) -> float:
        """Grid meter, + export: the inverter output minus the household load."""
        return self.pv_power_w - self.load_power_w - self.battery_power_w

    def clamp(self, target_w: float, limits: Limits) -> float:
        """The power the battery would take now for ``target_w``, after limits and cutoffs."""
        p = self.params
        if target_w > 0:
            if self.soc_pct >= limits.charge_cutoff_pct:
                return 0.0
            return min(target_w, limits.max_charge_w, p.max_charge_power_w)
        if target_w < 0:
            if self.soc_pct <= limits.discharge_cutoff_pct:
                return 0.0
            return -min(-target_w, limits.max_discharge_w, p.max_discharge_power_w)
        return 0.0

    def step(
        self, dt_s: float, target_w: float, pv_w: float, load_w: float, limits: Limits
    ) -> None:
        """Advance by ``dt_s`` with a constant battery setpoint, PV and load."""
        if dt_s <= 0:
            return
        p = self.params
        power = self.clamp(target_w, limits)
        energy_wh = power * dt_s / 3_600.0
        eta = p.efficiency
        cap = p.rated_capacity_wh
        if energy_wh > 0:
            room_wh = max(0.0, (limits.charge_cutoff_pct - self.soc_pct) / 100.0 * cap)
            energy_wh = min(energy_wh, room_wh / eta)
            stored_delta = energy_wh * eta
        elif energy_wh < 0:
            avail_wh = max(0.0, (self.soc_pct - limits.discharge_cutoff_pct) / 100.0 * cap)
            energy_wh = max(energy_wh, -avail_wh * eta)
            stored_delta = energy_wh / eta
        else:
            stored_delta = 0.0
        self.soc_pct = min(100.0, max(0.0, self.soc_pct + stored_delta / cap * 100.0))
        mean_power = energy_wh * 3_600.0 / dt_s
        self.battery_power_w = mean_power
        self.pv_power_w = pv_w
        self.load_power_w = load_w
        self.pv_wh += pv_w * dt_s / 3_600.0
        self.load_wh += load_w * dt_s / 3_600.0
        self.battery_wh += energy_wh
        self.export_wh += (pv_w - load_w - mean_power) * dt_s / 3_600.0
        self.losses_wh += energy_wh - stored_delta
        decay = math.exp(-dt_s / p.temp_tau_s)
        t_eq = p.ambient_c + p.temp_rise_c_per_w * abs(mean_power)
        self.temp_c = t_eq + (self.temp_c - t_eq) * decay
        inv_eq = p.ambient_c + 5.0 + p.inverter_rise_c_per_w * abs(pv_w - mean_power)
        self.inverter_temp_c = inv_eq + (self.inverter_temp_c - inv_eq) * decay
