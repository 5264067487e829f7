"""The operations files keep the runbook's promises: names, ports, profiles, bounded telemetry,
a non-root image with a health check, a hardened systemd unit, a documented config template.

No Docker engine (nor the compose v2 plugin, nor hadolint) runs here, so the files are parsed and
checked; `systemd-analyze verify` runs when it is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bessai.settings import KNOWN_KEYS, get_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "ops" / "docker" / "docker-compose.yml"
COLLECTOR = ROOT / "ops" / "otel-collector" / "config.yaml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
UNIT = ROOT / "ops" / "systemd" / "bessai-gateway.service"
ENV_EXAMPLE = ROOT / "config" / ".env.example"
DEFAULT_SHUTDOWN_DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def collector() -> dict:
    return yaml.safe_load(COLLECTOR.read_text())


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match[1]) * (60 if match[2] == "m" else 1)


def _ports(service: dict) -> set[tuple[int, int]]:
    """(host port, container port) pairs from short-form port strings."""
    pairs = set()
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


# --- docker-compose -------------------------------------------------------------------------------


def test_compose_names_the_three_containers_the_runbook_uses(compose):
    names = {name: svc.get("container_name") for name, svc in compose["services"].items()}
    assert names["gateway"] == "bessai-gateway"
    assert names["otel-collector"] == "bessai-otel-collector"
    assert names["modbus-simulator"] == "bessai-modbus-simulator"


def test_gateway_reads_config_env_keeps_its_spool_on_a_volume_and_restarts(compose):
    gateway = compose["services"]["gateway"]
    # The gateway reads config/.env itself (a SIGHUP reloads it; `docker exec ... bessai` reads
    # the same file): the directory is mounted and BESSAI_ENV_FILE points into it.
    assert "env_file" not in gateway
    env_file = Path(gateway["environment"]["BESSAI_ENV_FILE"])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in gateway["volumes"]}
    assert (COMPOSE.parent / mounts[str(env_file.parent)]).resolve() == ROOT / "config"
    assert env_file.name == ".env"
    spool_dir = str(Path(gateway["environment"]["SPOOL_PATH"]).parent)
    assert mounts[spool_dir] in compose["volumes"]  # a named volume, not the container layer
    assert gateway["restart"] == "unless-stopped"
    assert "simulator" not in gateway.get("profiles", [])


def test_gateway_stops_gracefully_within_dockers_grace_period(compose):
    gateway = compose["services"]["gateway"]
    assert gateway["stop_signal"] == "SIGTERM"
    assert gateway["init"] is True  # signals reach bessai-run through tini
    assert _seconds(gateway["stop_grace_period"]) > DEFAULT_SHUTDOWN_DEADLINE_S


def test_gateway_health_is_checked_with_bessai_health(compose):
    test = compose["services"]["gateway"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bessai", "health"]


def test_status_endpoint_is_published_on_host_loopback_only(compose):
    gateway = compose["services"]["gateway"]
    assert "127.0.0.1:8080:8080" in gateway["ports"]
    assert gateway["environment"]["STATUS_BIND"] == "0.0.0.0:8080"


def test_collector_listens_on_otlp_ports_with_the_contrib_image(compose):
    otel = compose["services"]["otel-collector"]
    assert otel["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert otel["image"].split(":")[1][0].isdigit()  # pinned, not :latest
    assert {(4317, 4317), (4318, 4318)} <= _ports(otel)
    config_mount = otel["volumes"][0].split(":")[0]
    assert (COMPOSE.parent / config_mount).resolve() == COLLECTOR


def test_collector_queue_volume_is_owned_by_the_collector_user_before_it_starts(compose):
    otel = compose["services"]["otel-collector"]
    init = compose["services"]["otel-queue-init"]
    queue_dir = "/var/lib/otelcol/file_storage"
    assert any(v.endswith(f":{queue_dir}") for v in otel["volumes"])
    assert otel["depends_on"]["otel-queue-init"]["condition"] == "service_completed_successfully"
    assert "chown -R 10001:10001 " + queue_dir in init["command"][-1]


def test_simulator_runs_only_in_the_simulator_profile_on_host_port_5020(compose):
    sim = compose["services"]["modbus-simulator"]
    assert sim["profiles"] == ["simulator"]
    assert (5020, 502) in _ports(sim)
    assert sim["command"][:5] == ["bessai-sim", "--host", "0.0.0.0", "--port", "502"]
    profile = sim["command"][sim["command"].index("--profile") + 1]
    env = " ".join(rest for kw, rest in _instructions() if kw == "ENV")
    assert f"DEVICE_PROFILE={profile}" in env  # the same profile file the gateway uses
    assert sim["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == "0"
    assert sim["healthcheck"]["test"][0] == "CMD"


def test_simulator_healthcheck_sees_a_listener_without_connecting_to_it(compose):
    """The check reads /proc; a connect would displace the gateway (one Modbus client)."""
    command = compose["services"]["modbus-simulator"]["healthcheck"]["test"]
    assert command[1:3] == ["python", "-c"]
    code = command[3]
    assert "connect" not in code
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    probe = code.replace(":01F6", f":{port:04X}")  # 0x01F6 == 502
    try:
        assert subprocess.run([sys.executable, "-c", probe], timeout=10).returncode == 1
        listener.listen()
        assert subprocess.run([sys.executable, "-c", probe], timeout=10).returncode == 0
    finally:
        listener.close()


def test_compose_validates_with_a_compose_client_when_one_is_installed(tmp_path):
    """`docker compose config` needs only the client; skipped where no client exists."""
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0:
        argv = ["docker", "compose"]
    else:
        pytest.skip("no `docker compose` v2 client on this machine (the v1 python client does "
                    "not know the top-level `name:` key)")
    env_file = ROOT / "config" / ".env"
    created = not env_file.exists()
    if created:
        env_file.write_text("SITE_ID=ci\nINVERTER_IP=127.0.0.1\n")
    try:
        result = subprocess.run(
            [*argv, "-f", str(COMPOSE), "--profile", "simulator", "config", "--quiet"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        if created:
            env_file.unlink()
    assert result.returncode == 0, result.stderr


# --- collector config ---------------------------------------------------------------------------


def test_every_pipeline_limits_memory_first_then_batches(collector):
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][:2] == ["memory_limiter", "batch"], name
        assert pipeline["receivers"] == ["otlp"]
    limiter = collector["processors"]["memory_limiter"]
    assert limiter["limit_mib"] > limiter["spike_limit_mib"] > 0


def test_exporter_queue_is_persistent_and_bounded(collector):
    declared = collector["extensions"]
    enabled = collector["service"]["extensions"]
    queued = [
        (name, cfg) for name, cfg in collector["exporters"].items()
        if (cfg or {}).get("sending_queue")
    ]
    assert queued, "no exporter has a sending_queue"
    for name, cfg in queued:
        queue = cfg["sending_queue"]
        storage = queue["storage"]
        assert storage.split("/")[0] == "file_storage", name
        assert storage in declared
        assert storage in enabled
        assert queue["queue_size"] > 0
    for pipeline in collector["service"]["pipelines"].values():
        assert any(e in dict(queued) for e in pipeline["exporters"])


def test_collector_receives_otlp_on_4317_and_4318(collector):
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_collector_exposes_its_own_metrics_on_8888(collector, compose):
    readers = collector["service"]["telemetry"]["metrics"]["readers"]
    assert readers[0]["pull"]["exporter"]["prometheus"]["port"] == 8888
    assert (8888, 8888) in _ports(compose["services"]["otel-collector"])


# --- Dockerfile -----------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_image_is_python_311_slim_and_runs_as_a_non_root_user():
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (kw, _) in enumerate(instructions) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in instructions[last_user:])


def test_image_checks_health_and_runs_the_gateway():
    instructions = dict(_instructions())
    assert '"bessai", "health"' in instructions["HEALTHCHECK"]
    assert instructions["CMD"] == '["bessai-run"]'
    assert instructions["STOPSIGNAL"] == "SIGTERM"


def test_image_spool_path_is_the_compose_volume(compose):
    env = " ".join(rest for kw, rest in _instructions() if kw == "ENV")
    assert "SPOOL_PATH=/var/lib/bessai/spool/outbox.sqlite" in env
    assert "spool:/var/lib/bessai/spool" in compose["services"]["gateway"]["volumes"]


@pytest.mark.parametrize(
    "source",
    sorted({src for kw, rest in _instructions() if kw == "COPY" for src in rest.split()[:-1]}),
)
def test_every_copied_path_exists_in_the_repository(source):
    assert (ROOT / source).exists()


def test_secrets_stay_out_of_the_build_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "config/.env" in ignored
    assert "*.key.json" in ignored


# --- systemd --------------------------------------------------------------------------------------


def _unit() -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def test_unit_restarts_on_failure_but_not_on_a_config_error():
    unit = _unit()
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # bessai's exit code for bad settings
    assert unit["ExecStart"][0].endswith("/bessai-run")
    # Not checked in ExecStartPre: RestartPreventExitStatus covers only the main process, so a
    # config error there was retried until start-limit-hit; bessai-run itself exits 2.
    assert "ExecStartPre" not in unit


def test_unit_stops_gracefully_and_reloads_with_sighup():
    unit = _unit()
    assert unit["KillSignal"] == ["SIGTERM"]
    assert float(unit["TimeoutStopSec"][0]) > DEFAULT_SHUTDOWN_DEADLINE_S
    assert shlex.split(unit["ExecReload"][0])[1] == "-HUP"


def test_unit_runs_unprivileged_and_hardened():
    unit = _unit()
    assert unit["User"][0] not in ("root", "0")
    # One configuration for the service and the CLI: the file the search order finds by hand.
    assert unit["Environment"].count("BESSAI_ENV_FILE=/etc/bessai/bessai.env") == 1
    assert "EnvironmentFile" not in unit  # values in the environment could never be reloaded
    assert not any(v.startswith("SPOOL_PATH=") for v in unit["Environment"])
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
    }.items():
        assert unit[key] == [value], key
    assert "bessai/spool" in unit["StateDirectory"][0].split()


def test_unit_passes_systemd_analyze_verify_except_for_the_not_yet_installed_binaries():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in result.stderr.splitlines()
        if line.strip() and "is not executable: No such file or directory" not in line
    ]
    assert problems == []


# --- config/.env.example -----------------------------------------------------------------------


def test_env_example_documents_every_key():
    text = ENV_EXAMPLE.read_text()
    for key in KNOWN_KEYS:
        assert re.search(rf"^#?{key}=", text, re.MULTILINE), f"{key} is not in .env.example"


def test_env_example_loads_as_is_without_warnings():
    settings = get_settings({}, env_file=ENV_EXAMPLE)
    assert settings.site_id == "site-santiago-01"
    assert settings.warnings == ()


def test_every_commented_example_value_is_valid(tmp_path):
    lines = ENV_EXAMPLE.read_text().splitlines()
    uncommented = [
        line[1:] for line in lines
        if re.match(r"^#[A-Z_]+=", line) and not line.startswith(("#DEVICES=", "#SERIAL_PORT="))
    ]
    assert len(uncommented) >= len(KNOWN_KEYS) - 4
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join([*lines, *uncommented]) + "\n")
    settings = get_settings({}, env_file=env_file)
    assert settings.uplink_mode == "emulator"
    # DEVICES is exclusive with INVERTER_IP: its example must parse on its own.
    devices_line = next(line[1:] for line in lines if line.startswith("#DEVICES="))
    multi = get_settings({"SITE_ID": "s", "DEVICES": devices_line.split("=", 1)[1]},
                         env_file=None)
    assert [d.id for d in multi.devices] == ["inv1", "inv2"]
    # SERIAL_PORT goes with MODBUS_TRANSPORT=serial instead of INVERTER_IP.
    port_line = next(line[1:] for line in lines if line.startswith("#SERIAL_PORT="))
    serial = get_settings({"SITE_ID": "s", "MODBUS_TRANSPORT": "serial",
                           "SERIAL_PORT": port_line.split("=", 1)[1]}, env_file=None)
    assert [str(d) for d in serial.devices] == ["inv1@serial:/dev/ttyUSB0/1"]


def test_compose_pins_the_gateway_image_by_a_variable_whose_default_is_the_package_version():
    """A `docker compose up -d` from a shell without BESSAI_IMAGE must not fall back to :latest:
    compose reads ops/docker/.env (its project directory), which pins the released version."""
    import tomllib

    text = COMPOSE.read_text()
    assert ":latest" not in text
    assert text.count("image: ${BESSAI_IMAGE:?") == 2  # the gateway and the simulator
    defaults = dict(line.split("=", 1) for line in (COMPOSE.parent / ".env").read_text()
                    .splitlines() if line and not line.startswith("#"))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert defaults["BESSAI_IMAGE"] == f"bessai-edge-gateway:{version}"


def test_readme_and_makefile_give_the_demos_real_duration():
    """README and the Makefile's help say how long `make demo` runs: the demo's own default."""
    from bessai.cli.demo import build_parser as demo_parser

    seconds = demo_parser().parse_args([]).duration
    assert f"for {seconds:.0f} s" in (ROOT / "Makefile").read_text()
    assert f"`bessai-run --simulator` for {seconds:.0f} s" in (ROOT / "README.md").read_text()
