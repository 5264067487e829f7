"""`bessai-run --simulator` never mixes simulated data with the site's: its own spool, no real
topic unless asked, and ``simulated=true`` on every message it publishes."""

from __future__ import annotations

import json
from pathlib import Path

from bessai.cli.run import simulator_settings, simulator_spool
from bessai.settings import get_settings
from bessai.uplink.message import SpoolRow, encode_publish_body

CLOUD = {"SITE_ID": "s1", "INVERTER_IP": "127.0.0.1", "GCP_PROJECT_ID": "my-bess-project",
         "PUBSUB_TOPIC": "bessai-telemetry", "PUBSUB_COMMANDS_SUBSCRIPTION": "bessai-cmds",
         "SPOOL_PATH": "/var/lib/bessai/spool/outbox.sqlite"}


def test_the_simulator_spool_is_beside_the_production_one_never_the_same():
    assert simulator_spool(Path("/var/lib/bessai/spool/outbox.sqlite")) == Path(
        "/var/lib/bessai/spool/outbox.simulator.sqlite")


def test_a_real_topic_is_refused_unless_publish_simulated():
    settings = get_settings(CLOUD, env_file=None)
    refused = simulator_settings(settings, publish=False)
    assert refused.uplink_mode == "off"
    assert refused.pubsub_commands_subscription is None
    allowed = simulator_settings(settings, publish=True)
    assert allowed.uplink_mode == "cloud"
    assert allowed.spool_path.name == "outbox.simulator.sqlite"


def test_the_emulator_is_always_allowed():
    settings = get_settings({**CLOUD, "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}, env_file=None)
    assert simulator_settings(settings, publish=False).uplink_mode == "emulator"


def test_extra_attributes_are_on_every_message_of_the_publish_body():
    rows = [SpoolRow(row_id=i, seq=i, msg_id=f"{i:08d}-0000-4000-8000-000000000000",
                     site_id="s1", device_id="inv1", kind="telemetry", event_time=1.0e9,
                     data=b"{}", priority=0, enqueued_at=1.0e9) for i in range(3)]
    body = json.loads(encode_publish_body(rows, {"simulated": "true"}))
    assert [m["attributes"]["simulated"] for m in body["messages"]] == ["true"] * 3
    plain = json.loads(encode_publish_body(rows))
    assert plain == {"messages": [r.to_pubsub() for r in rows]}
