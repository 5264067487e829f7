"""Google's Pub/Sub emulator as a local stand-in for the cloud (demo and tests).

`PubSubEmulator` starts ``gcloud beta emulators pubsub start`` on 127.0.0.1 in its own process
group (gcloud leaves the Java emulator running as a child that outlives it), waits until the REST
API answers, and kills the whole group on exit. `EmulatorAdmin` creates topics and subscriptions
and pulls messages back over the same REST API the gateway uses (the emulator needs no auth).

The emulator cannot come from a package registry: when gcloud or its component is missing,
`EmulatorUnavailable` says how to install it.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import httpx

INSTALL_HINT = (
    "install the Google Cloud CLI and its emulator component: "
    "`gcloud components install pubsub-emulator beta` "
    "(or `apt-get install google-cloud-cli-pubsub-emulator`)")


class EmulatorUnavailable(RuntimeError):
    """gcloud or the emulator component is missing, or the emulator did not come up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define
class PubSubEmulator:
    """A running emulator; use as a context manager. ``host`` is the PUBSUB_EMULATOR_HOST value."""

    port: int = attrs.field(factory=free_port)
    startup_timeout_s: float = 60.0
    log_path: Path | None = None
    listen: str = "127.0.0.1"
    """The address the emulator binds (``0.0.0.0`` inside a network namespace of its own)."""
    address: str | None = None
    """The address clients (and the readiness probe) use; ``listen`` when None."""
    command_prefix: tuple[str, ...] = ()
    """Prepended to the gcloud command line, e.g. ``("ip", "netns", "exec", "cloud")``."""
    _proc: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False, repr=False)
    _workdir: Path | None = attrs.field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return f"{self.address or self.listen}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    @staticmethod
    def available() -> bool:
        return shutil.which("gcloud") is not None

    def start(self) -> PubSubEmulator:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise EmulatorUnavailable(f"gcloud is not on PATH — {INSTALL_HINT}")
        self._workdir = Path(tempfile.mkdtemp(prefix="bessai-pubsub-emulator-"))
        if self.log_path is None:
            self.log_path = self._workdir / "emulator.log"
        data_dir = self._workdir / "data"
        data_dir.mkdir()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [*self.command_prefix, gcloud, "beta", "emulators", "pubsub", "start",
                 f"--host-port={self.listen}:{self.port}", f"--data-dir={data_dir}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        try:
            return self._wait_ready()
        except BaseException:  # Ctrl-C/SIGTERM while it starts: do not leave the JVM behind
            self.stop()
            raise

    def _wait_ready(self) -> PubSubEmulator:
        assert self._proc is not None
        assert self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout_s  # wall-clock: a real process
        while True:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self._proc = None
                raise EmulatorUnavailable(
                    f"the Pub/Sub emulator exited at start:\n{tail}\nIf the component is "
                    f"missing: {INSTALL_HINT}")
            try:
                answer = httpx.get(f"{self.base_url}/v1/projects/probe/topics", timeout=1)
                if answer.status_code == 200:
                    self._warm_up()
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:  # wall-clock
                self.stop()
                raise EmulatorUnavailable(
                    f"the Pub/Sub emulator did not answer on {self.host} within "
                    f"{self.startup_timeout_s:.0f} s; see {self.log_path}")
            time.sleep(0.2)  # wall-clock: polling a real process before any Trio run

    def _warm_up(self) -> None:
        """One publish and pull on a scratch topic. The JVM answers its first publish slowly
        (class loading, JIT); a caller under virtual time would see that as a timeout."""
        admin = EmulatorAdmin(self.base_url, "warm-up")
        admin.create_topic("warm-up")
        admin.create_subscription("warm-up-sub", "warm-up")
        for _ in range(3):
            httpx.post(f"{self.base_url}/v1/projects/warm-up/topics/warm-up:publish",
                       json={"messages": [{"data": "d2FybQ==", "attributes": {"k": "v"}}]},
                       timeout=30).raise_for_status()
        admin.pull_all("warm-up-sub", idle_rounds=1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@attrs.define
class EmulatorAdmin:
    """Topic and subscription plumbing on the emulator (synchronous, real clock)."""

    base_url: str
    project: str

    def _put(self, path: str, body: dict[str, Any] | None = None) -> None:
        answer = httpx.put(f"{self.base_url}/v1/projects/{self.project}/{path}",
                           json=body or {}, timeout=10)
        if answer.status_code not in (200, 409):  # 409: already exists
            raise RuntimeError(f"emulator PUT {path} answered {answer.status_code}: "
                               f"{answer.text[:200]}")

    def create_topic(self, topic: str) -> None:
        self._put(f"topics/{topic}")

    def create_subscription(self, subscription: str, topic: str) -> None:
        self._put(f"subscriptions/{subscription}",
                  {"topic": f"projects/{self.project}/topics/{topic}", "ackDeadlineSeconds": 60})

    def pull(self, subscription: str, *, max_messages: int = 1000,
             ack: bool = True) -> list[dict[str, Any]]:
        """One pull: messages with ``data`` decoded from base64 (bytes) and their attributes."""
        url = f"{self.base_url}/v1/projects/{self.project}/subscriptions/{subscription}"
        answer = httpx.post(f"{url}:pull", timeout=30,
                            json={"maxMessages": max_messages, "returnImmediately": True})
        answer.raise_for_status()
        received = answer.json().get("receivedMessages", [])
        if ack and received:
            httpx.post(f"{url}:acknowledge",
                       json={"ackIds": [m["ackId"] for m in received]},
                       timeout=30).raise_for_status()
        out = []
        for item in received:
            message = item["message"]
            out.append({"data": base64.b64decode(message.get("data", "")),
                        "attributes": message.get("attributes", {}),
                        "message_id": message.get("messageId")})
        return out

    def pull_all(self, subscription: str, *, idle_rounds: int = 2) -> list[dict[str, Any]]:
        """Pull until ``idle_rounds`` consecutive pulls come back empty."""
        out: list[dict[str, Any]] = []
        idle = 0
        while idle < idle_rounds:
            batch = self.pull(subscription)
            if batch:
                out.extend(batch)
                idle = 0
            else:
                idle += 1
        return out
