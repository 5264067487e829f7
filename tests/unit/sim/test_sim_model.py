"""The battery and site model: energy conservation, SOC rate, temperature, deterministic curves."""

from __future__ import annotations

import math

import pytest
import trio

from bessai.sim import Simulator, SiteParams
from bessai.sim.model import BatteryModel, DailyCurves, Limits

ENERGY_TOLERANCE = 0.005  # 0.5 % of the day's battery throughput, for sampled integration


async def test_a_simulated_day_conserves_energy_within_half_a_percent(
    autojump_clock, relaxed_profile
):
    """Integrate PV, load, battery and grid from sampled state over 24 h of self-consumption."""
    sample_s = 10.0
    async with Simulator(relaxed_profile, soc_pct=30.0, start_hour=0.0, seed=7, step_s=10.0) as sim:
        stored0 = sim.model.stored_wh
        pv = load = grid = charge = discharge = 0.0
        socs = []
        for _ in range(int(86_400 / sample_s)):
            await trio.sleep(sample_s)
            s = sim.state()  # mean powers over the last 10 s step
            h = sample_s / 3_600.0
            pv += s.pv_power_w * h
            load += s.load_power_w * h
            grid += s.meter_power_w * h
            charge += max(s.battery_power_w, 0.0) * h
            discharge += max(-s.battery_power_w, 0.0) * h
            socs.append(s.soc_pct)
        eta = sim.params.efficiency
        throughput = charge + discharge
        assert pv > 10_000  # a real day happened
        assert load > 5_000
        assert throughput > 2_000
        # AC bus: whatever PV made went to the load, the battery or the grid.
        assert pv - load - (charge - discharge) - grid == pytest.approx(0.0, abs=1e-6 * pv)
        # Battery: stored energy changed by what went in times eta minus what came out over eta.
        delta = sim.model.stored_wh - stored0
        assert delta == pytest.approx(
            eta * charge - discharge / eta, abs=ENERGY_TOLERANCE * throughput
        )
        assert max(socs) > 30.0 > min(socs) - 0.1  # charged by day (and drew down at night)
        # The model's own counters close to float rounding.
        m = sim.model
        assert m.pv_wh - m.load_wh - m.battery_wh - m.export_wh == pytest.approx(0.0, abs=1e-6)
        assert m.battery_wh - m.losses_wh == pytest.approx(delta, abs=1e-6)


def test_soc_moves_by_power_times_time_over_capacity_with_stated_efficiency():
    model = BatteryModel(SiteParams(efficiency=0.9), soc_pct=50.0)
    limits = Limits(max_charge_w=math.inf, max_discharge_w=math.inf)
    model.step(3_600.0, 2_000.0, 0.0, 0.0, limits)  # 2 kWh in, 1.8 kWh stored
    assert model.soc_pct == pytest.approx(68.0)
    model.step(1_800.0, -3_600.0, 0.0, 0.0, limits)  # 1.8 kWh out, 2 kWh removed
    assert model.soc_pct == pytest.approx(48.0)
    assert model.losses_wh == pytest.approx(200.0 + 200.0)  # 10 % each way, in Wh


def test_step_that_would_cross_the_cutoff_lands_on_it_with_proportional_power():
    model = BatteryModel(SiteParams(efficiency=1.0), soc_pct=10.5)
    limits = Limits(max_charge_w=5_000, max_discharge_w=5_000, discharge_cutoff_pct=10.0)
    model.step(60.0, -5_000.0, 0.0, 0.0, limits)  # only 50 Wh above the cutoff, 83 Wh asked
    assert model.soc_pct == pytest.approx(10.0)
    assert model.battery_power_w == pytest.approx(-50.0 * 60.0)  # 50 Wh over one minute
    model.step(60.0, -5_000.0, 0.0, 0.0, limits)
    assert model.battery_power_w == 0.0


def test_battery_temperature_follows_power_with_its_time_constant():
    params = SiteParams(
        rated_capacity_wh=1e6, ambient_c=20.0, temp_rise_c_per_w=0.002, temp_tau_s=1_000.0
    )
    model = BatteryModel(params, soc_pct=50.0, temp_c=20.0)
    limits = Limits(max_charge_w=5_000, max_discharge_w=5_000)
    model.step(1_000.0, 5_000.0, 0.0, 0.0, limits)  # settles toward 20 + 10 °C
    assert model.temp_c == pytest.approx(20.0 + 10.0 * (1 - math.exp(-1.0)))
    for _ in range(10):
        model.step(1_000.0, -5_000.0, 0.0, 0.0, limits)
    assert model.temp_c == pytest.approx(30.0, abs=0.01)  # |P| heats in both directions
    model.step(10_000.0, 0.0, 0.0, 0.0, limits)
    assert model.temp_c == pytest.approx(20.0, abs=0.01)


def test_curves_are_deterministic_per_seed_and_differ_between_seeds():
    a, b, c = DailyCurves(seed=1), DailyCurves(seed=1), DailyCurves(seed=2)
    times = [h * 3_600.0 + 123.0 for h in range(24)]
    assert [a.pv_w(t) for t in times] == [b.pv_w(t) for t in times]
    assert [a.load_w(t) for t in times] == [b.load_w(t) for t in times]
    assert [a.load_w(t) for t in times] != [c.load_w(t) for t in times]
    assert a.pv_w(2 * 3_600.0) == 0.0  # night
    assert a.pv_w(13 * 3_600.0) > 1_000.0  # early afternoon
    assert all(a.load_w(t) > 0 for t in times)


def test_a_simulated_day_has_an_evening_import_peak_and_midday_export():
    """The controllers' situations happen in the simulator: seeds 0-9, every day."""
    for seed in range(10):
        curves = DailyCurves(SiteParams(), seed)
        evening = max(curves.load_w(t) - curves.pv_w(t) for t in range(17 * 3600, 21 * 3600, 300))
        midday = max(curves.pv_w(t) - curves.load_w(t) for t in range(11 * 3600, 15 * 3600, 300))
        assert evening > 3000.0, seed  # above a typical 2-3 kW peak-shaving limit
        assert midday > 2500.0, seed  # export for an export limit to hold back
