"""Runbook §7: a rotated service-account key is used without a restart, and SIGHUP makes the
gateway drop what it cached (its reloader calls the credentials' `invalidate`)."""

from __future__ import annotations

from pathlib import Path

from bessai.gateway import Gateway
from bessai.settings import get_settings
from tests.keys import write_service_account_key


def _settings(tmp_path: Path, key: Path):
    return get_settings({
        "SITE_ID": "site-test-01", "INVERTER_IP": "127.0.0.1", "GCP_PROJECT_ID": "bessai-test",
        "PUBSUB_TOPIC": "bessai-telemetry", "GOOGLE_APPLICATION_CREDENTIALS": str(key),
        "SPOOL_PATH": str(tmp_path / "spool" / "outbox.sqlite"),
    }, env_file=None)


def _cloud_gateway(tmp_path: Path, key: Path, loader=None) -> Gateway:
    settings = _settings(tmp_path, key)
    return Gateway(settings, status_server=False, env_file=None,
                   settings_loader=loader or (lambda: settings))


async def test_sighup_reload_makes_the_gateway_sign_a_fresh_token(tmp_path):
    key = tmp_path / "key.json"
    write_service_account_key(key)
    gateway = _cloud_gateway(tmp_path, key)
    credentials = gateway._credentials.target
    await credentials.headers()
    await credentials.headers()
    signed = credentials.refreshes
    assert signed == 1  # cached between publishes
    gateway._sighup().reload()  # what the SIGHUP actor does
    await credentials.headers()
    assert credentials.refreshes == signed + 1
    assert credentials.loads == 1  # same file: no re-read needed


async def test_key_replaced_with_mv_is_used_on_the_next_publish_without_restart(tmp_path):
    key = tmp_path / "key.json"
    write_service_account_key(key, key_id="old")
    gateway = _cloud_gateway(tmp_path, key)
    credentials = gateway._credentials.target
    before = await credentials.headers()
    new = tmp_path / "key.json.new"
    write_service_account_key(new, key_id="new")
    new.rename(key)  # the runbook's `mv key.json.new key.json`
    after = await credentials.headers()
    assert credentials.loads == 2
    assert after != before


async def test_reload_pointing_at_another_key_file_signs_with_it_on_the_next_publish(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    write_service_account_key(old, key_id="old")
    write_service_account_key(new, key_id="new")
    gateway = _cloud_gateway(tmp_path, old, loader=lambda: _settings(tmp_path, new))
    before = await gateway._credentials.headers()
    plan = gateway.reload_config()
    assert plan is not None
    assert plan.applied == (("GOOGLE_APPLICATION_CREDENTIALS", str(old), str(new)),)
    after = await gateway._credentials.headers()
    assert after != before
    assert gateway._credentials.target.path == new
