"""Structured logs: logfmt on stdout, one event per line, secrets never written.

Actors log with ``structlog.get_logger()``; operator events are UPPER_SNAKE and documented in
ops/RUNBOOK.md, debug events lower_snake::

    log = structlog.get_logger().bind(site="plant-1", device="inv1")
    log.critical("SAFETY_BLOCK", rule="soc_min", soc=4.2, limit=5.0)
    # ts=2026-11-27T09:17:51.123Z level=CRITICAL event=SAFETY_BLOCK rule=soc_min soc=4.2
    #   limit=5.0 site=plant-1 device=inv1

Invariants:

* every line starts ``ts=<ISO 8601 UTC, Z> level=<LEVEL> event=<event>`` (the runbook greps
  ``level=CRITICAL event=SAFETY_BLOCK``), the call's own fields follow, then ``site``,
  ``device``, ``logger`` and ``exception``;
* one event is one line: tracebacks are folded (newlines escaped), see `bessai.observe.logfmt`;
* every field, the event and the traceback pass through `bessai.observe.redact` last thing
  before rendering;
* stdlib logging (pymodbus, httpx, the OTel SDK) is routed into the same format at WARNING and
  above, through the same lock, so lines from threads never interleave;
* the level can change at runtime (`set_log_level`, e.g. on SIGHUP) without reconfiguring.

The OTLP exporter's own per-attempt error lines and the batch processor's "queue full" warnings
are silenced: `bessai.observe.otel` replaces them with counted drops and one
``TELEMETRY_EXPORT_FAILING`` / ``TELEMETRY_EXPORT_RECOVERED`` line per transition.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
import trio

from bessai.clock import WallClock, system_wall_clock
from bessai.observe import logfmt
from bessai.observe.redact import redact_fields

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HEAD = ("ts", "level", "event")
_TAIL = ("site", "device", "logger", "exception")
_QUIET_LOGGERS = (
    "opentelemetry.exporter.otlp",       # per-attempt export errors: counted drops instead
    "opentelemetry.sdk._shared_internal",  # "Queue full, dropping Span": counted drops instead
)
_ERROR_ONLY_LOGGERS = (
    "actors",  # child_failed warnings: the tree's event hook logs ACTOR_CRASHED/RESTARTED instead
)
_STDLIB_EVENT = re.compile(r"^([a-z][a-z0-9]*(?:_[a-z0-9]+)+) (\S+=.*)$", re.DOTALL)
"""A stdlib message written as ``lower_snake_event key=value ...`` (the actors runtime's
style): its first word becomes the event and the rest ``detail``, not one long event."""


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = str(level).strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(
            f"LOG_LEVEL={level!r} is not a log level — set it to one of {', '.join(LEVELS)}"
        )
    return logging.getLevelName(name)


def _iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _ordered(event_dict: dict[str, Any]) -> list[tuple[str, Any]]:
    head = [(k, event_dict[k]) for k in _HEAD if k in event_dict]
    body = [(k, v) for k, v in event_dict.items() if k not in _HEAD and k not in _TAIL]
    tail = [(k, event_dict[k]) for k in _TAIL if k in event_dict]
    return head + body + tail


class LineStream(Protocol):
    """Where log lines go: stdout, or the status screen's `bessai.cli.screen.LogTail`."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


class _LineSink(logging.Handler):
    """Writes finished lines to the stream under one lock; also the stdlib handler."""

    def __init__(self, stream: LineStream, wall_clock: WallClock, site_id: str | None) -> None:
        super().__init__()
        self.stream = stream
        self.wall_clock = wall_clock
        self.site_id = site_id

    def write_line(self, line: str) -> None:
        with self.lock or threading.RLock():
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except Exception:  # a closed stdout must not crash an actor
                pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            event: dict[str, Any] = {
                "ts": _iso_utc(self.wall_clock()),
                "level": record.levelname,
                "event": message,
            }
            split = _STDLIB_EVENT.match(message)
            if split is not None:
                event["event"], event["detail"] = split.groups()
            event["logger"] = record.name
            if self.site_id is not None:
                event["site"] = self.site_id
            if record.exc_info:
                event["exception"] = logging.Formatter().formatException(record.exc_info)
            self.write_line(logfmt.render(_ordered(redact_fields(event))))
        except Exception:
            pass


class _LineLogger:
    """The structlog "wrapped logger": receives the rendered line whatever the level method."""

    def __init__(self, sink: _LineSink) -> None:
        self._sink = sink

    def msg(self, line: str) -> None:
        self._sink.write_line(line)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _State:
    sink: _LineSink | None = None
    level: int = logging.INFO


_METHOD_LEVEL = {"warn": "WARNING", "exception": "ERROR", "fatal": "CRITICAL", "msg": "INFO"}


def _add_level(_: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Stamp LEVEL and drop events below the current threshold.

    Filtering here (not with a filtering wrapper class) is what makes `set_log_level` reach
    loggers that actors bound once at construction.
    """
    name = _METHOD_LEVEL.get(method_name) or method_name.upper()
    if name in LEVELS and logging.getLevelName(name) < _State.level:
        raise structlog.DropEvent
    event_dict["level"] = name
    return event_dict


def _make_timestamper(wall_clock: WallClock):
    def add_ts(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["ts"] = _iso_utc(wall_clock())
        return event_dict
    return add_ts


def _make_site_adder(site_id: str | None):
    def add_site(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if site_id is not None:
            event_dict.setdefault("site", site_id)
        return event_dict
    return add_site


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return redact_fields(event_dict)


def _render(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    return logfmt.render(_ordered(event_dict))


def configure_logging(
    level: str | int = "INFO",
    stream: LineStream | None = None,
    site_id: str | None = None,
    *,
    wall_clock: WallClock = system_wall_clock,
) -> None:
    """Route structlog and stdlib logging to logfmt lines on ``stream`` (default: stdout).

    Safe to call again (tests, CLI re-configuration): the previous handler is replaced.
    ``wall_clock`` stamps ``ts`` (inject `bessai.clock.trio_wall_clock` in virtual-time tests).
    """
    levelno = _level_number(level)
    sink = _LineSink(stream if stream is not None else sys.stdout, wall_clock, site_id)
    root = logging.getLogger()
    if _State.sink is not None:
        root.removeHandler(_State.sink)
    _State.sink = sink
    root.addHandler(sink)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    for name in _ERROR_ONLY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            _add_level,
            structlog.contextvars.merge_contextvars,
            _make_timestamper(wall_clock),
            _make_site_adder(site_id),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _redact,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=lambda *_args: _LineLogger(sink),
        cache_logger_on_first_use=False,
    )
    set_log_level(levelno)


def reset_logging() -> None:
    """Undo `configure_logging` (tests): structlog defaults, root logger as Python leaves it."""
    root = logging.getLogger()
    if _State.sink is not None:
        root.removeHandler(_State.sink)
        _State.sink = None
    root.setLevel(logging.WARNING)
    for name in (*_QUIET_LOGGERS, *_ERROR_ONLY_LOGGERS):
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.captureWarnings(False)
    _State.level = logging.INFO
    structlog.reset_defaults()


def set_log_level(level: str | int) -> None:
    """Change the threshold at runtime (SIGHUP reload). stdlib stays at WARNING or above."""
    levelno = _level_number(level)
    _State.level = levelno
    logging.getLogger().setLevel(max(levelno, logging.WARNING))


def get_log_level() -> str:
    return logging.getLevelName(_State.level)


async def reload_log_level_on_sighup(
    read_level: Callable[[], str], task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Until cancelled: on each SIGHUP, apply ``read_level()`` (e.g. LOG_LEVEL re-read from the
    settings). A bad value is logged and the current level kept; the gateway never dies of it.
    Must run in the main thread (Trio's signal handling).
    """
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            before = get_log_level()
            try:
                set_log_level(read_level())
            except Exception as error:
                structlog.get_logger("bessai.observe.logs").error(
                    "LOG_LEVEL_RELOAD_FAILED", error=str(error), kept=before)
                continue
            structlog.get_logger("bessai.observe.logs").warning(
                "LOG_LEVEL_CHANGED", before=before, after=get_log_level())
