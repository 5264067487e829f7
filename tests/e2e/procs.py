"""Real processes for the end-to-end tests: the simulator, `bessai-run`, the `bessai` CLI.

Each process runs with cwd = the repository root and its output read line by line by a thread,
stamped with the time it arrived, so a test can wait for a log line with a real-clock timeout.
`Proc.kill` ends the process (and only it); the fixtures in the tests call it at teardown.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import attrs

from bessai.cli.run import HARD_STOP_MARGIN_S
from bessai.settings import KNOWN_KEYS

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent environment without any gateway setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in KNOWN_KEYS and not k.startswith(("PUBSUB_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def logfmt_ts(line: str) -> float:
    """The ``ts=...Z`` of a gateway log line as epoch seconds."""
    match = re.search(r"ts=(\S+)Z", line)
    assert match, line
    return datetime.fromisoformat(match.group(1) + "+00:00").timestamp()


@attrs.define(eq=False)
class Proc:
    """A child process whose stdout+stderr lines are collected as they arrive."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = attrs.field(factory=list)
    _cond: threading.Condition = attrs.field(factory=threading.Condition)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, name: str, module: str, args: Sequence[str], env: Mapping[str, str],
              *, prefix: Sequence[str] = ()) -> Proc:
        """``prefix`` goes before the interpreter, e.g. ``ip netns exec NS`` (which execs the
        interpreter in place: the pid is the Python process's)."""
        popen = subprocess.Popen([*prefix, PYTHON, "-m", module, *args], cwd=ROOT, env=dict(env),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, text=True, bufsize=1)
        proc = cls(name, popen)
        proc._reader = threading.Thread(target=proc._read, daemon=True)
        proc._reader.start()
        return proc

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = 15.0, *, after: int = 0) -> str:
        """The first line (index >= ``after``) matching the regex; fails with the output."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reader_alive()):
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout_s} s "
                             f"(exit={self.popen.poll()}); output:\n{self.output()[-6000:]}")

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def matching(self, pattern: str, *, after: int = 0) -> list[str]:
        regex = re.compile(pattern)
        with self._cond:
            return [line for line in self.lines[after:] if regex.search(line)]

    def mark(self) -> int:
        """An index to pass as ``after=``: lines from now on."""
        with self._cond:
            return len(self.lines)

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        rc = self.popen.wait(timeout=timeout_s)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """``predicate()``'s first truthy value, polled every 0.1 s; fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def stop_within_deadline(gateway: Proc, deadline_s: float) -> None:
    """SIGTERM, then the gateway's own verdict on its SHUTDOWN_DEADLINE_S (``deadline_s``).

    The process judges the deadline on its own clock: a graceful stop that overran it logs
    SHUTDOWN_DEADLINE_EXCEEDED, one that even cancellation could not end is cut by the hard
    stop (exit 1), and one that finished in time exits 0 after GATEWAY_STOPPED. So this waits
    generously (a loaded test machine is not the gateway overrunning) and asserts the verdict;
    a process that hangs after GATEWAY_STOPPED (an exit hook) still fails the wait.
    """
    mark = gateway.mark()
    gateway.send(signal.SIGTERM)
    rc = gateway.wait(deadline_s + HARD_STOP_MARGIN_S + 10)
    tail = gateway.output()[-3000:]
    assert rc == 0, tail
    assert gateway.matching(r"event=GATEWAY_STOPPED", after=mark), tail
    assert not gateway.matching(r"event=SHUTDOWN_DEADLINE_EXCEEDED", after=mark), tail


def start_sim(port: int, *extra: str) -> Proc:
    """``python -m bessai.sim --port PORT ...``, returned once it listens."""
    proc = Proc.start("bessai-sim", "bessai.sim", ["--port", str(port), *extra], base_env({}))
    proc.wait_for(r"event=SIM_LISTENING", 20)
    return proc


def sim_port(sim: Proc) -> int:
    """The TCP port a started simulator listens on (from its SIM_LISTENING line)."""
    return int(sim.wait_for(r"event=SIM_LISTENING").split("port=")[1].split()[0])


def start_gateway(env: Mapping[str, str], *args: str) -> Proc:
    """``python -m bessai.cli.run --no-screen``, configured by ``env`` (not waited for)."""
    return Proc.start("bessai-run", "bessai.cli.run", ["--no-screen", *args], base_env(env))


def run_cli(args: Sequence[str], env: Mapping[str, str],
            timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m bessai.cli.main ARGS`` to completion."""
    return subprocess.run([PYTHON, "-m", "bessai.cli.main", *args], cwd=ROOT,
                          env=base_env(env), capture_output=True, text=True, timeout=timeout_s,
                          check=False)
