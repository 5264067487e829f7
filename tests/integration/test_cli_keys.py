"""``bessai keys`` and ``bessai command --sign-key`` as operators run them (real subprocesses),
``bessai check-config`` on command authentication, and a signed command as the emulator holds
it, verified by the gateway's own verifier (issue 14)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import httpx
import pytest

from bessai.control.command import parse_command
from bessai.trust import CommandTrust, SkewTracker, VerifyKeys
from tests.integration.cli_harness import ROOT, run_bessai, topic_with_subscription


def generate(out: Path, name: str) -> str:
    result = run_bessai("keys", "generate", "--out", str(out), "--name", name)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_keys_generate_writes_a_0600_private_key_and_never_prints_it(tmp_path):
    out = generate(tmp_path / "k", "ops")
    private, public = tmp_path / "k" / "ops.key", tmp_path / "k" / "ops.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.is_file()
    body = "".join(private.read_text().splitlines()[1:-1])
    assert body not in out
    assert "PRIVATE KEY" not in out
    key_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("key id:"))
    shown = run_bessai("keys", "show", str(public))
    assert shown.stdout.strip().endswith(f"key id {key_id}")
    shown_private = run_bessai("keys", "show", str(private))
    assert shown_private.stdout.strip().endswith(f"key id {key_id}")
    assert body not in shown_private.stdout + shown_private.stderr
    again = run_bessai("keys", "generate", "--out", str(tmp_path / "k"), "--name", "ops")
    assert again.returncode == 2
    assert "already exists" in again.stderr


def site_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"SITE_ID": "site-test-01", "INVERTER_IP": "127.0.0.1",
            "DEVICE_PROFILE": str(ROOT / "profiles" / "huawei_sun2000.json"),
            "HOME": str(tmp_path),
            "SPOOL_PATH": str(tmp_path / "spool" / "outbox.sqlite"), **extra}


def test_check_config_says_commands_are_unauthenticated_without_keys(tmp_path):
    env = site_env(tmp_path, GCP_PROJECT_ID="test-project", PUBSUB_TOPIC="bessai-telemetry",
                   PUBSUB_COMMANDS_SUBSCRIPTION="bessai-commands-sub",
                   PUBSUB_EMULATOR_HOST="127.0.0.1:8085")
    result = run_bessai("check-config", **env)
    assert "commands:  NOT AUTHENTICATED" in result.stdout
    assert "warning: COMMANDS_UNAUTHENTICATED" in result.stdout


def test_check_config_lists_key_ids_and_refuses_a_private_key_in_the_verify_set(tmp_path):
    out = generate(tmp_path / "op", "a")
    key_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("key id:"))
    verify = tmp_path / "verify"
    verify.mkdir()
    (verify / "a.pub").write_bytes((tmp_path / "op" / "a.pub").read_bytes())
    good = run_bessai("check-config", **site_env(tmp_path, COMMAND_VERIFY_KEYS=str(verify)))
    assert f"commands:  signed — 1 key ({key_id}) from {verify}" in good.stdout
    (verify / "b.pub").write_bytes((tmp_path / "op" / "a.key").read_bytes())
    bad = run_bessai("check-config", **site_env(tmp_path, COMMAND_VERIFY_KEYS=str(verify)))
    assert bad.returncode == 2
    assert "PRIVATE key" in bad.stderr
    secret = (tmp_path / "op" / "a.key").read_text().splitlines()[1]
    assert secret not in bad.stdout + bad.stderr


@pytest.mark.emulator
def test_command_sign_key_publishes_a_command_the_gateway_verifies(request, tmp_path):
    emulator = request.getfixturevalue("pubsub_emulator")
    project = "bessai-test"
    topic, sub, base = topic_with_subscription(emulator.host, project)
    out = generate(tmp_path / "op", "dispatch")
    key_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("key id:"))
    result = run_bessai("command", "charge", "--power-w", "2000",
                        "--sign-key", str(tmp_path / "op" / "dispatch.key"),
                        **site_env(tmp_path, GCP_PROJECT_ID=project, PUBSUB_COMMANDS_TOPIC=topic,
                                   PUBSUB_EMULATOR_HOST=emulator.host))
    assert result.returncode == 0, result.stderr
    assert f"signed_by={key_id}" in result.stdout
    pulled = httpx.post(f"{base}/subscriptions/{sub}:pull", json={"maxMessages": 10},
                        timeout=10).json()["receivedMessages"]
    message = pulled[0]["message"]
    data = base64.b64decode(message["data"])
    trust = CommandTrust(keys=VerifyKeys.load(tmp_path / "op" / "dispatch.pub"),
                         clock=SkewTracker())
    command = parse_command(data, message["attributes"])
    assert trust.verify(data, message["attributes"], command) is None
    other = CommandTrust(keys=VerifyKeys.load(Path(generate(tmp_path / "x", "other") and
                                                   tmp_path / "x" / "other.pub")),
                         clock=SkewTracker())
    assert (other.verify(data, message["attributes"], command) or "").startswith(
        "signature_unknown_key")
