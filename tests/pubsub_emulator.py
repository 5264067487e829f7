"""The emulator helpers the tests and benchmarks use, on top of `bessai.sim.pubsub_emulator`.

The launcher itself (own process group, readiness probe, group kill) lives in the package so
that `make demo`, the chaos rig, the benchmarks and the tests share one implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import attrs

from bessai.sim.pubsub_emulator import (
    INSTALL_HINT,
    EmulatorAdmin,
    EmulatorUnavailable,
    PubSubEmulator,
)

__all__ = ["INSTALL_HINT", "Emulator", "EmulatorUnavailable", "create_topic", "running_emulator"]


@attrs.frozen
class Emulator:
    host: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"


@contextlib.contextmanager
def running_emulator(workdir: Path | None = None, *, timeout_s: float = 60) -> Iterator[Emulator]:
    log_path = None if workdir is None else Path(workdir) / "emulator.log"
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with PubSubEmulator(startup_timeout_s=timeout_s, log_path=log_path) as emulator:
        yield Emulator(emulator.host)


def create_topic(emulator: Emulator, project: str, topic: str,
                 subscription: str | None = None) -> None:
    admin = EmulatorAdmin(emulator.base_url, project)
    admin.create_topic(topic)
    if subscription:
        admin.create_subscription(subscription, topic)
