"""The terminal status screen as a person sees it: `bessai-run --simulator --screen` in a real
80x24 terminal (tmux), read back with `tmux capture-pane`, keys sent with `tmux send-keys`.

What it promises: nothing wider than 80 columns; the cloud and commands links and the active
command are on screen; a long event is wrapped, never cut, and the pane scrolls back; the full
log is in a file the screen names."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.procs import ROOT, base_env, free_port, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.emulator]
WIDTH, HEIGHT = 80, 24


class Tmux:
    """One private tmux server (its own socket) running one command in an 80x24 window."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        assert shutil.which("tmux"), "tmux is needed for this test (apt-get install tmux)"
        self.socket = f"bessai-test-{uuid.uuid4().hex[:8]}"
        self.env = env
        line = " ".join(shlex.quote(part) for part in command)
        self._tmux("new-session", "-d", "-s", "gw", "-x", str(WIDTH), "-y", str(HEIGHT),
                   f"cd {shlex.quote(str(ROOT))} && exec {line}")

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              env=self.env, capture_output=True, text=True, timeout=20,
                              check=False)
        assert done.returncode == 0 or args[0] in ("kill-server",), done.stderr
        return done.stdout

    def screen(self) -> list[str]:
        return self._tmux("capture-pane", "-p", "-t", "gw").splitlines()

    def joined(self) -> list[str]:
        """The screen with tmux's own wrapping undone: a line longer than the window shows."""
        return self._tmux("capture-pane", "-p", "-J", "-t", "gw").splitlines()

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "gw", *keys)

    def pid(self) -> int:
        return int(self._tmux("list-panes", "-t", "gw", "-F", "#{pane_pid}").split()[0])

    def wait_for(self, pattern: str, timeout_s: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.screen()
            if re.search(pattern, "\n".join(lines)):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ on screen within {timeout_s} s:\n"
                                     + "\n".join(lines))
            time.sleep(0.2)

    def kill(self) -> None:
        self._tmux("kill-server")


def test_status_screen_fits_80_columns_wraps_events_scrolls_and_logs_to_a_file(
        tmp_path, pubsub_emulator):
    tag = uuid.uuid4().hex[:8]
    env_file = tmp_path / "gateway.env"
    spool = tmp_path / "spool" / "outbox.sqlite"
    settings = {"SITE_ID": "screen-site", "INVERTER_IP": "127.0.0.1",
                "STATUS_BIND": f"127.0.0.1:{free_port()}", "SPOOL_PATH": str(spool),
                "SHUTDOWN_DEADLINE_S": "5",
                "GCP_PROJECT_ID": "bessai-screen", "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
                "PUBSUB_TOPIC": f"tel-{tag}", "PUBSUB_COMMANDS_TOPIC": f"cmd-{tag}",
                "PUBSUB_COMMANDS_SUBSCRIPTION": f"cmd-{tag}-sub"}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = base_env({"TERM": "xterm-256color"})
    tmux = Tmux([sys.executable, "-m", "bessai.cli.run", "--simulator", "--screen",
                 "--env-file", str(env_file)], env)
    try:
        tmux.wait_for(r"cloud link up")
        tmux.wait_for(r"SAFETY_DATA_READY")  # a command before the first reading is refused
        sent = run_cli(["--env-file", str(env_file), "command", "charge", "--power-w", "2000",
                        "--ttl-s", "300"], {})
        assert sent.returncode == 0, sent.stderr
        lines = tmux.wait_for(r"active command: charge 2000 W")
        text = "\n".join(lines)
        assert "commands link up" in text
        assert "full log:" in text
        assert str(spool.parent / "gateway.log") in text.replace("\n  ", "")  # wrapped, whole

        # A long event: a reload with two bad values (its line is far wider than 80 columns).
        env_file.write_text(env_file.read_text() + "POLL_INTERVAL_S=banana\nTEMP_MAX_C=999\n")
        os.kill(tmux.pid(), signal.SIGHUP)
        lines = tmux.wait_for(r"CONFIG_RELOAD_FAILED")
        assert all(len(line) <= WIDTH for line in tmux.joined()), "\n".join(tmux.joined())
        start = next(i for i, line in enumerate(lines) if "CONFIG_RELOAD_FAILED" in line)
        event = lines[start] + "".join(line[4:] for line in lines[start + 1:]
                                       if line.startswith("    "))
        assert "TEMP_MAX_C='999'" in event, "\n".join(lines)  # wrapped, not cut at 80

        tmux.keys("Up", "Up", "Up", "Up", "Up")
        tmux.wait_for(r"scrolled back 5 rows")
        tmux.keys("End")
        lines = tmux.wait_for(r"── events ─")

        tmux.keys("C-c")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "gw" in subprocess.run(
                ["tmux", "-L", tmux.socket, "ls"], env=env, capture_output=True,
                text=True, check=False).stdout:
            time.sleep(0.2)
    finally:
        tmux.kill()
    log = (spool.parent / "gateway.log").read_text()
    failed = next(line for line in log.splitlines() if "event=CONFIG_RELOAD_FAILED" in line)
    assert "POLL_INTERVAL_S='banana'" in failed
    assert "TEMP_MAX_C='999'" in failed
    assert "event=COMMAND_ACCEPTED" in log
    assert "event=GATEWAY_STOPPED" in log  # the file has it all, to the last line
    assert Path(env_file).exists()


def test_a_forced_exit_gives_the_terminal_back_with_echo_and_line_mode(tmp_path):
    """Ctrl-C twice (the second forces the exit, skipping every clean-up) must not leave the
    operator's terminal in the screen's key mode (no echo): checked with `stty` afterwards."""
    import socket

    with socket.socket() as hung:  # a collector that never answers: the stop is slow
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        env_file = tmp_path / "gateway.env"
        env_file.write_text(
            f"SITE_ID=screen-site\nINVERTER_IP=127.0.0.1\nSTATUS_BIND=127.0.0.1:{free_port()}\n"
            f"SPOOL_PATH={tmp_path / 'spool' / 'outbox.sqlite'}\n"
            f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{hung.getsockname()[1]}\n")
        modes = tmp_path / "stty.txt"
        run = " ".join(shlex.quote(p) for p in [sys.executable, "-m", "bessai.cli.run",
                                                "--simulator", "--screen", "--env-file",
                                                str(env_file)])
        tmux = Tmux(["sh", "-c", f"trap : INT; {run}; echo rc=$? > {modes}; stty -a >> {modes}; "
                     "sleep 30"],
                    base_env({"TERM": "xterm-256color"}))
        try:
            tmux.wait_for(r"inv1 +up")
            tmux.keys("C-c")
            log = tmp_path / "spool" / "gateway.log"  # the screen's full log
            deadline = time.monotonic() + 10
            while "SHUTDOWN_REQUESTED" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            tmux.keys("C-c")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "icanon" not in (
                    modes.read_text() if modes.exists() else ""):
                time.sleep(0.2)
        finally:
            tmux.kill()
    text = modes.read_text()
    assert text.startswith("rc=130"), text
    flags = text.split()
    assert "echo" in flags, text  # not "-echo"
    assert "icanon" in flags, text  # not "-icanon"
