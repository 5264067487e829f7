"""With PUBSUB_EMULATOR_HOST set, nobody makes topics by hand: `bessai command` and the gateway
create the topics and the subscription they need on Google's Pub/Sub emulator (a real peer),
as an operator meets it — real processes, nothing created by the test."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.procs import free_port, run_cli, sim_port, start_gateway, start_sim

pytestmark = [pytest.mark.e2e, pytest.mark.emulator]
PROJECT = "bessai-setup"


def exists(emulator, kind: str, name: str) -> bool:
    answer = httpx.get(f"{emulator.base_url}/v1/projects/{PROJECT}/{kind}/{name}", timeout=10,
                       trust_env=False)
    return answer.status_code == 200


def test_command_and_gateway_create_what_they_need_on_the_emulator(tmp_path, procs,
                                                                   pubsub_emulator):
    tag = uuid.uuid4().hex[:8]
    telemetry, commands, subscription = f"tel-{tag}", f"cmd-{tag}", f"cmd-{tag}-sub"
    sim = start_sim(0)
    procs.append(sim)
    port = sim_port(sim)
    env = {"SITE_ID": "emu-site", "INVERTER_IP": "127.0.0.1", "INVERTER_PORT": str(port),
           "SPOOL_PATH": str(tmp_path / "spool.sqlite"), "SHUTDOWN_DEADLINE_S": "5",
           "STATUS_BIND": f"127.0.0.1:{free_port()}", "GCP_PROJECT_ID": PROJECT,
           "PUBSUB_EMULATOR_HOST": pubsub_emulator.host, "PUBSUB_TOPIC": telemetry,
           "PUBSUB_COMMANDS_TOPIC": commands, "PUBSUB_COMMANDS_SUBSCRIPTION": subscription}

    # An operator sends a command before the gateway ever ran: topic and subscription appear,
    # and the command waits in the subscription instead of vanishing.
    sent = run_cli(["command", "stop", "--ttl-s", "300"], env)
    assert sent.returncode == 0, sent.stderr
    assert exists(pubsub_emulator, "topics", commands)
    assert exists(pubsub_emulator, "subscriptions", subscription)
    assert not exists(pubsub_emulator, "topics", telemetry)
    command_id = sent.stdout.split("id=")[1].split()[0]

    gateway = start_gateway(env)
    procs.append(gateway)
    created = gateway.wait_for(r"event=EMULATOR_RESOURCE_CREATED kind=topic", 20)
    assert f"name={telemetry} " in created, created
    assert exists(pubsub_emulator, "topics", telemetry)
    # Delivered (accepted, or rejected if it lands before the device link is up: either way
    # the gateway got it from the subscription the CLI created).
    gateway.wait_for(rf"event=COMMAND_(ACCEPTED|REJECTED) command_id={command_id}", 20)
    assert not gateway.matching(r"PUBSUB_CONFIG_FAULT")
    assert len(gateway.matching(r"EMULATOR_RESOURCE_CREATED")) == 1  # the rest existed
