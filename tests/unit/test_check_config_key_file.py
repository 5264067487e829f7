"""`bessai check-config` refuses a service-account key file that would fail or leak in service:
one every user can read, or one without a private key (the account's description, not a key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bessai.settings import KNOWN_KEYS
from tests.keys import write_service_account_key

ROOT = Path(__file__).resolve().parents[2]


def check_config(tmp_path: Path, key: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in KNOWN_KEYS
           and k != "BESSAI_ENV_FILE" and not k.startswith("OTEL_")}
    env.update(SITE_ID="s1", INVERTER_IP="10.0.0.5", GCP_PROJECT_ID="my-bess-project",
               PUBSUB_TOPIC="bessai-telemetry", GOOGLE_APPLICATION_CREDENTIALS=str(key),
               DEVICE_PROFILE=str(ROOT / "profiles" / "huawei_sun2000.json"),
               SPOOL_PATH=str(tmp_path / "spool" / "outbox.sqlite"))
    return subprocess.run([sys.executable, "-m", "bessai.cli.main", "check-config"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_a_private_key_file_with_mode_0600_passes(tmp_path):
    key = tmp_path / "key.json"
    write_service_account_key(key, mode=0o600)
    done = check_config(tmp_path, key)
    assert done.returncode == 0, done.stderr


def test_a_world_readable_key_file_is_rejected_with_the_chmod(tmp_path):
    key = tmp_path / "key.json"
    pem = write_service_account_key(key, mode=0o644)
    done = check_config(tmp_path, key)
    assert done.returncode == 2
    assert f"is accessible to every user (mode 0o644) — chmod 0640 {key}" in done.stderr
    assert pem.splitlines()[1] not in done.stderr + done.stdout


def test_a_service_account_file_without_a_private_key_is_rejected(tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "project_id": "my-bess-project",
                               "client_email": "gw@my-bess-project.iam.gserviceaccount.com"}))
    key.chmod(0o600)
    done = check_config(tmp_path, key)
    assert done.returncode == 2
    assert "without a private key" in done.stderr
