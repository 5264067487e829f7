"""``bessai schedule push`` checks a plan as the gateway will and publishes it; ``schedule show``
prints the stored plan with the slot in force now."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from bessai.control.schedule import parse_schedule
from bessai.control.schedule_store import ScheduleStore
from tests.integration.cli_harness import run_bessai, topic_with_subscription

ENV = {"SITE_ID": "site-test-01", "DEVICES": "inv1@127.0.0.1:5020/1"}


def plan(now: float, **over: object) -> dict:
    body = {"schedule_id": "s-cli", "valid_until": now + 86400,
            "slots": [{"start": now - 60, "end": now + 3600, "action": "charge", "power_w": 3000},
                      {"start": now + 3600, "end": now + 7200, "action": "peak_shave",
                       "limit_w": 2500}]}
    body.update(over)
    return body


def test_push_check_lists_every_problem_of_a_bad_schedule(tmp_path):
    now = time.time()
    bad = plan(now, valid_until=now - 10)
    bad["slots"][1]["start"] = now + 1800  # overlaps
    bad["slots"][0]["power_w"] = 90_000  # above the Huawei profile's 25 kW
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(bad))
    result = run_bessai("schedule", "push", "--check", str(path), HOME=str(tmp_path), **ENV)
    assert result.returncode == 2
    assert "valid_until: is" in result.stderr
    assert "slots[1].start: overlaps" in result.stderr
    assert "slots[0].power_w: 90000 W is above the profile's limit of 25000 W" in result.stderr


def test_show_prints_the_stored_plan_and_marks_the_current_slot(tmp_path):
    now = time.time()
    schedule = parse_schedule({"type": "schedule", "site_id": "site-test-01",
                               "device_id": "inv1", **plan(now)}, now_wall=now)
    store = tmp_path / "schedules.sqlite"
    ScheduleStore(store).replace(schedule, now)
    result = run_bessai("schedule", "show", "--path", str(store), HOME=str(tmp_path), **ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "schedule s-cli, 2 slots" in lines[0]
    assert "active" in lines[0]
    assert lines[1].endswith("charge power_w=3000  <- now")
    assert "peak_shave limit_w=2500" in lines[2]
    assert "<- now" not in lines[2]


@pytest.mark.emulator
def test_push_publishes_the_schedule_to_the_commands_topic(request, tmp_path):
    emulator = request.getfixturevalue("pubsub_emulator")
    project = "bessai-test"
    topic, sub, base = topic_with_subscription(emulator.host, project)
    now = time.time()
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan(now)))
    result = run_bessai("schedule", "push", str(path), HOME=str(tmp_path), GCP_PROJECT_ID=project,
                        PUBSUB_COMMANDS_TOPIC=topic, PUBSUB_EMULATOR_HOST=emulator.host, **ENV)
    assert result.returncode == 0, result.stderr
    assert "sent schedule id=s-cli device=inv1 slots=2" in result.stdout
    pulled = httpx.post(f"{base}/subscriptions/{sub}:pull", json={"maxMessages": 10},
                        timeout=10).json()["receivedMessages"]
    message = pulled[0]["message"]
    sent = parse_schedule(base64.b64decode(message["data"]), now_wall=now)
    assert sent.site_id == "site-test-01"
    assert [s.action.value for s in sent.slots] == ["charge", "peak_shave"]
    assert message["attributes"]["schedule_id"] == "s-cli"
