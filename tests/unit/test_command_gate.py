"""The command gate: parsing with a reason per field, site/device/expiry/safety checks, clamping,
and one critical COMMAND_ACCEPTED / COMMAND_REJECTED event per command."""

import json

import pytest
import trio

from bessai.control.command import InvalidCommand, parse_command
from bessai.control.events import EventOutbox
from bessai.control.gate import CommandGate, Decision, PowerLimits, decide, power_limits
from bessai.control.limits import SafetyState, evaluate
from bessai.model import Action, Command, RecordKind, Snapshot, TagReading

NOW = 1_767_225_600.0


def body(**overrides):
    fields = {"id": "c-1", "site_id": "site1", "device_id": "inv1", "action": "discharge",
              "power_w": 3000, "issued_at": NOW - 5, "expires_at": NOW + 60}
    fields.update(overrides)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def snap(soc=50.0, temp=25.0, **extra):
    readings = {"soc": TagReading(soc), "battery_temp": TagReading(temp)}
    readings.update({k: TagReading(v) for k, v in extra.items()})
    return Snapshot("site1", "inv1", ts=NOW, taken_at=0.0, readings=readings)


OK = evaluate(snap(), 0.0, SafetyState())


def test_parse_accepts_epoch_and_iso_times():
    cmd = parse_command(body(expires_at="2026-01-01T00:01:00Z"))
    assert cmd == Command("c-1", "site1", "inv1", Action.DISCHARGE, 3000.0, NOW - 5, NOW + 60)


def test_parse_names_every_bad_field_with_a_reason():
    with pytest.raises(InvalidCommand) as info:
        parse_command(body(action="boost", site_id="", expires_at=..., id=7))
    errors = info.value.errors
    assert set(errors) == {"action", "site_id", "expires_at", "id"}
    assert "charge, discharge, stop, auto" in errors["action"]
    assert "never applied late" in errors["expires_at"]


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"power_w": ...}, "power_w", "needs a power"),
        ({"power_w": -5}, "power_w", "more than 0 W"),
        ({"power_w": "lots"}, "power_w", "number of watts"),
        ({"expires_at": "tomorrow"}, "expires_at", "ISO 8601"),
        ({"expires_at": "2026-01-01T00:01:00"}, "expires_at", "time zone"),
        ({"expires_at": NOW - 10}, "expires_at", "later than issued_at"),
    ],
)
def test_parse_rejects_bad_fields(overrides, field, words):
    with pytest.raises(InvalidCommand) as info:
        parse_command(body(**overrides))
    assert words in info.value.errors[field]


def test_parse_rejects_non_json_and_non_objects():
    with pytest.raises(InvalidCommand, match="not valid JSON"):
        parse_command(b"\xff{")
    with pytest.raises(InvalidCommand, match="JSON object"):
        parse_command(b"[1, 2]")


def test_stop_needs_no_power_and_site_can_come_from_attributes():
    cmd = parse_command(body(action="stop", power_w=..., site_id=..., device_id=...),
                        {"site_id": "site1", "device_id": "inv1"})
    assert (cmd.action, cmd.site_id, cmd.device_id, cmd.power_w) == (Action.STOP, "site1",
                                                                      "inv1", 0.0)
    with pytest.raises(InvalidCommand, match="make them agree"):
        parse_command(body(), {"site_id": "site2"})


ROOMY = PowerLimits(5000, 5000)


def verdict(cmd_body, safety=OK, limits=ROOMY, now=NOW):
    return decide(parse_command(cmd_body), site_id="site1", device_id="inv1", now_wall=now,
                  safety=safety, limits=limits)


def test_command_for_another_site_or_device_is_rejected():
    other_site = verdict(body(site_id="site2"))
    other_device = verdict(body(device_id="inv2"))
    assert other_site.decision is Decision.REJECTED
    assert "site2" in other_site.reason
    assert other_device.decision is Decision.REJECTED
    assert "inv2" in other_device.reason


def test_expired_command_is_rejected_never_applied_late():
    at_expiry = verdict(body(expires_at=NOW + 60), now=NOW + 60)
    assert at_expiry.decision is Decision.REJECTED
    assert "expired" in at_expiry.reason
    assert verdict(body(expires_at=NOW + 60), now=NOW + 59.9).decision is Decision.ACCEPTED


def test_discharge_blocked_at_low_soc_but_charge_and_stop_allowed():
    low = evaluate(snap(soc=4.2), 0.0, SafetyState())
    rejected = verdict(body(action="discharge"), safety=low)
    assert rejected.decision is Decision.REJECTED
    assert "soc_min (soc=4.2 < 5.0)" in rejected.reason
    assert verdict(body(action="charge"), safety=low).decision is Decision.ACCEPTED
    assert verdict(body(action="stop"), safety=low).decision is Decision.ACCEPTED


def test_over_temperature_blocks_both_directions_for_commands():
    hot = evaluate(snap(temp=46.0), 0.0, SafetyState())
    assert verdict(body(action="charge"), safety=hot).decision is Decision.REJECTED
    assert verdict(body(action="discharge"), safety=hot).decision is Decision.REJECTED
    assert verdict(body(action="auto"), safety=hot).decision is Decision.ACCEPTED


def test_power_beyond_device_limit_is_clamped():
    out = verdict(body(power_w=8000), limits=PowerLimits(5000, 4000))
    assert out.decision is Decision.CLAMPED
    assert out.applied_power_w == 4000
    assert verdict(body(power_w=100), limits=PowerLimits(5000, 0)).decision is Decision.REJECTED


def test_power_limits_take_the_tighter_of_profile_and_device():
    limits = power_limits(snap(max_charge_power=2500, max_discharge_power=9000),
                          charge_tag_max_w=5000, discharge_tag_max_w=5000)
    assert limits == PowerLimits(2500, 5000)
    assert power_limits(None, charge_tag_max_w=5000) == PowerLimits(5000, None)


class RecordingApplier:
    def __init__(self, fail=False):
        self.applied = []
        self.fail = fail

    async def apply(self, command, power_w):
        if self.fail:
            raise ConnectionError("device link down: connect refused")
        self.applied.append((command.id, command.action, power_w))


def make_gate(applier, safety=OK, latest=None):
    outbox = EventOutbox()
    gate = CommandGate("site1", "inv1", applier, safety=lambda: safety, emit=outbox.emit,
                       wall_clock=lambda: NOW, latest=lambda: latest,
                       charge_tag_max_w=5000, discharge_tag_max_w=5000)
    return gate, outbox


async def test_handle_message_applies_and_records_accepted_event():
    applier = RecordingApplier()
    gate, events = make_gate(applier, latest=snap(max_discharge_power=2000))
    outcome = await gate.handle_command_message(body(power_w=3000), {})
    assert outcome.decision is Decision.CLAMPED
    assert applier.applied == [("c-1", Action.DISCHARGE, 2000.0)]
    [event] = events.take_nowait()
    assert (event.name, event.kind, event.critical) == ("COMMAND_ACCEPTED",
                                                       RecordKind.COMMAND_RESULT, True)
    assert event.body["applied_power_w"] == 2000.0
    assert event.body["decision"] == "clamped"


async def test_handle_message_never_raises_for_garbage_and_records_rejection():
    applier = RecordingApplier()
    gate, events = make_gate(applier)
    outcome = await gate.handle_command_message(b"not json", {})
    assert outcome.decision is Decision.REJECTED
    assert applier.applied == []
    [event] = events.take_nowait()
    assert event.name == "COMMAND_REJECTED"
    assert "body" in event.body["errors"]


async def test_failed_device_write_is_reported_as_rejected():
    gate, events = make_gate(RecordingApplier(fail=True))
    outcome = await gate.handle_command_message(body(), {})
    assert outcome.decision is Decision.REJECTED
    assert "device link down" in outcome.reason
    assert [e.name for e in events.take_nowait()] == ["COMMAND_REJECTED"]


async def test_redelivered_command_is_applied_once():
    applier = RecordingApplier()
    gate, events = make_gate(applier)
    first = await gate.handle_command_message(body(), {})
    again = await gate.handle_command_message(body(), {})
    assert first == again
    assert len(applier.applied) == 1
    assert len(events.take_nowait()) == 1


async def test_event_outbox_never_blocks_and_keeps_an_event_until_it_was_delivered():
    outbox = EventOutbox()
    for name in "ABC":
        outbox.emit(make_event(name))  # nobody consuming: returns at once, nothing dropped
    delivered = []

    async def flaky_spool(event):
        if event.name == "B" and "B-failed" not in delivered:
            delivered.append("B-failed")
            raise OSError("disk full")
        delivered.append(event.name)

    with pytest.raises(OSError, match="disk full"):
        await outbox.forward(flaky_spool)
    assert [e.name for e in outbox.pending] == ["B", "C"]  # B kept for the next consumer
    with trio.move_on_after(1):
        await outbox.forward(flaky_spool)  # the restarted consumer
    assert delivered == ["A", "B-failed", "B", "C"]
    assert (outbox.emitted, outbox.delivered) == (3, 3)


def make_event(name):
    from bessai.model import Event
    return Event(name, "site1", "inv1", NOW)


async def test_router_sends_each_command_to_its_device_and_rejects_unknown_devices():
    from bessai.control.gate import CommandRouter

    inv1, inv2 = RecordingApplier(), RecordingApplier()
    gate1, _ = make_gate(inv1)
    gate2, _ = make_gate(inv2)
    gate2.device_id = "inv2"
    outbox = EventOutbox()
    router = CommandRouter("site1", {"inv1": gate1, "inv2": gate2}, outbox.emit, lambda: NOW)
    assert (await router.handle_command_message(body(device_id="inv2"))).accepted
    assert inv2.applied
    assert not inv1.applied
    unknown = await router.handle_command_message(body(id="c-9", device_id="inv9"))
    assert unknown.decision is Decision.REJECTED
    assert "inv9" in unknown.reason
    garbage = await router.handle_command_message(b"{}")
    assert garbage.decision is Decision.REJECTED
    assert [e.name for e in outbox.take_nowait()] == ["COMMAND_REJECTED", "COMMAND_REJECTED"]


# ---- issue 19: hostile commands are bounded rejections, never exceptions ------------------------


async def test_a_6MB_field_is_rejected_with_a_bounded_reason_and_event():
    """Why 1: a 6 MB power_w string used to come back twice, whole, in the reason (12 MB)."""
    applier = RecordingApplier()
    gate, events = make_gate(applier)
    outcome = await gate.handle_command_message(body(power_w="9" * 6_000_000), {})
    assert outcome.decision is Decision.REJECTED
    assert len(outcome.reason) < 1100
    [event] = events.take_nowait()
    assert event.name == "COMMAND_REJECTED"
    assert len(json.dumps(dict(event.body))) < 4096
    assert applier.applied == []


@pytest.mark.parametrize("data", [
    pytest.param(body(power_w=10**400), id="power_w-400-digits"),
    pytest.param(body(expires_at=10**400), id="expires_at-400-digits"),
    pytest.param(body(issued_at=-(10**400)), id="issued_at-minus-400-digits"),
    pytest.param(b'{"id": "c-1", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                 id="nested-50000-deep"),
    pytest.param(b'{"id": "c-1", "x": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}",
                 id="objects-5000-deep"),
])
async def test_overflowing_or_deep_commands_are_rejected_with_a_reason_not_raised(data):
    """Why 3: OverflowError / RecursionError used to escape the parser, so the message was
    nacked and redelivered forever with no command_result."""
    applier = RecordingApplier()
    gate, events = make_gate(applier)
    outcome = await gate.handle_command_message(data, {})
    assert outcome.decision is Decision.REJECTED
    assert outcome.reason
    [event] = events.take_nowait()
    assert (event.name, event.kind) == ("COMMAND_REJECTED", RecordKind.COMMAND_RESULT)
    assert applier.applied == []


async def test_the_router_never_raises_for_overflowing_or_deep_commands():
    from bessai.control.gate import CommandRouter

    gate, _ = make_gate(RecordingApplier())
    outbox = EventOutbox()
    router = CommandRouter("site1", {"inv1": gate}, outbox.emit, lambda: NOW)
    for data in (body(power_w=10**400), b"[" * 100_000 + b"]" * 100_000):
        assert (await router.handle_command_message(data)).decision is Decision.REJECTED
    assert [e.name for e in outbox.take_nowait()] == ["COMMAND_REJECTED"] * 2


@pytest.mark.parametrize(("data", "code"), [
    (b"x" * 70_000, "too_large"),
    (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "too_deep"),
    (b"\xc3\x28", "malformed"),
])
def test_size_is_checked_before_depth_and_depth_before_values(data, code):
    with pytest.raises(InvalidCommand) as info:
        parse_command(data)
    assert info.value.code == code


# ---- issue 19: bounds in time and rate (COMMAND_MAX_TTL_S, _MIN_POWER_W, _MIN_INTERVAL_S) -----


async def test_a_command_expiring_in_the_year_9999_is_rejected_but_stop_is_not():
    """Why 8: expires_at=9999-12-31 was accepted and its lease renewed indefinitely."""
    applier = RecordingApplier()
    gate, _ = make_gate(applier)
    far = await gate.handle_command_message(body(expires_at="9999-12-31T00:00:00Z"), {})
    assert far.decision is Decision.REJECTED
    assert "COMMAND_MAX_TTL_S=3600" in far.reason
    assert applier.applied == []
    within = await gate.handle_command_message(body(id="c-2", expires_at=NOW + 3600), {})
    assert within.accepted
    stop = await gate.handle_command_message(
        body(id="c-3", action="stop", expires_at="9999-12-31T00:00:00Z"), {})
    assert stop.accepted


async def test_a_power_below_the_minimum_is_rejected_not_applied():
    """Why 8: a 0.0001 W command was "accepted"."""
    applier = RecordingApplier()
    gate, _ = make_gate(applier)
    tiny = await gate.handle_command_message(body(power_w=0.0001), {})
    assert tiny.decision is Decision.REJECTED
    assert "COMMAND_MIN_POWER_W=100" in tiny.reason
    assert applier.applied == []
    assert (await gate.handle_command_message(body(id="c-2", power_w=100), {})).accepted


async def test_a_thousand_direction_flips_are_rate_limited_but_stop_and_auto_never(
        autojump_clock):
    """Why 8: 1,000 alternating charge/discharge commands were all written to the inverter.
    With COMMAND_MIN_INTERVAL_S=5, 1,000 flips 0.1 s apart (100 s) apply at most 21."""
    applier = RecordingApplier()
    gate, events = make_gate(applier)
    start = trio.current_time()
    outcomes = []
    for n in range(1000):
        action = "charge" if n % 2 else "discharge"
        outcomes.append(await gate.handle_command_message(body(id=f"f-{n}", action=action), {}))
        await trio.sleep(0.1)
    elapsed = trio.current_time() - start
    applied = [o for o in outcomes if o.accepted]
    limited = [o for o in outcomes if "rate_limited" in o.reason]
    assert 1 <= len(applied) <= elapsed / 5 + 1
    assert len(applied) + len(limited) == 1000
    assert len(applier.applied) == len(applied)
    assert len(events.take_nowait()) == 1000  # every one answered, none silently dropped
    # right after an applied change: stop and auto still go through at once
    await trio.sleep(5)
    assert (await gate.handle_command_message(body(id="go", action="charge"), {})).accepted
    assert (await gate.handle_command_message(body(id="halt", action="stop"), {})).accepted
    assert (await gate.handle_command_message(body(id="back", action="auto"), {})).accepted
    assert [a for _, a, _ in applier.applied[-3:]] == [Action.CHARGE, Action.STOP, Action.AUTO]


def test_decide_states_each_policy_bound_with_its_code():
    from bessai.control.gate import CommandPolicy

    policy = CommandPolicy(max_ttl_s=600, min_power_w=50, min_interval_s=10)

    def check(cmd_body, limits=ROOMY, since=None):
        return decide(parse_command(cmd_body), site_id="site1", device_id="inv1", now_wall=NOW,
                      safety=OK, limits=limits, policy=policy, since_last_change_s=since)

    assert check(body(expires_at=NOW + 601)).code == "ttl_too_long"
    assert check(body(expires_at=NOW + 600)).code == "ok"
    assert check(body(power_w=49.9)).code == "below_min_power"
    assert check(body(power_w=3000), limits=PowerLimits(40, 40)).code == "no_power_allowed"
    assert check(body(power_w=3000), limits=PowerLimits(60, 60)).code == "clamped"
    assert check(body(), since=9.9).code == "rate_limited"
    assert check(body(), since=10.0).code == "ok"
    assert check(body(action="stop", expires_at=NOW + 10**6), since=0.0).code == "end_forcing"
    assert check(body(action="auto"), since=0.0).code == "end_forcing"
