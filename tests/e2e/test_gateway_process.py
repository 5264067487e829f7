"""`bessai-run` end to end: three real processes on the real clock.

The simulator over TCP (``python -m bessai.sim``), Google's Pub/Sub emulator (session fixture)
and ``python -m bessai.cli.run --no-screen`` configured through the environment. What an operator
relies on: readings arrive in Pub/Sub with the contract's attributes, /healthz and `bessai
health` tell the truth, SIGTERM drains and exits 0 within SHUTDOWN_DEADLINE_S, a restart
continues ``seq`` without a hole, a second signal forces exit 130, a low SOC is blocked within
one poll, dispatch commands are applied or rejected, SIGHUP switches the log level, a bad
config exits 2 listing every bad value, and an unreachable inverter is a state, not a crash.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest_pubsub import PubsubTopic, make_topic
from tests.e2e.procs import (
    PYTHON,
    ROOT,
    Proc,
    base_env,
    free_port,
    logfmt_ts,
    run_cli,
    sim_port,
    start_gateway,
    start_sim,
    stop_within_deadline,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.emulator]

ATTRIBUTES = {"msg_id", "seq", "site_id", "device_id", "kind", "schema", "event_time"}


@pytest.fixture
def telemetry_topic(pubsub_emulator) -> PubsubTopic:
    return make_topic(pubsub_emulator)


@pytest.fixture
def commands_topic(pubsub_emulator) -> PubsubTopic:
    return make_topic(pubsub_emulator)


def gateway_env(tmp_path: Path, sim_port: int, telemetry: PubsubTopic | None = None,
                commands: PubsubTopic | None = None, **extra: str) -> dict[str, str]:
    env = {
        "SITE_ID": "e2e-site",
        "INVERTER_IP": "127.0.0.1",
        "INVERTER_PORT": str(sim_port),
        "SPOOL_PATH": str(tmp_path / "spool.sqlite"),
        "STATUS_BIND": f"127.0.0.1:{free_port()}",
        "POLL_INTERVAL_S": "1",
        "SHUTDOWN_DEADLINE_S": "5",
    }
    if telemetry is not None:
        env.update(GCP_PROJECT_ID=telemetry.project, PUBSUB_EMULATOR_HOST=telemetry.emulator.host,
                   PUBSUB_TOPIC=telemetry.topic)
    if commands is not None:
        env.update(PUBSUB_COMMANDS_SUBSCRIPTION=commands.subscription,
                   PUBSUB_COMMANDS_TOPIC=commands.topic)
    env.update(extra)
    return env


def status_url(env: dict[str, str]) -> str:
    return f"http://{env['STATUS_BIND']}"


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False)


def pull_until(topic: PubsubTopic, predicate, timeout_s: float, what: str) -> list[dict]:
    got: list[dict] = []

    def check():
        got.extend(topic.pull_all(idle_rounds=1))
        return predicate(got)

    wait_until(check, timeout_s, f"{what}; got {len(got)} messages")
    return got


def by_kind(messages: list[dict], kind: str) -> list[dict]:
    return [m for m in messages if m["attributes"].get("kind") == kind]


def event_names(messages: list[dict]) -> list[str]:
    return [json.loads(m["data"])["name"] for m in by_kind(messages, "event")
            + by_kind(messages, "command_result")]


def started_sim(procs: list[Proc], port: int, *args: str) -> int:
    """Start ``python -m bessai.sim`` on ``port`` (0: any), tracked in ``procs``; its port."""
    sim = start_sim(port, *args)
    procs.append(sim)
    return sim_port(sim)


def linked_gateway(tmp_path: Path, procs: list[Proc], telemetry: PubsubTopic | None = None,
                   commands: PubsubTopic | None = None,
                   **extra: str) -> tuple[Proc, dict[str, str]]:
    """A simulator and a gateway (`gateway_env`'s arguments), once the device link is up."""
    env = gateway_env(tmp_path, started_sim(procs, 0), telemetry, commands, **extra)
    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"event=DEVICE_LINK_UP", 15)
    return gateway, env


def ready_gateway_with_env_file(tmp_path: Path, procs: list[Proc], sim_port: int,
                                log_level: str) -> tuple[Proc, dict[str, str], Path]:
    """A gateway reading ``tmp_path/gateway.env`` (LOG_LEVEL=``log_level``), once READY."""
    env_file = tmp_path / "gateway.env"
    env_file.write_text(f"LOG_LEVEL={log_level}\n")
    env = gateway_env(tmp_path, sim_port)
    gateway = start_gateway(env, "--env-file", str(env_file))
    procs.append(gateway)
    gateway.wait_for(r"event=GATEWAY_READY", 15)
    return gateway, env, env_file


def run_gateway_to_exit(env: dict[str, str], tmp_path: Path,
                        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`bessai-run --no-screen` with only ``env`` (an empty env file) that must exit by itself."""
    empty = tmp_path / "empty.env"
    empty.touch()
    return subprocess.run([PYTHON, "-m", "bessai.cli.run", "--no-screen", "--env-file",
                           str(empty)], cwd=cwd, env=base_env(env),
                          capture_output=True, text=True, timeout=30, check=False)


# ---------------------------------------------------------------------------------------------


def test_readings_reach_pubsub_health_tells_truth_and_seq_continues_across_a_restart(
        tmp_path, procs, telemetry_topic):
    sim_port = started_sim(procs, free_port(), "--multi-client")
    env = gateway_env(tmp_path, sim_port, telemetry_topic)
    health_env = {"STATUS_BIND": env["STATUS_BIND"]}

    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"event=GATEWAY_READY")
    gateway.wait_for(r"event=DEVICE_LINK_UP", 10)
    healthz = wait_until(lambda: (r := get(status_url(env) + "/healthz")).status_code == 200
                         and r, 10, "/healthz 200")
    assert healthz.status_code == 200
    status = get(status_url(env) + "/status").json()
    assert status["site"] == "e2e-site"
    assert status["links"]["device:inv1"]["state"] == "up"
    assert status["tree_running"] is True
    assert status["sites"]["inv1"]["values"]["soc"] == pytest.approx(50.0, abs=1.0)
    healthy = run_cli(["health"], health_env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr

    first = pull_until(telemetry_topic, lambda got: len(by_kind(got, "telemetry")) >= 2, 15,
                       "two telemetry messages from the first run")
    stop_within_deadline(gateway, 5)
    down = run_cli(["health"], health_env)
    assert down.returncode == 4, down.stdout + down.stderr  # no answer, not "unhealthy"
    assert "no answer from the gateway" in down.stderr

    second_run = start_gateway(env)
    procs.append(second_run)
    second_run.wait_for(r"event=DEVICE_LINK_UP", 15)
    messages = first + pull_until(
        telemetry_topic, lambda got: len(by_kind(got, "telemetry")) >= 2, 15,
        "telemetry from the second run")
    stop_within_deadline(second_run, 5)
    stats = run_cli(["spool", "stats", "--json", "--path", env["SPOOL_PATH"]], env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["depth"] == 0, stats.stdout  # SIGTERM drained the spool
    messages += telemetry_topic.pull_all()

    for m in messages:
        assert set(m["attributes"]) >= ATTRIBUTES, m["attributes"]
        assert m["attributes"]["site_id"] == "e2e-site"
        assert m["attributes"]["device_id"] == "inv1"
    telemetry = by_kind(messages, "telemetry")
    for m in telemetry:
        a = m["attributes"]
        assert a["schema"] == "bessai.telemetry.v1"
        payload = json.loads(m["data"])
        assert payload["site_id"] == "e2e-site"
        assert payload["device_id"] == "inv1"
        assert payload["values"]["soc"] == pytest.approx(50.0, abs=1.0)
        assert -30_000 <= payload["values"]["battery_power"] <= 30_000
        # event_time is the reading's own time, RFC 3339 UTC, within this test's run
        event_time = datetime.fromisoformat(a["event_time"].replace("Z", "+00:00"))
        assert abs(event_time.timestamp() - payload["ts"]) < 0.001
        assert abs(event_time.timestamp() - time.time()) < 120
    seqs = sorted({int(m["attributes"]["seq"]) for m in messages
                   if m["attributes"]["device_id"] == "inv1"})
    assert seqs == list(range(1, len(seqs) + 1))  # from 1, no hole across both runs
    assert len({m["attributes"]["msg_id"] for m in messages}) == len(seqs)


def test_sigterm_exits_0_within_shutdown_deadline_even_with_a_hung_collector(
        tmp_path, procs, black_hole):
    """The last OTel flush gets half of SHUTDOWN_DEADLINE_S (it used to take its own fixed 5 s,
    so a hung collector overran a 2 s deadline); the gateway itself says whether it kept it."""
    gateway, _ = linked_gateway(tmp_path, procs, SHUTDOWN_DEADLINE_S="2",
                                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{black_hole}")
    mark = gateway.mark()
    stop_within_deadline(gateway, 2)
    flush = gateway.matching(r"event=TELEMETRY_FLUSH_(TIMEOUT|FLUSHED)", after=mark)
    assert len(flush) == 1, gateway.output()[-3000:]
    assert "event=TELEMETRY_FLUSH_TIMEOUT deadline_s=1.0 " in flush[0], flush[0]


def test_second_signal_during_a_slow_shutdown_forces_exit_130(tmp_path, procs, black_hole):
    """Unforced, this stop waits on the hung collector's flush (5 s, shielded from the
    cancellation) and then exits 0: the second signal ends the process at once, abandoning the
    flush (it never logs its outcome) with exit 130."""
    gateway, _ = linked_gateway(tmp_path, procs, SHUTDOWN_DEADLINE_S="20",
                                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{black_hole}")
    mark = gateway.mark()
    gateway.send(signal.SIGTERM)
    gateway.wait_for(r"event=SHUTDOWN_REQUESTED", 5, after=mark)
    gateway.send(signal.SIGINT)
    rc = gateway.wait(20)
    assert rc == 130, "not forced (exit 0: the stop ended first)\n" + gateway.output()[-3000:]
    assert gateway.matching(r"event=SHUTDOWN_FORCED", after=mark)
    assert not gateway.matching(r"event=(TELEMETRY_FLUSH_\w+|GATEWAY_STOPPED)", after=mark)


def test_soc_below_min_is_blocked_within_one_poll_and_the_block_reaches_pubsub(
        tmp_path, procs, telemetry_topic):
    sim_port = started_sim(procs, 0, "--soc", "4")
    gateway = start_gateway(gateway_env(tmp_path, sim_port, telemetry_topic))
    procs.append(gateway)
    block = gateway.wait_for(r"level=CRITICAL event=SAFETY_BLOCK rule=soc_min", 15)
    assert "value=4" in block, block
    assert "limit=5" in block, block
    ready = gateway.wait_for(r"event=SAFETY_DATA_READY", 5)  # the first reading judged...
    assert "rules=soc_min" in ready, ready  # ...tripped the rule
    first_poll = gateway.wait_for(r"event=DEVICE_LINK_UP", 1)  # logged on the first poll back
    # by the gateway's own timestamps: the guard judges a reading as it arrives, not a poll later
    delay_s = logfmt_ts(block) - logfmt_ts(first_poll)
    assert -0.05 <= delay_s <= 1.0, f"SAFETY_BLOCK {delay_s:.3f} s after the first poll"
    print(f"SAFETY_BLOCK {delay_s * 1000:.0f} ms after the first successful poll")
    messages = pull_until(telemetry_topic, lambda got: "SAFETY_BLOCK" in event_names(got), 15,
                          "the SAFETY_BLOCK event in Pub/Sub")
    body = next(json.loads(m["data"]) for m in by_kind(messages, "event")
                if json.loads(m["data"])["name"] == "SAFETY_BLOCK")
    assert body["device_id"] == "inv1"
    assert body["body"]["rule"] == "soc_min"
    assert by_kind(messages, "telemetry"), "telemetry stops flowing during a block"
    stop_within_deadline(gateway, 5)


def publish_command(topic: PubsubTopic, *, action: str, power_w: float, issued_at: float,
                    ttl_s: float) -> str:
    """A dispatch command as `bessai command` sends it, with a chosen issue time."""
    import uuid

    from bessai.cli.command_cmd import command_message
    from bessai.model import Action, Command

    command = Command(id=str(uuid.uuid4()), site_id="e2e-site", device_id="inv1",
                      action=Action(action), power_w=power_w, issued_at=issued_at,
                      expires_at=issued_at + ttl_s)
    r = httpx.post(f"{topic.emulator.base_url}/v1/{topic.topic_path}:publish",
                   json={"messages": [command_message(command)]}, timeout=10, trust_env=False)
    r.raise_for_status()
    return command.id


def test_dispatch_command_is_applied_and_an_expired_one_rejected(
        tmp_path, procs, telemetry_topic, commands_topic):
    gateway, env = linked_gateway(tmp_path, procs, telemetry_topic, commands_topic)

    sent = run_cli(["command", "discharge", "--power-w", "2000", "--ttl-s", "60"], env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    gateway.wait_for(r"event=COMMAND_ACCEPTED", 15)

    def battery_power() -> float | None:
        values = get(status_url(env) + "/status").json()["sites"]["inv1"]["values"] or {}
        power = values.get("battery_power")
        return power if power is not None and power < 0 else None

    power = wait_until(battery_power, 10, "battery power negative (discharging)")
    assert power == pytest.approx(-2000, rel=0.1)
    print(f"battery power after `bessai command discharge --power-w 2000`: {power} W")

    expired_id = publish_command(commands_topic, action="charge", power_w=1000,
                                 issued_at=time.time() - 120, ttl_s=60)
    rejected = gateway.wait_for(r"event=COMMAND_REJECTED", 15)
    assert expired_id in rejected or "expire" in rejected, rejected

    def results(got):
        names = [json.loads(m["data"]) for m in by_kind(got, "command_result")]
        return {n["name"] for n in names} >= {"COMMAND_ACCEPTED", "COMMAND_REJECTED"} and names

    messages = pull_until(telemetry_topic, results, 15, "both command results in Pub/Sub")
    outcomes = {json.loads(m["data"])["body"]["command_id"]: json.loads(m["data"])
                for m in by_kind(messages, "command_result")}
    assert outcomes[expired_id]["name"] == "COMMAND_REJECTED"
    assert "expire" in json.dumps(outcomes[expired_id]["body"]).lower()
    accepted = [o for o in outcomes.values() if o["name"] == "COMMAND_ACCEPTED"]
    assert accepted[0]["body"]["action"] == "discharge"
    stop_within_deadline(gateway, 5)


def test_a_gateway_with_verify_keys_applies_signed_commands_and_rejects_unsigned_ones(
        tmp_path, procs, telemetry_topic, commands_topic):
    """Issue 14 with real processes: `bessai keys generate`, COMMAND_VERIFY_KEYS, SIGHUP."""
    made = run_cli(["keys", "generate", "--out", str(tmp_path / "operator"), "--name", "ops"],
                   {})
    assert made.returncode == 0, made.stderr
    verify = tmp_path / "verify"
    verify.mkdir()
    (verify / "ops.pub").write_bytes((tmp_path / "operator" / "ops.pub").read_bytes())
    gateway, env = linked_gateway(tmp_path, procs, telemetry_topic, commands_topic,
                                  COMMAND_VERIFY_KEYS=str(verify))
    assert gateway.matching(r"event=COMMANDS_UNAUTHENTICATED") == []
    trust = get(status_url(env) + "/status").json()["commands_trust"]
    assert trust["authenticated"] is True

    unsigned = run_cli(["command", "charge", "--power-w", "1000"], env)
    assert unsigned.returncode == 0, unsigned.stderr
    gateway.wait_for(r"event=COMMAND_REJECTED .*reason=\"?signature_missing", 15)
    mark = gateway.mark()
    signed = run_cli(["command", "discharge", "--power-w", "2000", "--sign-key",
                      str(tmp_path / "operator" / "ops.key")], env)
    assert signed.returncode == 0, signed.stderr
    assert "signed_by=" in signed.stdout
    gateway.wait_for(r"event=COMMAND_ACCEPTED", 15, after=mark)

    # rotation: a new key in, the old one out, SIGHUP; the old key's commands are refused
    assert run_cli(["keys", "generate", "--out", str(tmp_path / "operator"), "--name", "next"],
                   {}).returncode == 0
    (verify / "next.pub").write_bytes((tmp_path / "operator" / "next.pub").read_bytes())
    (verify / "ops.pub").unlink()
    gateway.send(signal.SIGHUP)
    gateway.wait_for(r"event=COMMAND_KEYS_RELOADED .*keys=1 ", 15)
    mark = gateway.mark()
    old_key = run_cli(["command", "stop", "--sign-key", str(tmp_path / "operator" / "ops.key")],
                      env)
    assert old_key.returncode == 0, old_key.stderr
    gateway.wait_for(r"event=COMMAND_REJECTED .*reason=\"?signature_unknown_key", 15, after=mark)
    secret = (tmp_path / "operator" / "ops.key").read_text().splitlines()[1]
    assert secret not in gateway.output()
    stop_within_deadline(gateway, 5)


def poke_status_with_garbage(env: dict[str, str]) -> bytes:
    """A request that is not HTTP: the status server answers 400 and logs it at debug."""
    host, port = env["STATUS_BIND"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        return conn.recv(200)


def test_sighup_applies_the_log_level_from_the_env_file(tmp_path, procs):
    sim_port = started_sim(procs, 0)
    gateway, env, env_file = ready_gateway_with_env_file(tmp_path, procs, sim_port, "INFO")
    assert not gateway.matching(r"level=DEBUG")

    for before, level, debug_expected in (("INFO", "DEBUG", True), ("DEBUG", "INFO", False)):
        env_file.write_text(f"LOG_LEVEL={level}\n")
        mark = gateway.mark()
        gateway.send(signal.SIGHUP)
        gateway.wait_for(rf"event=CONFIG_RELOADED applied=LOG_LEVEL:{before}->{level} ", 5,
                         after=mark)
        assert poke_status_with_garbage(env).startswith(b"HTTP/1.1 400")
        if debug_expected:
            gateway.wait_for(r"level=DEBUG event=status_bad_request", 5, after=mark)
        else:  # the line is written before the 400 is sent: a later line proves it absent
            later = gateway.mark()
            gateway.send(signal.SIGHUP)
            gateway.wait_for(r"event=CONFIG_RELOADED", 5, after=later)
            assert not gateway.matching(r"level=DEBUG", after=mark)
    stop_within_deadline(gateway, 5)


def test_bad_config_exits_2_listing_every_bad_value(tmp_path):
    env = {"SITE_ID": "e2e-site", "INVERTER_IP": "999.1.1.1", "POLL_INTERVAL_S": "-1",
           "SOC_MIN_PCT": "120", "STATUS_BIND": "nowhere", "SPOOL_PATH": str(tmp_path / "s.db")}
    done = run_gateway_to_exit(env, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    for key, value in (("INVERTER_IP", "999.1.1.1"), ("POLL_INTERVAL_S", "-1"),
                       ("SOC_MIN_PCT", "120"), ("STATUS_BIND", "nowhere")):
        assert f"{key}='{value}'" in done.stderr, (key, done.stderr)
    assert "Traceback" not in done.stderr


def test_unreachable_inverter_is_a_503_state_and_recovers_when_the_simulator_appears(
        tmp_path, procs):
    sim_port = free_port()
    env = gateway_env(tmp_path, sim_port)
    gateway = start_gateway(env)
    procs.append(gateway)
    gateway.wait_for(r"event=GATEWAY_READY", 15)
    gateway.wait_for(r"event=DEVICE_LINK_DOWN", 10)
    health = get(status_url(env) + "/healthz")
    assert health.status_code == 503
    assert "inv1" in health.text, health.text
    assert "down" in health.text.lower(), health.text
    unhealthy = run_cli(["health"], {"STATUS_BIND": env["STATUS_BIND"]})
    assert unhealthy.returncode == 1
    assert gateway.popen.poll() is None

    mark = gateway.mark()
    procs.append(start_sim(sim_port))
    gateway.wait_for(r"event=DEVICE_LINK_UP", 20, after=mark)
    wait_until(lambda: get(status_url(env) + "/healthz").status_code == 200, 5, "/healthz 200")
    stop_within_deadline(gateway, 5)


def test_missing_device_profile_exits_2_with_the_path_to_fix(tmp_path):
    env = {"SITE_ID": "e2e-site", "INVERTER_IP": "127.0.0.1",
           "SPOOL_PATH": str(tmp_path / "s.db"), "STATUS_BIND": f"127.0.0.1:{free_port()}"}
    done = run_gateway_to_exit(env, tmp_path, cwd=tmp_path)  # not the repo root
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(
        "error: DEVICE_PROFILE='profiles/huawei_sun2000.json' not found"), done.stderr
    assert "absolute path" in done.stderr
    assert "Traceback" not in done.stderr
    assert "ExceptionGroup" not in done.stderr + done.stdout


def test_status_bind_in_use_exits_1_at_once_naming_it(tmp_path):
    """Most often another gateway is running: two would fight over the inverter's one
    Modbus connection, so the second refuses to start instead of crash-looping its status."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {"SITE_ID": "e2e-site", "INVERTER_IP": "127.0.0.1",
               "SPOOL_PATH": str(tmp_path / "s.db"), "STATUS_BIND": bind}
        done = run_gateway_to_exit(env, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: STATUS_BIND='{bind}' cannot be bound"), done.stderr
    assert "another gateway" in done.stderr
    assert not (tmp_path / "s.db").exists()  # nothing started


def test_sighup_with_a_bad_log_level_keeps_the_level_and_the_gateway_running(tmp_path, procs):
    sim_port = started_sim(procs, 0)
    gateway, env, env_file = ready_gateway_with_env_file(tmp_path, procs, sim_port, "DEBUG")
    env_file.write_text("LOG_LEVEL=LOUD\n")
    for _ in range(2):  # the second one finds the handler in place (no crash, no restart)
        mark = gateway.mark()
        gateway.send(signal.SIGHUP)
        failed = gateway.wait_for(r"event=CONFIG_RELOAD_FAILED", 5, after=mark)
        assert "LOG_LEVEL='LOUD'" in failed, failed
    mark = gateway.mark()
    assert poke_status_with_garbage(env).startswith(b"HTTP/1.1 400")  # still serving
    gateway.wait_for(r"level=DEBUG event=status_bad_request", 5, after=mark)  # DEBUG kept
    assert not gateway.matching(r"ACTOR_CRASHED")
    stop_within_deadline(gateway, 5)
