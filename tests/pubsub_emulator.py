"""Start and stop Google's Pub/Sub emulator (no pytest here: the benchmark uses it too).

gcloud starts the Java emulator as a child that outlives gcloud, so it runs in its own
process group (start_new_session=True) and the whole group is killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx

INSTALL_HINT = (
    "Google's Pub/Sub emulator is needed: install the Google Cloud CLI "
    "(https://cloud.google.com/sdk/docs/install) and its component with "
    "`gcloud components install pubsub-emulator beta` "
    "(or `apt-get install google-cloud-cli-pubsub-emulator`)")


class EmulatorUnavailable(RuntimeError):
    """gcloud or its emulator component is missing or did not start; the message says why."""


@attrs.frozen
class Emulator:
    host: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_emulator(workdir: Path | None = None, *, timeout_s: float = 60) -> Iterator[Emulator]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorUnavailable(f"gcloud is not on PATH. {INSTALL_HINT}")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        log_path = workdir / "emulator.log"
        log = stack.enter_context(open(log_path, "wb"))
        port = _free_port()
        proc = subprocess.Popen(
            [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}",
             f"--data-dir={workdir / 'data'}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        host = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    text = log_path.read_text(errors="replace")[-2000:]
                    raise EmulatorUnavailable(
                        f"the Pub/Sub emulator exited ({proc.returncode}):\n{text}\n"
                        f"If the component is missing: {INSTALL_HINT}")
                try:
                    r = httpx.get(f"http://{host}/v1/projects/x/topics", timeout=1)
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise EmulatorUnavailable(
                        f"the Pub/Sub emulator did not answer on {host} within {timeout_s} s; "
                        f"see {log_path}")
                time.sleep(0.2)
            yield Emulator(host)
        finally:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def create_topic(emulator: Emulator, project: str, topic: str,
                 subscription: str | None = None) -> None:
    base = emulator.base_url
    r = httpx.put(f"{base}/v1/projects/{project}/topics/{topic}", timeout=10)
    if r.status_code != 200:
        raise RuntimeError(f"creating topic {topic}: {r.status_code} {r.text}")
    if subscription:
        r = httpx.put(f"{base}/v1/projects/{project}/subscriptions/{subscription}",
                      json={"topic": f"projects/{project}/topics/{topic}",
                            "ackDeadlineSeconds": 60}, timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"creating subscription {subscription}: {r.status_code} {r.text}")
