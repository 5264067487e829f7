"""Fuzz: the settings loader turns ANY env file and ANY values into Settings or a ConfigError.

`get_settings` is the first thing `bessai-run` and every `bessai` command call. Whatever an
env file holds (any bytes) and whatever a key's value is, the answer is `Settings` or a
`ConfigError` (a `SettingsError` listing each bad key) — exit 2, which systemd does not retry —
never another exception, which would be a traceback and exit 1, retried forever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bessai.errors import ConfigError
from bessai.settings import (
    KNOWN_KEYS,
    MAX_ENV_FILE_BYTES,
    Settings,
    SettingsError,
    check_settings,
    get_settings,
)

BASE = {"SITE_ID": "site-fuzz-01", "INVERTER_IP": "127.0.0.1"}
INT_KEYS = ("INVERTER_PORT", "MODBUS_UNIT_ID")
FLOAT_KEYS = ("POLL_INTERVAL_S", "SLOW_POLL_INTERVAL_S", "SOC_MIN_PCT", "SOC_MAX_PCT",
              "SOC_HYSTERESIS_PCT", "TEMP_MAX_C", "TEMP_HYSTERESIS_C", "SHUTDOWN_DEADLINE_S")

values = st.text(max_size=300) | st.sampled_from(
    ["\u0665\u0660\u0662", "5_0_2", "1e999", "nan", "inf", "-0", "0x10", "9" * 400,
     "/" * 5000, "a\x00b",
     "x" * 300, "[::1]:99999", "inv1@", "inv1@h:502/1?profile=" + "p" * 300, "500 TB",
     "9" * 20 + "TB", "\U0001d7d3\U0001d7ce\U0001d7d0"])


def _settings_or_config_error(**kwargs: Any) -> None:
    try:
        result = get_settings(**kwargs)
    except ConfigError as error:
        text = error.render()
        assert text.startswith("error: ")
        assert all(len(line) < 1200 for line in text.splitlines()), "echoes must be clipped"
        return
    assert isinstance(result, Settings)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_an_env_file_give_settings_or_a_config_error(tmp_path_factory: Any,
                                                                  data: bytes) -> None:
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_bytes(data)
    _settings_or_config_error(env=dict(BASE), env_file=path)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.tuples(st.sampled_from(KNOWN_KEYS), values), max_size=8))
def test_any_text_values_in_an_env_file_give_settings_or_a_config_error(
        tmp_path_factory: Any, lines: list[tuple[str, str]]) -> None:
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text("".join(f"{key}={value!r}\n" for key, value in lines), encoding="utf-8",
                    errors="surrogatepass")
    _settings_or_config_error(env=dict(BASE), env_file=path)


@settings(max_examples=600, deadline=None)
@given(env=st.dictionaries(st.sampled_from(KNOWN_KEYS), values, max_size=10))
def test_any_values_in_the_environment_give_settings_or_a_config_error(
        env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if "\x00" not in v}  # the OS forbids NUL in environ
    _settings_or_config_error(env={**BASE, **env}, env_file=None)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(INT_KEYS + FLOAT_KEYS),
       digits=st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=4))
def test_numbers_in_non_ascii_digits_are_refused_for_every_numeric_key(key: str,
                                                                       digits: str) -> None:
    if digits.isascii():
        return
    check = check_settings(env={**BASE, key: digits}, env_file=None)
    assert [p.key for p in check.problems] == [key]
    assert "ASCII digits" in check.problems[0].expected


@pytest.mark.parametrize("key", INT_KEYS + FLOAT_KEYS)
@pytest.mark.parametrize("raw", ["5_0", "1e3", "inf", "nan", "0x10", "\u0665"])
def test_every_numeric_key_takes_ascii_digits_only(key: str, raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        get_settings(env={**BASE, key: raw}, env_file=None)
    assert [p.key for p in caught.value.problems] == [key]


def test_an_env_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"#" * (MAX_ENV_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="is over"):
        get_settings(env=dict(BASE), env_file=path)


def test_an_env_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a regular file|cannot be read"):
        get_settings(env=dict(BASE), env_file=tmp_path)


def test_check_settings_keeps_the_good_values_beside_the_problems() -> None:
    check = check_settings(env={**BASE, "INVERTER_IP": "999.1.1.1",
                                "SPOOL_PATH": "/var/lib/bessai/outbox.sqlite"}, env_file=None)
    assert [p.key for p in check.problems] == ["INVERTER_IP"]
    assert "inverter_ip" not in check.values
    assert str(check.values["spool_path"]) == "/var/lib/bessai/outbox.sqlite"
    assert str(check.values["device_profile"]).endswith("huawei_sun2000.json")
