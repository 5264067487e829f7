"""Settings: every key, bad values reported together, file vs environment, several inverters."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import attrs
import pytest

from bessai.errors import ConfigError
from bessai.settings import (
    KNOWN_KEYS,
    BindAddress,
    DeviceSpec,
    Settings,
    SettingsError,
    get_settings,
    read_log_level,
)

MINIMAL = {"SITE_ID": "site-santiago-01", "INVERTER_IP": "192.168.1.50"}


def load(**env: str) -> Settings:
    return get_settings({**MINIMAL, **env}, env_file=None)


def problems_of(env: dict[str, str], env_file: Path | None = None) -> dict[str, str]:
    with pytest.raises(SettingsError) as info:
        get_settings(env, env_file=env_file)
    return {p.key: str(p) for p in info.value.problems}


def test_minimal_configuration_takes_documented_defaults():
    s = load()
    assert s.site_id == "site-santiago-01"
    assert s.inverter_ip == ipaddress.ip_address("192.168.1.50")
    assert s.inverter_ip_str == "192.168.1.50"
    assert (s.inverter_port, s.modbus_unit_id, s.device_id) == (502, 1, "inv1")
    assert s.device_profile == Path("profiles/huawei_sun2000.json")
    assert (s.poll_interval_s, s.slow_poll_interval_s) == (1.0, 30.0)
    assert (s.soc_min_pct, s.soc_max_pct, s.temp_max_c) == (5.0, 98.0, 45.0)
    assert (s.soc_hysteresis_pct, s.temp_hysteresis_c) == (2.0, 3.0)
    assert s.spool_max_bytes == 1024**3
    assert s.status_bind == BindAddress("127.0.0.1", 8080)
    assert s.status_url == "http://127.0.0.1:8080"
    assert s.log_level == "INFO"
    assert s.shutdown_deadline_s == 20.0
    assert (s.command_max_ttl_s, s.command_min_power_w, s.command_min_interval_s) == (
        3600.0, 100.0, 5.0)
    assert (s.command_verify_keys, s.clock_skew_max_s) == (None, 30.0)
    assert s.uplink_mode == "off"
    assert s.devices == (DeviceSpec("inv1", "192.168.1.50", 502, 1, Path(s.device_profile)),)


def test_every_key_is_read_into_its_field(tmp_path):
    env = {
        "SITE_ID": "plant.7",
        "INVERTER_IP": "fd00::50",
        "INVERTER_PORT": "6607",
        "MODBUS_UNIT_ID": "0",
        "DEVICE_ID": "luna-a",
        "DEVICE_PROFILE": str(tmp_path / "p.json"),
        "POLL_INTERVAL_S": "2.5",
        "SLOW_POLL_INTERVAL_S": "60",
        "SOC_MIN_PCT": "10",
        "SOC_MAX_PCT": "90",
        "SOC_HYSTERESIS_PCT": "1.5",
        "TEMP_MAX_C": "40",
        "TEMP_HYSTERESIS_C": "5",
        "GCP_PROJECT_ID": "my-bess-project",
        "PUBSUB_TOPIC": "bessai-telemetry",
        "PUBSUB_COMMANDS_SUBSCRIPTION": "bessai-commands-site7",
        "PUBSUB_COMMANDS_TOPIC": "bessai-commands",
        "GOOGLE_APPLICATION_CREDENTIALS": "/etc/bessai/gcp/key.json",
        "PUBSUB_EMULATOR_HOST": "localhost:8085",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318",
        "SPOOL_PATH": "/var/lib/bessai/spool/outbox.sqlite",
        "SPOOL_MAX_BYTES": "2GiB",
        "STATUS_BIND": "0.0.0.0:9090",
        "LOG_LEVEL": "debug",
        "LOG_FILE": "/var/log/bessai/gateway.log",
        "SHUTDOWN_DEADLINE_S": "25",
        "COMMAND_MAX_TTL_S": "900",
        "COMMAND_MIN_POWER_W": "50",
        "COMMAND_MIN_INTERVAL_S": "10",
        "COMMAND_VERIFY_KEYS": "/etc/bessai/command-keys",
        "CLOCK_SKEW_MAX_S": "45",
        "MODBUS_TRANSPORT": "rtu-over-tcp",
        "SERIAL_BAUDRATE": "19200",
        "SERIAL_PARITY": "E",
        "SERIAL_STOPBITS": "2",
        "SCHEDULE_CONTROL_STEP_S": "15",
        "SCHEDULE_DEADBAND_W": "100",
        "SCHEDULE_RAMP_W_PER_S": "25",
    }
    # Every key the module knows, except DEVICES and SERIAL_PORT (exclusive with INVERTER_IP,
    # tested below).
    assert set(env) | {"DEVICES", "SERIAL_PORT"} == set(KNOWN_KEYS)
    s = get_settings(env, env_file=None)
    assert s.site_id == "plant.7"
    assert s.inverter_ip == ipaddress.IPv6Address("fd00::50")
    assert (s.inverter_port, s.modbus_unit_id, s.device_id) == (6607, 0, "luna-a")
    assert s.device_profile == tmp_path / "p.json"
    assert (s.poll_interval_s, s.slow_poll_interval_s) == (2.5, 60.0)
    assert (s.soc_min_pct, s.soc_max_pct, s.soc_hysteresis_pct) == (10.0, 90.0, 1.5)
    assert (s.temp_max_c, s.temp_hysteresis_c) == (40.0, 5.0)
    assert s.gcp_project_id == "my-bess-project"
    assert s.pubsub_topic == "bessai-telemetry"
    assert s.pubsub_commands_subscription == "bessai-commands-site7"
    assert s.pubsub_commands_topic == "bessai-commands"
    assert s.google_application_credentials == Path("/etc/bessai/gcp/key.json")
    assert s.pubsub_emulator_host == "localhost:8085"
    assert s.uplink_mode == "emulator"
    assert s.otel_exporter_otlp_endpoint == "http://otel-collector:4318"
    assert s.spool_path == Path("/var/lib/bessai/spool/outbox.sqlite")
    assert (s.command_max_ttl_s, s.command_min_power_w, s.command_min_interval_s) == (
        900.0, 50.0, 10.0)
    assert (s.schedule_control_step_s, s.schedule_deadband_w, s.schedule_ramp_w_per_s) == (
        15.0, 100.0, 25.0)
    assert s.spool_max_bytes == 2 * 1024**3
    assert s.status_bind == BindAddress("0.0.0.0", 9090)
    assert s.status_url == "http://127.0.0.1:9090"  # a wildcard bind is reached on loopback
    assert s.log_level == "DEBUG"
    assert s.log_file == Path("/var/log/bessai/gateway.log")
    assert s.shutdown_deadline_s == 25.0
    assert s.command_verify_keys == Path("/etc/bessai/command-keys")
    assert s.clock_skew_max_s == 45.0
    assert (s.serial_baudrate, s.serial_parity, s.serial_stopbits) == (19200, "E", 2)
    assert [str(d) for d in s.devices] == ["luna-a@rtu-over-tcp:[fd00::50]:6607/0"]


def test_uplink_is_cloud_when_a_topic_is_set_without_the_emulator():
    s = load(GCP_PROJECT_ID="my-bess-project", PUBSUB_TOPIC="bessai-telemetry")
    assert s.uplink_mode == "cloud"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("500MB", 500_000_000), ("2GiB", 2 * 1024**3), ("1.5 GB", 1_500_000_000),
     ("104857600", 104857600), ("64mib", 64 * 1024**2)],
)
def test_spool_budget_accepts_decimal_and_binary_sizes(raw, expected):
    assert load(SPOOL_MAX_BYTES=raw).spool_max_bytes == expected


@pytest.mark.parametrize("host", ["inverter.site.local", "modbus-simulator", "10.0.0.7", "::1"])
def test_inverter_ip_accepts_an_ip_address_or_a_hostname(host):
    assert load(INVERTER_IP=host).inverter_ip_str == host


def test_bad_inverter_ip_names_the_key_the_value_and_an_example():
    found = problems_of({**MINIMAL, "INVERTER_IP": "999.1.1.1"})
    assert found["INVERTER_IP"] == (
        "INVERTER_IP='999.1.1.1' is not an IP address — set it to the inverter's address, "
        "e.g. 192.168.1.50"
    )


@pytest.mark.parametrize("garbage", ["192.168.1.50:502", "inverter_1!", "-bad-.local", "1.2.3"])
def test_inverter_ip_rejects_garbage(garbage):
    assert "INVERTER_IP" in problems_of({**MINIMAL, "INVERTER_IP": garbage})


def test_every_bad_value_is_reported_at_once():
    env = {
        "INVERTER_IP": "999.1.1.1",
        "INVERTER_PORT": "70000",
        "MODBUS_UNIT_ID": "one",
        "POLL_INTERVAL_S": "fast",
        "SOC_MIN_PCT": "-3",
        "TEMP_MAX_C": "hot",
        "PUBSUB_TOPIC": "projects/p/topics/bessai-telemetry",
        "PUBSUB_EMULATOR_HOST": "localhost",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
        "SPOOL_MAX_BYTES": "lots",
        "STATUS_BIND": "8080",
        "LOG_LEVEL": "LOUD",
        "SHUTDOWN_DEADLINE_S": "0",
    }
    with pytest.raises(SettingsError) as info:
        get_settings(env, env_file=None)
    keys = [p.key for p in info.value.problems]
    assert set(keys) == {"SITE_ID", *env, "GCP_PROJECT_ID"}
    assert len(info.value.errors) == len(keys)
    text = info.value.render()
    assert text.startswith(f"error: {len(keys)} settings are wrong:")
    assert "PUBSUB_TOPIC='projects/p/topics/bessai-telemetry' is a full resource path" in text
    assert "hint: fix them in the environment" in text
    assert isinstance(info.value, ConfigError)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SOC_MIN_PCT": "60", "SOC_MAX_PCT": "50"}, "SOC_MIN_PCT"),
        ({"SOC_MIN_PCT": "98", "SOC_MAX_PCT": "98"}, "SOC_MIN_PCT"),
        ({"SOC_MAX_PCT": "101"}, "SOC_MAX_PCT"),
        ({"SOC_MIN_PCT": "40", "SOC_MAX_PCT": "50", "SOC_HYSTERESIS_PCT": "5"},
         "SOC_HYSTERESIS_PCT"),
        ({"TEMP_HYSTERESIS_C": "25"}, "TEMP_HYSTERESIS_C"),
        ({"POLL_INTERVAL_S": "10", "SLOW_POLL_INTERVAL_S": "5"}, "SLOW_POLL_INTERVAL_S"),
        ({"PUBSUB_TOPIC": "bessai-telemetry"}, "GCP_PROJECT_ID"),
        ({"GCP_PROJECT_ID": "my-bess-project", "PUBSUB_COMMANDS_SUBSCRIPTION": "bessai-cmd"},
         "PUBSUB_TOPIC"),
    ],
)
def test_inconsistent_limits_and_uplink_keys_are_rejected(env, key):
    assert key in problems_of({**MINIMAL, **env})


def test_direct_construction_checks_the_same_safety_rules():
    good = load()
    with pytest.raises(SettingsError, match="SOC_MIN_PCT"):
        attrs.evolve(good, soc_min_pct=99.0)


def test_environment_wins_over_the_file_and_empty_means_default(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# site config\n"
        "SITE_ID=from-file\n"
        "INVERTER_IP=192.168.1.50\n"
        "INVERTER_PORT=6607\n"
        'LOG_LEVEL="warning"\n'
        "MODBUS_UNIT_ID=\n"
    )
    s = get_settings({"SITE_ID": "from-env", "LOG_LEVEL": ""}, env_file=env_file)
    assert s.site_id == "from-env"  # environment wins
    assert s.inverter_port == 6607  # file fills what the environment lacks
    assert s.log_level == "WARNING"  # an empty environment value does not hide the file's
    assert s.modbus_unit_id == 1  # an empty value in the file means the default


def test_a_missing_env_file_is_not_an_error(tmp_path):
    s = get_settings(MINIMAL, env_file=tmp_path / "absent.env")
    assert s.site_id == MINIMAL["SITE_ID"]


def test_a_misspelt_key_in_the_file_is_warned_about(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("SOC_MIN=3\nOTELCOL_UPSTREAM_ENDPOINT=https://otel.example\n")
    s = get_settings(MINIMAL, env_file=env_file)
    assert s.soc_min_pct == 5.0
    assert s.warnings == (
        f"{env_file}: unknown key SOC_MIN is ignored (did you mean SOC_MIN_PCT?)",
    )


def test_file_errors_point_the_operator_to_that_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("SITE_ID=s1\nINVERTER_IP=999.1.1.1\n")
    with pytest.raises(SettingsError) as info:
        get_settings({}, env_file=env_file)
    assert info.value.hint.startswith(f"fix it in {env_file}")


def test_several_inverters_are_listed_in_devices_with_inherited_defaults():
    s = get_settings(
        {
            "SITE_ID": "s1",
            "INVERTER_PORT": "6607",
            "MODBUS_UNIT_ID": "0",
            "DEVICES": "inv1@192.168.1.50:502/1, inv2@192.168.1.51,"
            "inv3@[fd00::3]/2?profile=profiles/other.json,inv4@modbus-simulator",
        },
        env_file=None,
    )
    default = Path("profiles/huawei_sun2000.json")
    assert s.devices == (
        DeviceSpec("inv1", "192.168.1.50", 502, 1, default),
        DeviceSpec("inv2", "192.168.1.51", 6607, 0, default),
        DeviceSpec("inv3", "fd00::3", 6607, 2, Path("profiles/other.json")),
        DeviceSpec("inv4", "modbus-simulator", 6607, 0, default),
    )
    assert s.inverter_ip is None
    assert s.inverter_ip_str == "192.168.1.50"
    assert s.device("inv3").unit_id == 2


def test_unknown_device_id_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load().device("inv9")
    assert "inv9" in str(info.value)
    assert "inv1" in info.value.hint


@pytest.mark.parametrize(
    ("devices", "fragment"),
    [
        ("inv1@192.168.1.50,inv1@192.168.1.51", "id 'inv1' twice"),
        ("inv1@192.168.1.50,inv2@192.168.1.50", "192.168.1.50:502/1 twice"),
        ("inv1@999.1.1.1", "is not an IP address"),
        ("192.168.1.50", "is not ID@[TRANSPORT:]HOST"),
        ("inv1@192.168.1.50:99999", "port must be"),
        (" , ", "lists no device"),
    ],
)
def test_bad_device_lists_say_what_is_wrong(devices, fragment):
    found = problems_of({"SITE_ID": "s1", "DEVICES": devices})
    assert fragment in found["DEVICES"]


def test_devices_and_inverter_ip_together_are_ambiguous():
    found = problems_of({**MINIMAL, "DEVICES": "inv1@192.168.1.51"})
    assert "use one" in found["DEVICES"]


def test_secrets_in_the_otlp_url_never_reach_repr_or_errors():
    s = load(OTEL_EXPORTER_OTLP_ENDPOINT="https://user:s3cret@otel.example:4318")
    assert "s3cret" not in repr(s)
    assert "https://***@otel.example:4318" in repr(s)
    found = problems_of({**MINIMAL, "OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://user:s3cret@x"})
    assert "s3cret" not in found["OTEL_EXPORTER_OTLP_ENDPOINT"]


def test_settings_never_read_the_credentials_key_file(tmp_path):
    key = tmp_path / "key.json"
    key.write_text('{"private_key": "-----TOP SECRET-----"}')
    key.chmod(0)  # unreadable: loading must not even try
    s = load(GCP_PROJECT_ID="my-bess-project", PUBSUB_TOPIC="bessai-t",
             GOOGLE_APPLICATION_CREDENTIALS=str(key))
    assert s.google_application_credentials == key
    assert "TOP SECRET" not in repr(s)


def test_log_level_is_read_again_from_the_file_for_a_sighup_reload(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=info\n")
    assert read_log_level({}, env_file) == "INFO"
    env_file.write_text("LOG_LEVEL=debug\n")
    assert read_log_level({}, env_file) == "DEBUG"
    assert read_log_level({"LOG_LEVEL": "error"}, env_file) == "ERROR"  # environment wins
    env_file.write_text("LOG_LEVEL=chatty\n")
    with pytest.raises(SettingsError, match="LOG_LEVEL='chatty' is not a log level"):
        read_log_level({}, env_file)


def test_command_bounds_out_of_range_are_listed_together():
    env = {"SITE_ID": "s1", "INVERTER_IP": "192.168.1.50", "COMMAND_MAX_TTL_S": "10",
           "COMMAND_MIN_POWER_W": "-1", "COMMAND_MIN_INTERVAL_S": "soon"}
    with pytest.raises(SettingsError) as info:
        get_settings(env, env_file=None)
    assert [p.key for p in info.value.problems] == [
        "COMMAND_MAX_TTL_S", "COMMAND_MIN_POWER_W", "COMMAND_MIN_INTERVAL_S"]
    assert "seconds between 60 and 86400" in str(info.value)
