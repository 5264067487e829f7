"""Trusting dispatch commands: operator signatures, durable replay protection, clock trust.

- `keys`: Ed25519 operator keys, key ids, the gateway's verify set (`VerifyKeys`, SIGHUP reload);
- `signature`: the wire form (signature attributes over the exact data bytes) and verification;
- `replay`: the on-disk store of handled command ids (`ReplayStore`);
- `skew`: the clock skew measured from Pub/Sub's answers (`SkewTracker`);
- `command_trust`: `CommandTrust`, what the router and the gate call.

Never imported by `bessai.control` (the gate knows it only through a Protocol), so the control
loop has no dependency on it.
"""

from bessai.trust.command_trust import CommandTrust
from bessai.trust.keys import (
    KeyFileError,
    KeyPairFiles,
    VerifyKeys,
    generate_key_pair,
    key_id,
    load_private_key,
    load_public_key,
)
from bessai.trust.replay import ReplayStore, ReplayStoreError, store_path_for
from bessai.trust.signature import (
    KEY_ID_ATTR,
    SIGNATURE_ATTR,
    SignatureFault,
    SignatureRejection,
    sign_data,
    sign_message,
    verify_command,
)
from bessai.trust.skew import SkewTracker, parse_http_date, parse_rfc3339

__all__ = [
    "KEY_ID_ATTR",
    "SIGNATURE_ATTR",
    "CommandTrust",
    "KeyFileError",
    "KeyPairFiles",
    "ReplayStore",
    "ReplayStoreError",
    "SignatureFault",
    "SignatureRejection",
    "SkewTracker",
    "VerifyKeys",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_http_date",
    "parse_rfc3339",
    "sign_data",
    "sign_message",
    "store_path_for",
    "verify_command",
]
