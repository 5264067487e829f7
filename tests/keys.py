"""Throwaway service-account key files for tests, generated at test time (never committed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def write_service_account_key(path: Path, *, key_id: str = "k1", mode: int = 0o600) -> str:
    """Write a JSON key like the ones IAM hands out; returns the PEM (to check it never leaks)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {
        "type": "service_account", "project_id": "bessai-test", "private_key_id": key_id,
        "private_key": pem, "client_email": "gateway@bessai-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return pem
