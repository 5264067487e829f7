"""The live one-screen status that `bessai-run` shows in a terminal.

It renders the same status document as ``GET /status`` (`Gateway.status`), so what an operator
sees on screen and what the health check sees never disagree. In a container (stdout is not a
terminal) there is no screen: the gateway logs instead.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, TextIO

import attrs
import trio

CLEAR = "\x1b[H\x1b[2J"


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


def render(status: dict[str, Any], log_tail: list[str] | None = None, width: int = 100) -> str:
    """The status document as lines of text (no colour, fits 100 columns)."""
    lines = [f"BESSAI Edge Gateway — site {status.get('site')}   "
             f"tree {'running' if status.get('tree_running') else 'NOT running'}   "
             f"uplink {status.get('uplink_mode')}", ""]
    lines.append(f"{'device':<10} {'link':<12} {'SOC %':>7} {'power W':>9} {'temp °C':>8} "
                 f"{'safety':<28} {'heartbeats':>10}")
    for device_id, site in (status.get("sites") or {}).items():
        values = site.get("values") or {}
        safety = site.get("safety") or {}
        rules = ",".join(r.get("rule", "?") for r in safety.get("rules", [])) or "ok"
        hb = site.get("heartbeat") or {}
        lines.append(
            f"{device_id:<10} {site['link'].get('state', '?'):<12} "
            f"{_fmt(values.get('soc')):>7} {_fmt(values.get('battery_power'), digits=0):>9} "
            f"{_fmt(values.get('battery_temp')):>8} {rules[:28]:<28} {_fmt(hb.get('beats')):>10}")
        forcing = site.get("forcing")
        if forcing:
            lines.append(f"{'':<10} forcing {forcing['action']} {forcing['power_w']:.0f} W "
                         f"(command {forcing['command_id']})")
    spool = status.get("spool") or {}
    cloud = (status.get("links") or {}).get("cloud") or {}
    lines += ["",
              f"cloud link {cloud.get('state', 'off')}   spool depth {_fmt(spool.get('depth'))}"
              f"   oldest pending {_fmt(spool.get('oldest_pending_age_s'), ' s')}"
              f"   dead letters {_fmt(spool.get('dead_letters'))}"]
    trust = status.get("commands_trust")
    if trust:
        clock = trust.get("clock") or {}
        keys = (trust.get("keys") or {}).get("key_ids") or []
        signed = f"signed ({len(keys)} keys)" if trust.get("authenticated") else \
            "NOT AUTHENTICATED"
        untrusted = "" if clock.get("trusted", True) else \
            "   CLOCK UNTRUSTED: charge/discharge refused"
        lines.append(f"commands {signed}   clock skew {_fmt(clock.get('skew_s'), ' s')}"
                     f"{untrusted}")
    restarts = {name: a["restarts"] for name, a in (status.get("actors") or {}).items()
                if a.get("restarts")}
    lines.append(f"actor restarts: {restarts or 'none'}")
    if log_tail:
        lines += ["", "recent log lines:"] + [_short(line)[:width] for line in log_tail]
    lines += ["", "Ctrl-C stops gracefully (spool committed, Modbus closed); twice forces exit."]
    return "\n".join(lines) + "\n"


@attrs.define
class LogTail:
    """A file-like sink that keeps the last lines written, for the screen's log panel."""

    size: int = 8
    lines: deque[str] = attrs.field(init=False)
    _partial: str = ""

    def __attrs_post_init__(self) -> None:
        self.lines = deque(maxlen=self.size)

    def write(self, text: str) -> int:
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        pass


async def show(status: Any, out: TextIO, tail: LogTail, interval_s: float = 1.0) -> None:
    """Redraw the screen every ``interval_s`` until cancelled."""
    while True:
        out.write(CLEAR + render(status(), list(tail.lines)))
        out.flush()
        await trio.sleep(interval_s)
