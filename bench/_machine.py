"""Describe the machine a benchmark ran on, and write its results table.

Every benchmark heads its `bench/results/<name>.md` with the date (UTC, to the minute) and the
machine: `uname -m`, the number of cores and the CPU model from /proc/cpuinfo. This module is the
one place that reads those facts, so every table states them the same way. Reading never fails:
a missing /proc/cpuinfo (not Linux) falls back to `platform.processor()`, then "unknown".
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The first "model name" in /proc/cpuinfo, else `platform.processor()`, else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_description() -> str:
    """E.g. "x86_64, 2 cores, AMD EPYC 7B13": `uname -m`, core count, CPU model."""
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}"


def utc_now() -> str:
    """The current time as "YYYY-MM-DD HH:MM UTC", the stamp every results table carries."""
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"


def cell(value: object) -> str:
    """A figure as a results table shows it: ``-`` for none, a float in its shortest form."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def write_results(path: Path, text: str) -> None:
    """Write a results table, creating bench/results/ if it is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish_table(path: Path, lines: list[str], *, run: str | None = None) -> str:
    """Print a results table and write it to ``path``; ``run`` (a module, e.g.
    ``bench.device_bench``) ends it with the command that re-runs it. Returns the text."""
    if run is not None:
        lines = [*lines, "", f"Run: `/work/venv/bin/python -m {run}`."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(path, text)
    return text
