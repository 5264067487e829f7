"""The live one-screen status that `bessai-run` shows in a terminal.

It renders the same status document as ``GET /status`` (`Gateway.status`), so what an operator
sees on screen and what the health check sees never disagree. In a container (stdout is not a
terminal) there is no screen: the gateway logs instead.

Promises:

* **fits the terminal, 80 columns included**: every line is at most the terminal's width;
* **the events are never cut**: each log line is wrapped, not clipped, in a pane that scrolls
  (Up/Down one line, PgUp/PgDn a page, End or ``f`` back to following the newest);
* **nothing is lost while the screen is on**: every log line also goes, whole, to a file
  (``LOG_FILE``, default ``gateway.log`` beside the spool), rotated at `LOG_FILE_MAX_BYTES`
  (one ``.1`` kept). The screen names the file.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from collections import deque
from pathlib import Path
from typing import IO, Any, TextIO

import attrs
import trio

CLEAR = "\x1b[H\x1b[2J"
LOG_FILE_MAX_BYTES = 20 * 1024 * 1024
KEEP_LINES = 2000
"""Log lines the screen keeps for scrolling back (the file keeps them all)."""
_MIN_WIDTH = 40


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


_LINE = re.compile(r"^ts=\S*T(\d\d:\d\d:\d\d)\S* level=(\w+) event=(.*)$")


def _short(line: str) -> str:
    """``ts=2026-...T09:58:55.611Z level=INFO event=X k=v`` → ``09:58:55 INFO X k=v``."""
    match = _LINE.match(line)
    return f"{match[1]} {match[2]} {match[3]}" if match else line


def _fit(text: str, width: int) -> str:
    """One status line within ``width`` (status lines are short; an id may be shortened)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _link(name: str, link: dict[str, Any] | None, extra: str = "") -> str:
    if not link:
        return f"{name} off"
    state = link.get("state", "?")
    text = f"{name} link {state}" + (f" ({extra})" if extra else "")
    if state != "up" and link.get("reason"):
        text += f": {link['reason']}"
    return text


def header(status: dict[str, Any], width: int = 80, log_file: str | None = None) -> list[str]:
    """The status part of the screen, each line within ``width``."""
    version = status.get("version")
    tree = "running" if status.get("tree_running") else "NOT running"
    lines = [f"BESSAI {version or ''} · site {status.get('site')} · tree {tree} · uplink "
             f"{status.get('uplink_mode')}", ""]
    lines.append(f"{'device':<8} {'link':<8} {'SOC %':>6} {'power W':>8} {'temp °C':>7} "
                 f"{'beats':>6}  safety")
    for device_id, site in (status.get("sites") or {}).items():
        values = site.get("values") or {}
        safety = site.get("safety") or {}
        rules = ",".join(r.get("rule", "?") for r in safety.get("rules", [])) or "ok"
        hb = site.get("heartbeat") or {}
        lines.append(
            f"{device_id[:8]:<8} {str(site['link'].get('state', '?'))[:8]:<8} "
            f"{_fmt(values.get('soc')):>6} {_fmt(values.get('battery_power'), digits=0):>8} "
            f"{_fmt(values.get('battery_temp')):>7} {_fmt(hb.get('beats')):>6}  {rules}")
        forcing = site.get("forcing")
        if forcing:
            lines.append(f"  active command: {forcing['action']} {forcing['power_w']:.0f} W, "
                         f"lease renewed {forcing.get('lease_renewed_s_ago', '?')} s ago, "
                         f"id {forcing['command_id']}")
    links = status.get("links") or {}
    cloud = links.get("cloud")
    commands = links.get("commands")
    lines += ["", _link("cloud", cloud, f"published {cloud.get('published')}" if cloud else ""),
              _link("commands", commands,
                    f"handled {commands.get('handled')}" if commands else "")]
    spool = status.get("spool") or {}
    lines.append(f"spool depth {_fmt(spool.get('depth'))}, oldest pending "
                 f"{_fmt(spool.get('oldest_pending_age_s'), ' s')}, dead letters "
                 f"{_fmt(spool.get('dead_letters'))}")
    trust = status.get("commands_trust")
    if trust:
        clock = trust.get("clock") or {}
        keys = (trust.get("keys") or {}).get("key_ids") or []
        signed = f"signed ({len(keys)} keys)" if trust.get("authenticated") else \
            "NOT AUTHENTICATED"
        untrusted = "" if clock.get("trusted", True) else \
            "   CLOCK UNTRUSTED: charge/discharge refused"
        lines.append(f"command trust {signed}   clock skew {_fmt(clock.get('skew_s'), ' s')}"
                     f"{untrusted}")
    restarts = {name: a["restarts"] for name, a in (status.get("actors") or {}).items()
                if a.get("restarts")}
    lines.append(f"actor restarts: {restarts or 'none'}")
    if log_file:
        lines.append(f"full log: {log_file}")
    return [row for line in lines for row in _wrap(line, width)]


def _wrap(line: str, width: int) -> list[str]:
    """A status line within ``width``: wrapped (a long path or reason stays readable)."""
    return textwrap.wrap(line, width=width, subsequent_indent="  ", break_long_words=True,
                         break_on_hyphens=False) or [""]


def wrap_events(log_lines: list[str], width: int) -> list[str]:
    """Every log line, shortened (time, level, event...) and wrapped to ``width``: nothing cut."""
    rows: list[str] = []
    for line in log_lines:
        rows += textwrap.wrap(_short(line), width=width, subsequent_indent="    ",
                              break_long_words=True, break_on_hyphens=False) or [""]
    return rows


def render(status: dict[str, Any], log_tail: list[str] | None = None, width: int = 80,
           height: int = 24, scroll: int = 0, log_file: str | None = None) -> str:
    """The whole screen as text: the status, then the events pane filling the rest of
    ``height``, ``scroll`` rows back from the newest (0: following)."""
    width = max(width, _MIN_WIDTH)
    top = header(status, width, log_file)
    footer = _fit("Ctrl-C: stop (twice: force) · Up/Down PgUp/PgDn: scroll · End: follow",
                  width)
    rows = wrap_events(log_tail or [], width)
    pane = max(3, height - len(top) - 3)
    scroll = max(0, min(scroll, max(0, len(rows) - pane)))
    end = len(rows) - scroll
    shown = rows[max(0, end - pane):end]
    title = "events" + (f" (scrolled back {scroll} rows; End follows)" if scroll else "")
    rule = (f"── {title} " + "─" * width)[:width]
    return "\n".join([*top, rule, *shown, footer]) + "\n"


@attrs.define
class LogTail:
    """A file-like sink for the log while the screen is on: keeps the last lines for the
    events pane and writes every line, whole, to ``log_file`` (rotated at ``max_bytes``)."""

    size: int = KEEP_LINES
    log_file: Path | None = None
    max_bytes: int = LOG_FILE_MAX_BYTES
    lines: deque[str] = attrs.field(init=False)
    _partial: str = ""
    _file: IO[str] | None = attrs.field(default=None, init=False)
    _written: int = attrs.field(default=0, init=False)
    error: str | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.lines = deque(maxlen=self.size)
        if self.log_file is not None:
            self._open()

    def _open(self) -> None:
        assert self.log_file is not None
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.log_file.open("a", encoding="utf-8", buffering=1)
            self._written = self.log_file.stat().st_size
        except OSError as error:
            self._file = None
            self.error = f"cannot write the log file {self.log_file}: {error.strerror or error}"
            self.lines.append(f"LOG_FILE_UNAVAILABLE {self.error}")

    def write(self, text: str) -> int:
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)
        if self._file is not None and complete:
            self._to_file("\n".join(complete) + "\n")
        return len(text)

    def _to_file(self, text: str) -> None:
        assert self._file is not None
        assert self.log_file is not None
        try:
            if self._written + len(text) > self.max_bytes:
                self._file.close()
                os.replace(self.log_file, self.log_file.with_name(self.log_file.name + ".1"))
                self._file = self.log_file.open("a", encoding="utf-8", buffering=1)
                self._written = 0
            self._file.write(text)
            self._written += len(text)
        except OSError as error:  # a full disk must not take the screen (or the gateway) down
            self.error = f"log file {self.log_file} failed: {error.strerror or error}"
            self.lines.append(f"LOG_FILE_UNAVAILABLE {self.error}")
            self._file = None

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError:
                pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_KEYS = {b"\x1b[A": 1, b"\x1b[B": -1, b"k": 1, b"j": -1}
_PAGE = {b"\x1b[5~": 1, b"\x1b[6~": -1}
_FOLLOW = (b"\x1b[F", b"\x1b[4~", b"\x1bOF", b"f")


@attrs.define
class _View:
    scroll: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)

    def key(self, data: bytes, page_rows: int) -> None:
        for code, step in _KEYS.items():
            self.scroll += step * data.count(code)
        for code, step in _PAGE.items():
            self.scroll += step * page_rows * data.count(code)
        if any(code in data for code in _FOLLOW):
            self.scroll = 0
        self.scroll = max(0, self.scroll)
        self.changed.set()
        self.changed = trio.Event()


async def _read_keys(view: _View, page_rows: int) -> None:
    """Keys from the terminal (cbreak mode, restored on exit); none when stdin is no tty."""
    if not sys.stdin.isatty():
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    _SAVED_TERMINAL[:] = [(fd, saved)]
    tty.setcbreak(fd)
    stream = trio.lowlevel.FdStream(os.dup(fd))
    try:
        while True:
            data = await stream.receive_some(64)
            if not data:
                return
            view.key(data, page_rows)
    finally:
        restore_terminal()
        await trio.aclose_forcefully(stream)


_SAVED_TERMINAL: list[tuple[int, Any]] = []


def restore_terminal() -> None:
    """Put the terminal back as the screen found it (echo, line mode). Also called on a forced
    exit, which skips every ``finally``: an operator must not be left typing blind."""
    while _SAVED_TERMINAL:
        fd, saved = _SAVED_TERMINAL.pop()
        try:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except (OSError, ImportError):
            pass


async def show(status: Any, out: TextIO, tail: LogTail, interval_s: float = 1.0) -> None:
    """Redraw the screen every ``interval_s`` (and at once on a key) until cancelled."""
    view = _View()
    log_file = str(tail.log_file) if tail.log_file is not None and tail.error is None else None
    async with trio.open_nursery() as nursery:
        size = shutil.get_terminal_size((80, 24))
        nursery.start_soon(_read_keys, view, max(3, size.lines - 14))
        while True:
            size = shutil.get_terminal_size((80, 24))
            out.write(CLEAR + render(status(), list(tail.lines), width=size.columns,
                                     height=size.lines, scroll=view.scroll,
                                     log_file=log_file).rstrip("\n"))
            out.flush()
            with trio.move_on_after(interval_s):
                await view.changed.wait()
