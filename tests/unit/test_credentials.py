"""Credentials: self-signed JWTs from a key file, rotation without restart, no secret leaks."""

from __future__ import annotations

import base64
import json
import os

import pytest
from structlog.testing import capture_logs

from bessai.uplink.credentials import (
    ConfigError,
    CredentialsError,
    Endpoint,
    NoAuth,
    ServiceAccountKey,
    credentials_for,
)
from tests.keys import write_service_account_key


def jwt_claims(headers: dict) -> tuple[dict, dict]:
    token = headers["authorization"].removeprefix("Bearer ")
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(head))),
            json.loads(base64.urlsafe_b64decode(pad(body))))


async def test_key_file_signs_a_jwt_for_pubsub_locally(tmp_path):
    path = tmp_path / "sa.json"
    write_service_account_key(path)
    creds = ServiceAccountKey(path)
    header, claims = jwt_claims(await creds.headers())
    assert claims["aud"] == "https://pubsub.googleapis.com/"
    assert claims["iss"] == "gateway@bessai-test.iam.gserviceaccount.com"
    assert header["kid"] == "k1"


async def test_rotated_key_file_is_picked_up_without_restart(tmp_path):
    path = tmp_path / "sa.json"
    write_service_account_key(path, key_id="old")
    creds = ServiceAccountKey(path)
    assert jwt_claims(await creds.headers())[0]["kid"] == "old"
    write_service_account_key(path, key_id="new")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    with capture_logs() as logs:
        assert jwt_claims(await creds.headers())[0]["kid"] == "new"
    assert creds.loads == 2
    assert [e["event"] for e in logs] == ["CREDENTIALS_KEY_RELOADED"]


async def test_key_readable_by_others_draws_a_warning(tmp_path):
    path = tmp_path / "sa.json"
    write_service_account_key(path, mode=0o644)
    with capture_logs() as logs:
        await ServiceAccountKey(path).headers()
    warning = next(e for e in logs if e["event"] == "CREDENTIALS_KEY_READABLE")
    assert warning["action"] == f"chmod 600 {path}"


async def test_private_key_and_token_never_appear_in_repr_logs_or_errors(tmp_path):
    path = tmp_path / "sa.json"
    pem = write_service_account_key(path, mode=0o644)
    creds = ServiceAccountKey(path)
    with capture_logs() as logs:
        headers = await creds.headers()
    token = headers["authorization"].removeprefix("Bearer ")
    secret_bits = [pem.splitlines()[1], token]
    texts = [repr(creds), repr(logs)]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"type": "service_account", "private_key": pem[:300],
                                  "client_email": "x@y", "token_uri": "https://t"}))
    with pytest.raises(CredentialsError) as info:
        await ServiceAccountKey(broken).headers()
    texts += [str(info.value), repr(info.value)]
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    for text in texts:
        for secret in secret_bits:
            assert secret not in text


async def test_missing_key_file_error_says_what_to_set(tmp_path):
    with pytest.raises(CredentialsError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        await ServiceAccountKey(tmp_path / "nope.json").headers()


def test_plain_http_is_refused_except_for_the_emulator():
    with pytest.raises(ConfigError, match="only the emulator"):
        Endpoint(base_url="http://pubsub.example.com")
    assert Endpoint.for_emulator("127.0.0.1:8085").base_url == "http://127.0.0.1:8085"
    assert Endpoint.from_env({}).base_url == "https://pubsub.googleapis.com"
    assert Endpoint.from_env({"PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}).emulator


def test_emulator_needs_no_credentials_and_a_key_file_selects_jwt(tmp_path):
    assert isinstance(credentials_for(Endpoint.for_emulator("127.0.0.1:1"), "x.json"), NoAuth)
    assert isinstance(credentials_for(Endpoint(), tmp_path / "k.json"), ServiceAccountKey)


async def test_missing_application_default_credentials_say_what_to_set(tmp_path, monkeypatch):
    from bessai.uplink.credentials import DefaultCredentials
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(CredentialsError, match="PUBSUB_EMULATOR_HOST"):
        await DefaultCredentials().headers()


def test_missing_gcloud_fails_with_the_install_command(monkeypatch):
    from tests.pubsub_emulator import EmulatorUnavailable, running_emulator
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulatorUnavailable, match="gcloud components install pubsub-emulator"), \
            running_emulator():
        pass
