"""Schedules: validation with every reason at once, durable atomic replacement, acknowledgement."""

from __future__ import annotations

import json
import sqlite3

import pytest
import trio

from bessai.control.schedule import (
    MAX_SLOTS,
    InvalidSchedule,
    ScheduleLimits,
    SlotAction,
    parse_schedule,
)
from bessai.control.schedule_intake import ScheduleIntake
from bessai.control.schedule_store import ScheduleBook, ScheduleStore
from bessai.model import RecordKind

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
H = 3600.0
LIMITS = ScheduleLimits(max_charge_w=5000.0, max_discharge_w=5000.0, min_power_w=100.0)


def body(**over: object) -> dict:
    base = {"type": "schedule", "schedule_id": "s-1", "site_id": "site1", "device_id": "inv1",
            "valid_until": "2026-01-02T00:00:00Z",
            "slots": [
                {"start": "2026-01-01T01:00:00Z", "end": "2026-01-01T06:00:00Z",
                 "action": "charge", "power_w": 3000},
                {"start": "2026-01-01T17:00:00Z", "end": "2026-01-01T19:00:00Z",
                 "action": "peak_shave", "limit_w": 2500},
                {"start": "2026-01-01T19:00:00Z", "end": "2026-01-01T21:00:00Z",
                 "action": "discharge", "power_w": 2000}]}
    base.update(over)
    return base


def test_a_valid_schedule_parses_with_its_slots_in_wall_time() -> None:
    schedule = parse_schedule(json.dumps(body()).encode(), now_wall=T0, limits=LIMITS)
    assert [s.action for s in schedule.slots] == [SlotAction.CHARGE, SlotAction.PEAK_SHAVE,
                                                  SlotAction.DISCHARGE]
    assert schedule.slots[0].start == T0 + H
    assert schedule.valid_until == T0 + 24 * H
    assert schedule.slot_at(T0 + 18 * H) == (1, schedule.slots[1])
    assert schedule.slot_at(T0 + 12 * H) is None  # a gap: auto
    assert schedule.next_boundary(T0 + 12 * H) == T0 + 17 * H
    # the stored form reads back as the same value
    assert parse_schedule(schedule.to_json(), now_wall=None) == schedule


def test_overlapping_slots_and_a_past_valid_until_are_rejected_with_every_reason() -> None:
    bad = body(valid_until="2025-12-31T23:00:00Z")
    bad["slots"][1]["start"] = "2026-01-01T05:00:00Z"  # overlaps the charge slot
    bad["slots"][2]["power_w"] = 9000  # above the profile's 5000 W
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule(json.dumps(bad), now_wall=T0, limits=LIMITS)
    errors = caught.value.errors
    assert "in the past" in errors["valid_until"]
    assert "overlaps" in errors["slots[1].start"]
    assert "above the profile's limit of 5000 W" in errors["slots[2].power_w"]
    assert "after valid_until" in errors["slots[0].end"]
    assert caught.value.schedule_id == "s-1"


def test_slots_out_of_order_missing_powers_and_unknown_actions_are_each_named() -> None:
    bad = body()
    bad["slots"] = [bad["slots"][2], bad["slots"][0],
                    {"start": "2026-01-01T22:00:00Z", "end": "2026-01-01T21:30:00Z",
                     "action": "explode"},
                    {"start": "2026-01-01T23:00:00Z", "end": "2026-01-01T23:30:00Z",
                     "action": "export_limit"}]
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule(bad, now_wall=T0, limits=LIMITS)
    errors = caught.value.errors
    assert "in order" in errors["slots[1].start"]
    assert "later than start" in errors["slots[2].end"]
    assert "not a slot action" in errors["slots[2].action"]
    assert "needs limit_w" in errors["slots[3].limit_w"]


def test_hostile_schedules_are_bounded_by_the_command_parsers_limits() -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule(b"[" * 100_000, now_wall=T0)
    assert caught.value.code == "too_large"
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule("[" * 100 + "]" * 100, now_wall=T0)
    assert caught.value.code == "too_deep"
    many = body(slots=[{"start": T0 + i * 60, "end": T0 + i * 60 + 30, "action": "auto"}
                       for i in range(MAX_SLOTS + 1)])
    with pytest.raises(InvalidSchedule, match="more than 288"):
        parse_schedule(many, now_wall=T0)
    garbage = body(slots=[{"start": "x" * 10_000, "end": 10**400, "action": None,
                           "power_w": float("nan")}] * 100)
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule(garbage, now_wall=T0)
    assert len(caught.value.errors) <= 33
    assert "more" in caught.value.errors
    assert len(str(caught.value)) <= 1000 + len("…[+99999 chars]")


def test_the_store_replaces_a_devices_schedule_atomically_and_survives_reopening(
        tmp_path) -> None:
    store = ScheduleStore(tmp_path / "schedules.sqlite")
    first = parse_schedule(body(), now_wall=T0, limits=LIMITS)
    second = parse_schedule(body(schedule_id="s-2", slots=body()["slots"][:1]), now_wall=T0)
    other = parse_schedule(body(schedule_id="s-9", device_id="inv2"), now_wall=T0)
    store.replace(first, T0)
    store.replace(other, T0)
    store.replace(second, T0)
    again = ScheduleStore(tmp_path / "schedules.sqlite").load_all()
    assert again == {"inv1": second, "inv2": other}
    rows = sqlite3.connect(tmp_path / "schedules.sqlite").execute(
        "SELECT count(*) FROM schedules").fetchone()
    assert rows == (2,)


def _intake(tmp_path, events: list) -> ScheduleIntake:
    return ScheduleIntake("site1", {"inv1": LIMITS}, ScheduleStore(tmp_path / "s.sqlite"),
                          ScheduleBook(), emit=events.append, wall_clock=lambda: T0)


async def test_an_accepted_schedule_is_stored_put_in_the_book_and_acknowledged(tmp_path) -> None:
    events: list = []
    intake = _intake(tmp_path, events)
    commands: list = []

    async def command_router(data, attributes=None):
        commands.append(data)

    handler = intake.route(command_router)
    await handler(json.dumps(body()).encode(), {})
    await handler(json.dumps(body()).encode(), {})  # redelivery: same answer, one event
    await handler(b'{"id": "c-1", "action": "stop"}', {})  # not a schedule: to the commands
    assert commands == [b'{"id": "c-1", "action": "stop"}']
    assert intake.book.get("inv1").schedule_id == "s-1"
    assert intake.store.load_all()["inv1"].schedule_id == "s-1"
    assert [e.name for e in events] == ["SCHEDULE_ACCEPTED"]
    assert events[0].kind is RecordKind.COMMAND_RESULT
    assert events[0].critical
    assert events[0].body["type"] == "schedule_result"


async def test_a_rejected_schedule_keeps_the_previous_plan_and_says_why(tmp_path) -> None:
    events: list = []
    intake = _intake(tmp_path, events)
    await intake.handle(json.dumps(body()).encode())
    bad = body(schedule_id="s-2", valid_until=T0 - 1)
    outcome = await intake.handle(json.dumps(bad).encode())
    assert not outcome.accepted
    assert "valid_until" in outcome.errors
    wrong = await intake.handle(json.dumps(body(schedule_id="s-3", device_id="inv7")).encode())
    assert wrong.code == "wrong_device"
    assert intake.book.get("inv1").schedule_id == "s-1"
    assert [e.name for e in events] == ["SCHEDULE_ACCEPTED", "SCHEDULE_REJECTED",
                                        "SCHEDULE_REJECTED"]
    assert "valid_until" in events[1].body["errors"]


async def test_a_disk_that_refuses_the_schedule_is_a_rejection_not_a_crash(tmp_path) -> None:
    events: list = []
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    intake = ScheduleIntake("site1", {"inv1": LIMITS}, ScheduleStore(blocker / "s.sqlite"),
                            ScheduleBook(), emit=events.append, wall_clock=lambda: T0)
    outcome = await intake.handle(json.dumps(body()).encode())
    assert outcome.code == "store_failed"
    assert intake.book.get("inv1") is None
    await trio.lowlevel.checkpoint()


async def test_with_verify_keys_a_schedule_is_applied_only_when_signed_and_a_forgery_burns_nothing(
        tmp_path) -> None:
    """Issue 15 asks schedules to be signed like commands: unsigned, tampered or unknown-key
    schedules are rejected before anything is stored, and a forged copy sent first does not
    stop the genuine one (its id is not remembered)."""
    from bessai.trust import CommandTrust
    from bessai.trust.keys import VerifyKeys, generate_key_pair, load_private_key
    from bessai.trust.signature import sign_data
    from bessai.trust.skew import SkewTracker

    operator = generate_key_pair(tmp_path / "keys", "operator")
    stranger = generate_key_pair(tmp_path / "other", "stranger")
    trust = CommandTrust(keys=VerifyKeys.load(operator.public_path), clock=SkewTracker(),
                         wall_clock=lambda: T0)
    events: list = []
    intake = ScheduleIntake("site1", {"inv1": LIMITS}, ScheduleStore(tmp_path / "s.sqlite"),
                            ScheduleBook(), emit=events.append, wall_clock=lambda: T0,
                            trust=trust)

    async def commands(data, attributes=None):
        raise AssertionError("a schedule must not reach the command router")

    handler = intake.route(commands)
    data = json.dumps(body()).encode()
    signed = sign_data(data, load_private_key(operator.private_path))
    unsigned = await handler(data, {})
    forged = await handler(data.replace(b"3000", b"4999"), dict(signed))
    unknown = await handler(data, dict(sign_data(data, load_private_key(stranger.private_path))))
    assert [o.code for o in (unsigned, forged, unknown)] == [
        "signature_missing", "signature_invalid", "signature_unknown_key"]
    assert intake.book.get("inv1") is None
    genuine = await handler(data, dict(signed))
    assert genuine.accepted, genuine.reason
    assert intake.book.get("inv1").schedule_id == "s-1"
    assert [e.name for e in events] == ["SCHEDULE_REJECTED"] * 3 + ["SCHEDULE_ACCEPTED"]
