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


def test_an_impossible_pubsub_endpoint_is_the_one_configuration_error_exit_2():
    """One ConfigError in the house: a bad PUBSUB_EMULATOR_HOST or a plain-http endpoint is the
    same error the CLI exits 2 for (it used to be a ValueError of its own, so exit 1)."""
    from bessai.errors import EXIT_CONFIG, ConfigError
    from bessai.uplink.credentials import Endpoint

    with pytest.raises(ConfigError) as bad_host:
        Endpoint.for_emulator("127.0.0.1:8085/v1")
    assert bad_host.value.exit_code == EXIT_CONFIG == 2
    with pytest.raises(ConfigError, match="plain http"):
        Endpoint(base_url="http://pubsub.example")
