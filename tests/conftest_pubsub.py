"""Google's Pub/Sub emulator as a real peer, plus helpers to create topics and pull them back.

Loaded as a pytest plugin from tests/conftest.py. The ``pubsub_emulator`` fixture starts
``gcloud beta emulators pubsub start --host-port=127.0.0.1:<free port>`` once per session in its
own process group (gcloud leaves the Java emulator running as a child that outlives it), waits
until ``GET /v1/projects/x/topics`` answers, and kills the whole group at teardown.

If gcloud or the emulator component is missing the tests FAIL with the install command: the
emulator cannot come from a package registry, so a silent skip would hide that the uplink was
never tested against a real peer.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest

INSTALL_HINT = (
    "Google's Pub/Sub emulator is needed: install the Google Cloud CLI "
    "(https://cloud.google.com/sdk/docs/install) and its component with "
    "`gcloud components install pubsub-emulator beta` "
    "(or `apt-get install google-cloud-cli-pubsub-emulator`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.frozen
class Emulator:
    host: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.fail(f"gcloud is not on PATH. {INSTALL_HINT}", pytrace=False)
    port = _free_port()
    log_path = tmp_path_factory.mktemp("pubsub-emulator") / "emulator.log"
    (log_path.parent / "data").mkdir()
    log = open(log_path, "wb")  # noqa: SIM115 - kept open for the emulator's lifetime
    proc = subprocess.Popen(
        [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}",
         f"--data-dir={log_path.parent / 'data'}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                text = Path(log_path).read_text(errors="replace")[-2000:]
                pytest.fail(f"the Pub/Sub emulator exited ({proc.returncode}):\n{text}\n"
                            f"If the component is missing: {INSTALL_HINT}", pytrace=False)
            try:
                if httpx.get(f"http://{host}/v1/projects/x/topics", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Pub/Sub emulator did not answer on {host} within 60 s; "
                            f"see {log_path}", pytrace=False)
            time.sleep(0.2)
        yield Emulator(host)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        log.close()


@attrs.define
class PubsubTopic:
    """A fresh topic with one subscription on the emulator; `pull_all` reads it back."""

    emulator: Emulator
    project: str
    topic: str
    subscription: str

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"

    def pull_all(self, *, idle_rounds: int = 2) -> list[dict]:
        """Every message currently in the subscription (acked), as dicts with decoded data.

        Synchronous (real clock): call it from a thread (`trio.to_thread.run_sync`) in
        virtual-time tests, so no Trio deadline can fire while the emulator answers.
        """
        out: list[dict] = []
        url = f"{self.emulator.base_url}/v1/{self.subscription_path}"
        empty = 0
        with httpx.Client(timeout=30) as client:
            while empty < idle_rounds:
                r = client.post(f"{url}:pull", json={"maxMessages": 1000,
                                                     "returnImmediately": True})
                r.raise_for_status()
                received = r.json().get("receivedMessages", [])
                if not received:
                    empty += 1
                    continue
                empty = 0
                for m in received:
                    msg = m["message"]
                    out.append({"data": base64.b64decode(msg.get("data", "")),
                                "attributes": msg.get("attributes", {}),
                                "messageId": msg["messageId"]})
                ack = client.post(f"{url}:acknowledge",
                                  json={"ackIds": [m["ackId"] for m in received]})
                ack.raise_for_status()
        return out


def make_topic(emulator: Emulator, *, project: str = "bessai-test") -> PubsubTopic:
    name = f"t-{uuid.uuid4().hex[:10]}"
    topic = PubsubTopic(emulator, project, name, f"{name}-sub")
    r = httpx.put(f"{emulator.base_url}/v1/{topic.topic_path}", timeout=10)
    assert r.status_code == 200, r.text
    r = httpx.put(f"{emulator.base_url}/v1/{topic.subscription_path}",
                  json={"topic": topic.topic_path, "ackDeadlineSeconds": 60}, timeout=10)
    assert r.status_code == 200, r.text
    return topic


@pytest.fixture
def pubsub_topic(pubsub_emulator: Emulator) -> PubsubTopic:
    return make_topic(pubsub_emulator)
