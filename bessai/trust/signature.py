"""The signed-command wire form: an Ed25519 signature over the exact data bytes, in attributes.

A dispatch command is a Pub/Sub message whose ``data`` is the command's JSON (see
`bessai.control.command`). The sender signs those bytes, exactly as published, and adds two
message attributes (docs/commands.md has the full wire form)::

    signature         base64 (RFC 4648, padded) of the 64-byte Ed25519 signature of ``data``
    signature_key_id  the signing key's id (`bessai.trust.keys.key_id`, 16 hex digits)

Why attributes: the signed bytes stay exactly the bytes that arrive (no canonical JSON to agree
on, no signature field to strip before verifying), and a sender in any language signs what it
publishes. The routing attributes (``site_id``, ``device_id``) are outside the signature, so a
signed command must name its site and device in the signed body (a copy re-addressed by
attributes alone is refused as ``signature_scope``).

Invariants: `verify_command` never raises for anything a peer sends, and reads at most the two
attributes' bounded values; the signature text must be canonical base64 of exactly 64 bytes (so
that no two texts verify as one signature: a flipped padding bit is a different signature).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bessai.bounds import clip
from bessai.trust.keys import VerifyKeys, key_id

SIGNATURE_ATTR = "signature"
KEY_ID_ATTR = "signature_key_id"
SIGNATURE_BYTES = 64
MAX_SIGNATURE_TEXT = 128
MAX_KEY_ID_TEXT = 64


class SignatureFault(enum.StrEnum):
    """Why a command's signature was refused (the first word of its rejection reason)."""

    MISSING = "signature_missing"
    UNKNOWN_KEY = "signature_unknown_key"
    INVALID = "signature_invalid"
    SCOPE = "signature_scope"


@attrs.frozen
class SignatureRejection:
    fault: SignatureFault
    detail: str

    @property
    def reason(self) -> str:
        """``<fault>: <what to do>`` — the COMMAND_REJECTED reason."""
        return f"{self.fault.value}: {self.detail}"


def sign_data(data: bytes, private_key: Ed25519PrivateKey) -> dict[str, str]:
    """The two signature attributes for a message whose data is ``data``."""
    signature = private_key.sign(data)
    return {SIGNATURE_ATTR: base64.b64encode(signature).decode("ascii"),
            KEY_ID_ATTR: key_id(private_key.public_key())}


def sign_message(message: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A PubsubMessage (``data`` base64, ``attributes``) with the signature attributes added."""
    data = base64.b64decode(message["data"], validate=True)
    attributes = {**dict(message.get("attributes") or {}), **sign_data(data, private_key)}
    return {**dict(message), "attributes": attributes}


def verify_command(data: bytes, attributes: Mapping[str, str], keys: VerifyKeys, *,
                   site_id: str | None = None,
                   device_id: str | None = None) -> SignatureRejection | None:
    """None when ``data`` carries a valid signature by a key in ``keys`` and names the given
    site and device in its signed body; else why not."""
    signature_text = attributes.get(SIGNATURE_ATTR)
    kid = attributes.get(KEY_ID_ATTR)
    if not signature_text or not kid:
        missing = [a for a, v in ((SIGNATURE_ATTR, signature_text), (KEY_ID_ATTR, kid))
                   if not v]
        return SignatureRejection(
            SignatureFault.MISSING,
            f"no {' and no '.join(missing)} attribute — this gateway accepts only commands "
            f"signed by an operator key (bessai command ... --sign-key PATH)")
    if not isinstance(kid, str) or len(kid) > MAX_KEY_ID_TEXT:
        return SignatureRejection(SignatureFault.UNKNOWN_KEY,
                                  f"key id {clip(kid, 32)!r} is not a key id")
    public_key = keys.get(kid)
    if public_key is None:
        return SignatureRejection(
            SignatureFault.UNKNOWN_KEY,
            f"key id {clip(kid, 32)!r} is not among this gateway's COMMAND_VERIFY_KEYS "
            f"({', '.join(sorted(keys.keys)) or 'none'}) — sign with a current key, or add its "
            f".pub file and send SIGHUP")
    signature = _decode_signature(signature_text)
    if signature is None:
        return SignatureRejection(SignatureFault.INVALID,
                                  f"the {SIGNATURE_ATTR} attribute is not canonical base64 of a "
                                  f"{SIGNATURE_BYTES}-byte Ed25519 signature")
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return SignatureRejection(SignatureFault.INVALID,
                                  f"the signature by key {kid} does not match the message data "
                                  f"— the command was changed after signing, or signed with "
                                  f"another key")
    return _scope(data, site_id, device_id)


def _decode_signature(text: Any) -> bytes | None:
    if not isinstance(text, str) or len(text) > MAX_SIGNATURE_TEXT:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != SIGNATURE_BYTES or base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def _scope(data: bytes, site_id: str | None, device_id: str | None) -> SignatureRejection | None:
    """The routing fields the gate acts on must come from the signed bytes, not attributes."""
    if site_id is None and device_id is None:
        return None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        return SignatureRejection(SignatureFault.SCOPE, "the signed data is not a JSON object")
    for field, want in (("site_id", site_id), ("device_id", device_id)):
        if want is not None and body.get(field) != want:
            return SignatureRejection(
                SignatureFault.SCOPE,
                f"{field} is not in the signed body — a signed command names its site_id and "
                f"device_id in the data it signs, not only in message attributes")
    return None
