"""Local validation of what Pub/Sub would reject, and request splitting within its limits."""

from __future__ import annotations

import json

import attrs
import pytest

from bessai.uplink.message import (
    MAX_BATCH_MESSAGES,
    MessageInvalid,
    Record,
    RowPriority,
    SpoolRow,
    rfc3339,
    split_batches,
    validate_attributes,
)
from bessai.uplink.retry import RetrySchedule, parse_retry_after


def row(i: int, size: int = 300) -> SpoolRow:
    return SpoolRow(row_id=i, seq=i, msg_id=f"{i:036d}", site_id="s", device_id="d",
                    kind="telemetry", event_time=0.0, data=b"x" * size, priority=2,
                    enqueued_at=0.0)


def test_attribute_limits_are_checked_locally():
    validate_attributes({"k" * 256: "v" * 1024})
    with pytest.raises(MessageInvalid, match="at most 100"):
        validate_attributes({f"k{i}": "v" for i in range(101)})
    with pytest.raises(MessageInvalid, match="257 bytes"):
        validate_attributes({"k" * 257: "v"})
    with pytest.raises(MessageInvalid, match="1025 bytes"):
        validate_attributes({"k": "v" * 1025})
    with pytest.raises(MessageInvalid, match="reserved"):
        validate_attributes({"googfoo": "v"})
    with pytest.raises(MessageInvalid, match="1026 bytes"):
        validate_attributes({"k": "é" * 513})  # bytes, not characters


@pytest.mark.parametrize(("site", "ok"), [("s" * 1024, True), ("s" * 1025, False),
                                          ("é" * 512, True), ("é" * 513, False), ("", False)])
def test_record_validation_matches_the_full_attribute_check(site, ok):
    record = Record(site_id=site, device_id="inv1", kind="telemetry", event_time=0.0,
                    data=b"{}", priority=RowPriority.TELEMETRY)
    if ok:
        record.validate()
    else:
        with pytest.raises(MessageInvalid):
            record.validate()


def test_batches_respect_message_count_and_byte_limits():
    rows = [row(i) for i in range(2500)]
    batches = split_batches(rows)
    assert [len(b) for b in batches] == [MAX_BATCH_MESSAGES, MAX_BATCH_MESSAGES, 500]
    big = [row(i, size=3_000_000) for i in range(5)]
    batches = split_batches(big)
    assert all(sum(r.encoded_size() for r in b) <= 9_000_000 for b in batches)
    assert [r.row_id for b in batches for r in b] == list(range(5))


def test_event_time_is_rfc3339_utc_with_milliseconds():
    assert rfc3339(1_767_225_600.25) == "2026-01-01T00:00:00.250Z"


def test_retry_after_accepts_seconds_and_http_dates():
    now = 1_767_225_600.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after(None, now) is None


def test_full_jitter_backoff_is_capped_and_honours_retry_after():
    import random
    backoff = RetrySchedule(rng=random.Random(3), base_s=0.5, cap_s=60)
    delays = [backoff.next_delay() for _ in range(30)]
    assert all(0 <= d <= 60 for d in delays)
    assert max(delays[:3]) <= 2.0  # the ceiling grows 0.5, 1, 2 ...
    assert backoff.next_delay(retry_after_s=45) >= 45
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_encoded_size_is_an_upper_bound_of_the_real_request_bytes():
    import json as _json
    r = SpoolRow(row_id=1, seq=123456789, msg_id="0" * 36, site_id="site-ñ" * 20,
                 device_id="inv1" * 30, kind="command_result", event_time=1.7e9,
                 data=b"y" * 301, priority=0, enqueued_at=0.0)
    real = len(_json.dumps(r.to_pubsub(), separators=(",", ":"), ensure_ascii=False).encode()) + 1
    assert real <= r.encoded_size() <= real + 120


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "ok"), (408, "retry"), (429, "retry"), (500, "retry"), (502, "retry"),
    (503, "retry"), (504, "retry"), (401, "unauthorized"), (400, "bad_request"),
    (413, "bad_request"), (403, "config_fault"), (404, "config_fault"), (418, "retry")])
def test_every_status_has_a_decided_outcome(status, outcome):
    from bessai.uplink.publisher import classify
    assert classify(status) == outcome


def test_fast_publish_body_is_exactly_the_json_of_the_messages():
    import json as _json

    from bessai.uplink.message import encode_publish_body
    rows = [SpoolRow(row_id=i, seq=i, msg_id=f"{i:08d}-0000-4000-8000-000000000000",
                     site_id=site, device_id=device, kind=kind, event_time=1.7e9 + i / 7,
                     data=data, priority=2, enqueued_at=0.0)
            for i, (site, device, kind, data) in enumerate([
                ("site1", "inv1", "telemetry", b'{"soc":55.5}'),
                ('quo"te\\s', "tab\there", "event", b"\x00\xff binary"),
                ("ñandú", "電池", "gap", b""),
                ("s", "d", "command_result", b"x" * 1000)])]
    expected = _json.dumps({"messages": [r.to_pubsub() for r in rows]}, separators=(",", ":"),
                           ensure_ascii=False).encode()
    assert encode_publish_body(rows) == expected


def test_an_oversized_event_body_is_truncated_with_a_marker_and_fits_pubsub():
    """Issue 19, Why 1: a 12 MB event body made the spool refuse the event (MessageInvalid)
    and the events actor crash-loop. Bounded where the event becomes a message."""
    from bessai.model import Event
    from bessai.uplink.message import record_from_event

    event = Event("COMMAND_REJECTED", "site1", "-", 1_767_225_600.0,
                  body={"reason": "9" * 12_000_000, "code": "too_large", "n": 3,
                        "errors": {"power_w": "9" * 6_000_000}})
    record = record_from_event(event)
    record.validate()
    assert len(record.data) <= 65_536
    body = json.loads(record.data)["body"]
    assert body["code"] == "too_large"
    assert body["n"] == 3
    assert body["reason"].endswith("…[+11999800 chars]")
    assert body["truncated"]["reason"] == "too large"
    assert body["truncated"]["original_bytes"] > 18_000_000
    small = record_from_event(attrs.evolve(event, body={"reason": "ok"}))
    assert json.loads(small.data)["body"] == {"reason": "ok"}  # untouched below the bound
