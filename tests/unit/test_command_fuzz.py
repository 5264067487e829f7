"""Fuzzing the command path (issue 19): whatever bytes arrive as a command, the parser, the gate and
the router answer with an Outcome — a rejection with a reason and a code, or a decision — and
nothing escapes. Every echo is bounded: the event fits Pub/Sub by construction, every log line
fits `MAX_LOG_LINE_CHARS` and encodes to UTF-8.
"""

from __future__ import annotations

import io
import json

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from bessai.bounds import MAX_EVENT_BODY_BYTES, MAX_LOG_LINE_CHARS
from bessai.control.command import InvalidCommand, parse_command
from bessai.control.events import EventOutbox
from bessai.control.gate import CommandGate, CommandRouter, Decision, Outcome, parse_message
from bessai.control.limits import SafetyState, evaluate
from bessai.model import Command, Snapshot, TagReading
from bessai.observe.logs import configure_logging, reset_logging
from bessai.uplink.message import record_from_event
from bessai.uplink.pull import _unpack
from tests.logfmt_strict import parse_logfmt

NOW = 1_767_225_600.0
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

REJECTION_CODES = {"too_large", "too_deep", "malformed", "wrong_site", "wrong_device", "expired",
                   "ttl_too_long", "blocked_by_safety", "below_min_power", "no_power_allowed",
                   "rate_limited", "apply_failed"}
ACCEPTED_CODES = {"ok", "clamped", "end_forcing"}

# ---- strategies ----------------------------------------------------------------------------

huge_ints = st.one_of(st.integers(), st.integers(min_value=10**300, max_value=10**420),
                      st.integers(min_value=-(10**420), max_value=-(10**300)))
scalars = st.one_of(st.none(), st.booleans(), huge_ints, st.floats(allow_nan=True),
                    st.text(max_size=50), st.sampled_from(["charge", "discharge", "stop", "auto",
                                                           "site1", "inv1", "\ud800", "", " "]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=20)
FIELDS = ("id", "site_id", "device_id", "action", "power_w", "issued_at", "expires_at")


def valid_body() -> dict:
    return {"id": "c-1", "site_id": "site1", "device_id": "inv1", "action": "discharge",
            "power_w": 3000, "issued_at": NOW - 5, "expires_at": NOW + 60}


@st.composite
def command_shaped(draw) -> bytes:
    """A valid command with some fields replaced by anything JSON can hold (the parser's field
    checks are what these reach), encoded as JSON text."""
    body = valid_body()
    for field in draw(st.sets(st.sampled_from(FIELDS), max_size=4)):
        body[field] = draw(json_values)
    for _ in range(draw(st.integers(0, 2))):
        body[draw(st.text(max_size=8))] = draw(json_values)
    try:
        return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    except ValueError:  # a huge int past Python's str conversion limit: write it as digits
        return b'{"id": "c-1", "power_w": ' + b"9" * 5000 + b"}"


def deep(depth: int, opener: str) -> bytes:
    head, tail = {"{": ('{"a":', "}"), "[": ("[", "]")}[opener]
    inner = head * depth + ("1" if opener == "{" else "") + tail * depth
    return ('{"id":"deep","x":' + inner + "}").encode()


messages = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),
    command_shaped(),
    st.builds(deep, st.integers(1, 20_000), st.sampled_from(["[", "{"])),
    st.integers(1, 200_000).map(lambda n: b'{"id":"' + b"x" * n + b'"}'),
)


# ---- helpers -------------------------------------------------------------------------------


class RecordingApplier:
    """The Dispatcher's seam: records what the gate would put on the device."""

    def __init__(self) -> None:
        self.applied: list[tuple[Command, float | None]] = []

    async def apply(self, command: Command, power_w: float | None) -> None:
        self.applied.append((command, power_w))


def healthy() -> SafetyState:
    snap = Snapshot("site1", "inv1", ts=NOW, taken_at=0.0,
                    readings={"soc": TagReading(50.0), "battery_temp": TagReading(25.0)})
    return evaluate(snap, 0.0, SafetyState())


def run_handler(make_handler, data: bytes) -> tuple[Outcome, list, str]:
    """One message through a fresh gate/router in virtual time; (outcome, events, log text)."""
    buffer = io.StringIO()
    configure_logging("INFO", buffer, site_id="site1", wall_clock=lambda: NOW)
    outbox = EventOutbox()
    handler = make_handler(outbox)

    async def main() -> Outcome:
        return await handler(data, {})

    try:
        outcome = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        reset_logging()
    return outcome, outbox.take_nowait(), buffer.getvalue()


def gate_handler(outbox: EventOutbox):
    gate = CommandGate("site1", "inv1", RecordingApplier(), safety=healthy, emit=outbox.emit,
                       wall_clock=lambda: NOW)
    return gate.handle_command_message


def router_handler(outbox: EventOutbox):
    gate = CommandGate("site1", "inv1", RecordingApplier(), safety=healthy, emit=outbox.emit,
                       wall_clock=lambda: NOW)
    router = CommandRouter("site1", {"inv1": gate}, emit=outbox.emit, wall_clock=lambda: NOW)
    return router.handle_command_message


def assert_bounded_answer(outcome: Outcome, events: list, log_text: str) -> None:
    assert isinstance(outcome, Outcome)
    assert outcome.reason
    if outcome.decision is Decision.REJECTED:
        assert outcome.code in REJECTION_CODES, outcome
    else:
        assert outcome.code in ACCEPTED_CODES, outcome
    assert len(events) == 1
    record = record_from_event(events[0])
    record.validate()  # what the spool checks: Pub/Sub would take it
    assert len(record.data) <= MAX_EVENT_BODY_BYTES + 1024
    lines = log_text.splitlines()
    assert any("event=COMMAND_" in line for line in lines)
    for line in lines:
        assert len(line) <= MAX_LOG_LINE_CHARS
        line.encode("utf-8")  # a lone surrogate would make the stream drop the line
        parse_logfmt(line)


# ---- properties ----------------------------------------------------------------------------


@FUZZ
@given(messages)
def test_parser_answers_any_bytes_with_a_command_or_a_listed_error(data: bytes) -> None:
    error: InvalidCommand | None = None
    try:
        command = parse_command(data)
    except InvalidCommand as exc:
        error = exc
    else:
        assert isinstance(command, Command)
    if error is not None:
        assert error.errors
        assert error.code in {"too_large", "too_deep", "malformed"}
        assert len(str(error)) <= 1000 + 20
    assert isinstance(parse_message(data, {"site_id": "site1"}), Command | Outcome)


@FUZZ
@given(messages)
def test_gate_answers_any_message_with_one_bounded_outcome_and_never_raises(data: bytes) -> None:
    assert_bounded_answer(*run_handler(gate_handler, data))


@FUZZ
@given(messages)
def test_router_answers_any_message_with_one_bounded_outcome_and_never_raises(
        data: bytes) -> None:
    assert_bounded_answer(*run_handler(router_handler, data))


@FUZZ
@given(json_values, json_values)
def test_a_pubsub_envelope_of_any_shape_never_raises_in_the_command_source(item, extra) -> None:
    envelopes = (item, {"ackId": "a", "message": item},
                 {"ackId": "a", "message": {"data": extra, "attributes": item, "messageId": 1}})
    for envelope in envelopes:
        ack_id, _, data, attributes, problem = _unpack(envelope)
        assert isinstance(ack_id, str)
        assert isinstance(data, bytes)
        assert problem is None or isinstance(problem, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())


# ---- the sizes hypothesis does not reach on its own ------------------------------------------


@pytest.mark.parametrize(("data", "code"), [
    pytest.param(json.dumps({**valid_body(), "power_w": "9" * 6_000_000}).encode(), "too_large",
                 id="power_w-6MB-string"),
    pytest.param(b"[" * 1_000_000 + b"]" * 1_000_000, "too_large", id="1M-deep-over-size"),
    pytest.param(deep(30_000, "["), "too_deep", id="30000-deep-lists"),
    pytest.param(deep(10_000, "{"), "too_deep", id="10000-deep-objects"),
    pytest.param(json.dumps(valid_body()).replace("3000", "9" * 400).encode(), "malformed",
                 id="power_w-400-digits"),
    pytest.param(json.dumps(valid_body()).replace(str(NOW + 60), "9" * 400).encode(),
                 "malformed", id="expires_at-400-digits"),
    pytest.param(json.dumps(valid_body()).replace("3000", "-" + "9" * 400).encode(),
                 "malformed", id="power_w-minus-400-digits"),
    pytest.param(json.dumps(valid_body()).replace("3000", "9" * 5000).encode(), "malformed",
                 id="power_w-5000-digits"),
    pytest.param(json.dumps(valid_body()).replace("3000", "1e999").encode(), "malformed",
                 id="power_w-1e999"),
    pytest.param(b"\xff\xfe" + json.dumps(valid_body()).encode(), "malformed", id="not-utf8"),
    pytest.param(json.dumps(valid_body()).encode("utf-16"), "malformed", id="utf-16"),
    pytest.param(json.dumps({**valid_body(), "id": "\ud800"}).encode(), "malformed",
                 id="lone-surrogate-id"),
    pytest.param(json.dumps({**valid_body(), "expires_at": "9" * 60}).encode(), "malformed",
                 id="expires_at-digits-string"),
    pytest.param(json.dumps({**valid_body(), "action": ["charge"] * 5000}).encode(),
                 "malformed", id="action-list"),
])
def test_hostile_messages_are_rejected_with_their_code_and_a_bounded_echo(data, code) -> None:
    for make in (gate_handler, router_handler):
        outcome, events, log_text = run_handler(make, data)
        assert outcome.decision is Decision.REJECTED
        assert outcome.code == code, outcome.reason
        assert_bounded_answer(outcome, events, log_text)
        assert len(log_text) < 4000  # one line, a few hundred characters
