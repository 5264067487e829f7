"""``bessai command`` publishes a dispatch command that a real Pub/Sub (Google's emulator) holds
and that the gateway's command parser accepts.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from bessai.control.command import parse_command
from tests.integration.cli_harness import run_bessai, topic_with_subscription


@pytest.mark.emulator
def test_command_is_published_to_the_commands_topic_in_the_gateways_wire_form(request, tmp_path):
    emulator = request.getfixturevalue("pubsub_emulator")
    project = "bessai-test"
    topic, sub, base = topic_with_subscription(emulator.host, project)
    profile = tmp_path / "profile.json"
    profile.write_text("{}")
    result = run_bessai(
        "command", "discharge", "--power-w", "3000", "--ttl-s", "120", "--device", "inv2",
        HOME=str(tmp_path),
        SITE_ID="site-test-01",
        DEVICES="inv1@127.0.0.1:5020/1,inv2@127.0.0.1:5021/1",
        DEVICE_PROFILE=str(profile),
        GCP_PROJECT_ID=project,
        PUBSUB_COMMANDS_TOPIC=topic,
        PUBSUB_EMULATOR_HOST=emulator.host,
    )
    assert result.returncode == 0, result.stderr
    assert "action=discharge power_w=3000 site=site-test-01 device=inv2" in result.stdout

    pulled = httpx.post(f"{base}/subscriptions/{sub}:pull", json={"maxMessages": 10},
                        timeout=10).json()["receivedMessages"]
    assert len(pulled) == 1
    message = pulled[0]["message"]
    body = json.loads(base64.b64decode(message["data"]))
    assert message["attributes"] == {"site_id": "site-test-01", "device_id": "inv2",
                                     "command_id": body["id"]}
    assert body["expires_at"] - body["issued_at"] == 120
    assert f"command id={body['id']} " in result.stdout
    command = parse_command(base64.b64decode(message["data"]), message["attributes"])
    assert (command.action, command.power_w, command.device_id) == ("discharge", 3000.0, "inv2")
