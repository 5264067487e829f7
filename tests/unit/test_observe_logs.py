"""Logs: one event per logfmt line, the runbook's grep holds, the level changes at runtime, and no
credential ever reaches stdout (fields, exception messages, stdlib records)."""

from __future__ import annotations

import io
import logging
import os
import signal

import pytest
import structlog
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from bessai.observe import logfmt
from bessai.observe.logs import (
    configure_logging,
    get_log_level,
    reload_log_level_on_sighup,
    reset_logging,
    set_log_level,
)
from tests.logfmt_strict import parse_logfmt


def lines_of(buffer: io.StringIO) -> list[str]:
    text = buffer.getvalue()
    assert text.endswith("\n") or not text
    return text.splitlines()


@pytest.fixture
def out() -> io.StringIO:
    buffer = io.StringIO()
    configure_logging("INFO", buffer, site_id="plant-1", wall_clock=lambda: 1_795_771_348.25)
    yield buffer
    reset_logging()


# ---- fake credentials ----------------------------------------------------------------------

PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDfAkEsEcReTbOdY"
FAKE_PEM = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\nZm9vYmFyYmF6cXV4\n-----END PRIVATE KEY-----\n"
BEARER = "ya29.a0AfB_byCfAkEtOkEn1234567890abcdef"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJmYWtlQGV4YW1wbGUuY29tIn0.c2lnbmF0dXJlZmFrZQ"
PASSWORD = "hunter2-correct-horse"
SECRETS = [PEM_BODY, "Zm9vYmFyYmF6cXV4", BEARER, "a0AfB_byCfAkEtOkEn", JWT, "c2lnbmF0dXJlZmFrZQ",
           PASSWORD]


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret material {secret[:12]}... leaked: {text}"


# ---- tests ------------------------------------------------------------------------------------


def test_safety_block_line_matches_the_runbook_grep(out: io.StringIO) -> None:
    structlog.get_logger().bind(device="inv1").critical(
        "SAFETY_BLOCK", rule="soc_min", soc=4.2, limit=5.0)
    [line] = lines_of(out)
    assert "level=CRITICAL event=SAFETY_BLOCK" in line
    assert line == ("ts=2026-11-27T09:22:28.250Z level=CRITICAL event=SAFETY_BLOCK "
                    "rule=soc_min soc=4.2 limit=5.0 site=plant-1 device=inv1")
    assert dict(parse_logfmt(line))["limit"] == "5.0"


def test_exception_is_folded_into_one_parseable_line(out: io.StringIO) -> None:
    log = structlog.get_logger()
    try:
        raise ValueError('bad "value"\nsecond line\ttabbed')
    except ValueError:
        log.exception("UPLINK_CRASHED", attempt=3)
    [line] = lines_of(out)
    fields = dict(parse_logfmt(line))
    assert fields["level"] == "ERROR"
    assert fields["event"] == "UPLINK_CRASHED"
    assert "Traceback (most recent call last):" in fields["exception"]
    assert 'ValueError: bad "value"\nsecond line\ttabbed' in fields["exception"]


def test_level_change_at_runtime_reaches_loggers_bound_before_it(out: io.StringIO) -> None:
    log = structlog.get_logger().bind(device="inv1")  # bound once, like an actor does
    log.debug("poll_done", n=1)
    set_log_level("DEBUG")
    log.debug("poll_done", n=2)
    set_log_level("warning")
    log.info("link_state", n=3)
    log.warning("LINK_DOWN", n=4)
    assert get_log_level() == "WARNING"
    assert [dict(parse_logfmt(line))["n"] for line in lines_of(out)] == ["2", "4"]


def test_unknown_level_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"LOG_LEVEL='LOUD' is not a log level .* INFO"):
        set_log_level("LOUD")


def test_stdlib_records_join_the_same_format_at_warning_and_above(out: io.StringIO) -> None:
    set_log_level("DEBUG")
    logging.getLogger("pymodbus.logging").info("chatty detail")
    logging.getLogger("httpx").warning("connection pool full, url=%s", "http://x")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("pymodbus").exception("decode failed")
    lines = lines_of(out)
    assert len(lines) == 2
    first, second = (dict(parse_logfmt(line)) for line in lines)
    assert first["level"] == "WARNING"
    assert first["logger"] == "httpx"
    assert first["event"] == "connection pool full, url=http://x"
    assert first["ts"].endswith("Z")
    assert first["site"] == "plant-1"
    assert second["level"] == "ERROR"
    assert "ZeroDivisionError" in second["exception"]


def test_credentials_in_fields_are_masked(out: io.StringIO) -> None:
    log = structlog.get_logger()
    log.info("AUTH_REFRESHED", token=BEARER, password=PASSWORD, private_key=FAKE_PEM,
             credentials={"type": "service_account", "private_key": FAKE_PEM,
                          "client_email": "gw@p.iam.gserviceaccount.com"},
             headers={"Authorization": f"Bearer {JWT}"}, note=f"key material {FAKE_PEM}")
    log.warning("PUBLISH_FAILED", url=f"https://pubsub/?access_token={BEARER}&x=1",
                body=f'{{"error": "bad", "id_token": "{JWT}"}}', header=f"Bearer {BEARER}")
    lines = lines_of(out)
    assert len(lines) == 2
    for line in lines:
        parse_logfmt(line)
        assert_no_secret(line)
    first = dict(parse_logfmt(lines[0]))
    assert first["token"] == "[REDACTED]"
    assert first["password"] == "[REDACTED]"
    assert first["credentials"] == "[REDACTED]"


def test_credentials_in_exception_messages_are_masked(out: io.StringIO) -> None:
    log = structlog.get_logger()
    try:
        raise RuntimeError(f"refresh failed for {FAKE_PEM} with Authorization: Bearer {BEARER}"
                           f" password={PASSWORD} jwt={JWT}")
    except RuntimeError as error:
        log.exception("AUTH_FAILED", error=error)
        logging.getLogger("google.auth").error("token endpoint said %s", error, exc_info=True)
    lines = lines_of(out)
    assert len(lines) == 2
    for line in lines:
        fields = dict(parse_logfmt(line))
        assert_no_secret(line)
        assert "[REDACTED" in fields["exception"]


def test_a_truncated_pem_block_is_masked_to_the_end(out: io.StringIO) -> None:
    structlog.get_logger().error("BAD_KEY_FILE", content=FAKE_PEM[:90])
    [line] = lines_of(out)
    assert_no_secret(line)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=40), max_size=5),
       st.text(max_size=30))
def test_any_event_renders_as_one_line_that_parses_back(fields: dict, event: str) -> None:
    line = logfmt.render([("event", event), *fields.items()])
    parsed = parse_logfmt(line)
    assert [v for _, v in parsed] == [event, *fields.values()]
    assert len(line.splitlines()) <= 1
    assert "\n" not in line


async def test_sighup_reloads_the_level_and_a_bad_value_keeps_the_old_one(
        out: io.StringIO, autojump_clock: object) -> None:
    wanted = ["DEBUG", "NOISY"]
    log = structlog.get_logger()
    async with trio.open_nursery() as nursery:
        await nursery.start(reload_log_level_on_sighup, lambda: wanted.pop(0))
        os.kill(os.getpid(), signal.SIGHUP)
        await trio.sleep(0.1)
        log.debug("visible_now")
        os.kill(os.getpid(), signal.SIGHUP)
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    events = [dict(parse_logfmt(line)) for line in lines_of(out)]
    assert [e["event"] for e in events] == ["LOG_LEVEL_CHANGED", "visible_now",
                                            "LOG_LEVEL_RELOAD_FAILED"]
    assert (events[0]["before"], events[0]["after"]) == ("INFO", "DEBUG")
    assert events[2]["kept"] == "DEBUG"
    assert get_log_level() == "DEBUG"


# ---- issue 19: bounded lines ----------------------------------------------------------------

LINE_LIMIT = 16384  # bessai.bounds.MAX_LOG_LINE_CHARS, stated in the runbook


def test_a_12MB_field_becomes_one_bounded_line_with_a_marker(out: io.StringIO) -> None:
    structlog.get_logger().warning("COMMAND_REJECTED", reason="9" * 12_000_000, code="x")
    [line] = lines_of(out)
    assert len(line) <= LINE_LIMIT
    fields = dict(parse_logfmt(line))
    assert fields["event"] == "COMMAND_REJECTED"
    assert fields["reason"].endswith("…[+11998000 chars]")
    assert fields["code"] == "x"


def test_a_line_of_thousands_of_fields_keeps_its_head_and_counts_what_was_left_out(
        out: io.StringIO) -> None:
    structlog.get_logger().warning("MANY", **{f"k{i}": "\x00" * 100 for i in range(3000)})
    [line] = lines_of(out)
    assert len(line) <= LINE_LIMIT
    fields = dict(parse_logfmt(line))
    assert fields["event"] == "MANY"
    assert fields["level"] == "WARNING"
    assert fields["log_truncated"].endswith("_fields_left_out")


def test_a_lone_surrogate_is_escaped_so_the_line_is_not_lost(out: io.StringIO) -> None:
    structlog.get_logger().warning("COMMAND_REJECTED", command_id="a\ud800b")
    [line] = lines_of(out)
    line.encode("utf-8")
    assert 'command_id="a\\ud800b"' in line
    assert dict(parse_logfmt(line))["command_id"] == "a\ud800b"  # the parser unescapes it
