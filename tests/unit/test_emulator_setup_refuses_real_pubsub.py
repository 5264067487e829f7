"""Topics and subscriptions are created on the emulator only, never on real Pub/Sub."""

from __future__ import annotations

import httpx
import pytest

from bessai.uplink.credentials import Endpoint
from bessai.uplink.emulator_setup import EmulatorSetup, ensure_resources


async def test_setup_refuses_real_pubsub():
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="never on real Pub/Sub"):
            EmulatorSetup(client, Endpoint(), "my-bess-project", ["t1"], [])
        with pytest.raises(ValueError, match="never on real Pub/Sub"):
            await ensure_resources(client, Endpoint(), "my-bess-project", ["t1"], [])
