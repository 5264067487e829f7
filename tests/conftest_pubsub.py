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
import uuid
from collections.abc import Iterator

import attrs
import httpx
import pytest

from tests.pubsub_emulator import Emulator, EmulatorUnavailable, create_topic, running_emulator

__all__ = ["Emulator", "PubsubTopic", "make_topic", "pubsub_emulator", "pubsub_topic"]


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    try:
        with running_emulator(tmp_path_factory.mktemp("pubsub-emulator")) as emulator:
            yield emulator
    except EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


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
    create_topic(emulator, project, topic.topic, topic.subscription)
    return topic


@pytest.fixture
def pubsub_topic(pubsub_emulator: Emulator) -> PubsubTopic:
    return make_topic(pubsub_emulator)
