"""Every default is stated once, on its `Settings` field: an unset key takes it, `Limits` and
`ControllerConfig` take theirs from it (the command gate's agree with it), and
config/.env.example shows the same defaults."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from bessai.control.controllers import ControllerConfig
from bessai.control.gate import CommandPolicy
from bessai.control.limits import Limits
from bessai.settings import (
    KNOWN_KEYS,
    Settings,
    check_settings,
    get_settings,
    soc_band_problem,
)

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "config" / ".env.example"
MINIMAL = {"SITE_ID": "site-1", "INVERTER_IP": "192.168.1.50"}


def _field_default(key: str) -> object:
    default = attrs.fields_dict(Settings)[key.lower()].default
    return None if default is attrs.NOTHING else default


def test_an_unset_key_takes_the_default_its_settings_field_states() -> None:
    values = check_settings(MINIMAL, env_file=None).values
    for key in KNOWN_KEYS:
        if key in MINIMAL or key == "DEVICES":
            continue
        assert values[key.lower()] == _field_default(key), key


def test_the_safety_limits_take_the_runbooks_defaults_from_settings() -> None:
    settings = get_settings(MINIMAL, env_file=None)
    limits = Limits()
    for name in ("soc_min_pct", "soc_max_pct", "soc_hysteresis_pct", "temp_max_c",
                 "temp_hysteresis_c"):
        assert getattr(settings, name) == getattr(limits, name), name
    assert (settings.soc_min_pct, settings.soc_max_pct, settings.temp_max_c) == (5.0, 98.0, 45.0)


def test_the_gate_and_the_controllers_default_to_the_settings_defaults() -> None:
    settings = get_settings(MINIMAL, env_file=None)
    policy = CommandPolicy()
    assert (settings.command_max_ttl_s, settings.command_min_power_w,
            settings.command_min_interval_s) == (policy.max_ttl_s, policy.min_power_w,
                                                 policy.min_interval_s)
    control = ControllerConfig.from_settings(settings)
    default = ControllerConfig()
    assert (control.step_s, control.deadband_w, control.ramp_w_per_s) == (
        default.step_s, default.deadband_w, default.ramp_w_per_s)
    assert control.min_interval_s == policy.min_interval_s


def test_env_example_shows_each_default_the_gateway_uses() -> None:
    from bessai.settings import _KEYS

    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    checked = 0
    for key in _KEYS:
        if key.default is None:
            continue
        match = re.search(rf"^#?{key.name}=(\S+)", text, re.MULTILINE)
        assert match, key.name
        if key.name == "SPOOL_PATH":  # the example is the systemd path; the default is in words
            assert f"Default {key.default} (relative)" in text
            continue
        assert key.parse(match.group(1)) == key.default, (
            f"config/.env.example shows {key.name}={match.group(1)}, the default is "
            f"{key.default}")
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(("low", "high", "hyst", "rule"), [
    (5.0, 98.0, 2.0, None), (50.0, 50.0, 0.0, "order"), (60.0, 40.0, 1.0, "order"),
    (49.0, 51.0, 1.0, "overlap"), (49.0, 51.0, 0.9, None),
])
def test_the_soc_band_rule_is_one_rule_for_settings_and_limits(
        low: float, high: float, hyst: float, rule: str | None) -> None:
    assert soc_band_problem(low, high, hyst) == rule
    env = {**MINIMAL, "SOC_MIN_PCT": str(low), "SOC_MAX_PCT": str(high),
           "SOC_HYSTERESIS_PCT": str(hyst)}
    problems = {p.key for p in check_settings(env, env_file=None).problems}
    assert problems == {None: set(), "order": {"SOC_MIN_PCT"},
                        "overlap": {"SOC_HYSTERESIS_PCT"}}[rule]
    if rule is None:
        Limits(soc_min_pct=low, soc_max_pct=high, soc_hysteresis_pct=hyst)
    else:
        with pytest.raises(ValueError, match="SOC limits overlap"):
            Limits(soc_min_pct=low, soc_max_pct=high, soc_hysteresis_pct=hyst)


def test_an_unparsable_hysteresis_still_lets_settings_check_the_soc_order() -> None:
    env = {**MINIMAL, "SOC_MIN_PCT": "60", "SOC_MAX_PCT": "40", "SOC_HYSTERESIS_PCT": "wide"}
    problems = {p.key for p in check_settings(env, env_file=None).problems}
    assert problems == {"SOC_MIN_PCT", "SOC_HYSTERESIS_PCT"}
    assert soc_band_problem(60.0, 40.0, None) == "order"
    assert soc_band_problem(49.0, 51.0, None) is None
