"""What a SIGHUP reload reports: every key in exactly one group, and nothing secret shown."""

from __future__ import annotations

from bessai.config_reload import LIVE_KEYS, live_settings, plan_reload
from bessai.settings import KNOWN_KEYS, get_settings

BASE = {"SITE_ID": "s1", "INVERTER_IP": "10.0.0.5", "SOC_MAX_PCT": "98"}


def settings(**extra: str):
    return get_settings({**BASE, **extra}, env_file=None)


def test_a_changed_limit_is_applied_and_a_changed_spool_path_needs_a_restart():
    plan = plan_reload(settings(), settings(SOC_MAX_PCT="90", SPOOL_PATH="/var/other.sqlite"))
    assert plan.applied == (("SOC_MAX_PCT", "98", "90"),)
    assert plan.needs_restart == ("SPOOL_PATH",)
    assert sorted(plan.applied_keys() + plan.needs_restart + plan.unchanged) == sorted(KNOWN_KEYS)
    assert plan.log_fields() == {"applied": "SOC_MAX_PCT:98->90", "needs_restart": "SPOOL_PATH",
                                 "unchanged": len(KNOWN_KEYS) - 2}


def test_the_settings_in_force_take_live_keys_only():
    new = settings(SOC_MAX_PCT="90", SPOOL_PATH="/var/other.sqlite", INVERTER_PORT="6607")
    effective = live_settings(settings(), new)
    assert effective.soc_max_pct == 90
    assert str(effective.spool_path) != "/var/other.sqlite"
    assert effective.devices[0].port == 502
    assert "SPOOL_PATH" not in LIVE_KEYS


def test_an_otel_endpoint_with_a_password_is_shown_redacted():
    plan = plan_reload(settings(), settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="https://user:hunter2@collector:4318"))
    (key, old, new), = plan.applied
    assert key == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert old == "unset"
    assert "hunter2" not in new
    assert new.endswith("@collector:4318")


def test_nothing_changed_says_none():
    assert plan_reload(settings(), settings()).log_fields()["applied"] == "none"
