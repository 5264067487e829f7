"""Operator keys for signed dispatch commands: generation, key ids, and the gateway's verify set.

Keys are Ed25519 (``cryptography``). A key pair is two PEM files: ``NAME.key`` (PKCS#8 private
key, mode 0600, kept by whoever sends commands) and ``NAME.pub`` (SubjectPublicKeyInfo, given to
gateways in ``COMMAND_VERIFY_KEYS``). A key's id is derived from the public key itself
(`key_id`: the first 16 hex digits of the SHA-256 of its 32 raw bytes), so an id can never point
at the wrong key and the file names are free.

Invariants:

- No private key is ever logged, printed or put in a status document: `generate_key_pair`
  writes it straight to a 0600 file (created with that mode, never wider even for a moment),
  and `VerifyKeys` holds public keys only. A private key file handed to COMMAND_VERIFY_KEYS is
  refused by name, without its contents.
- `VerifyKeys.reload` replaces the whole set at once or not at all: a directory with one broken
  file keeps the previous set (so a SIGHUP during an edit cannot leave the gateway with no keys,
  or with half of them) and says which file is wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bessai.bounds import clip
from bessai.errors import ConfigError

log = structlog.get_logger("bessai.trust.keys")

PUBLIC_SUFFIX = ".pub"
PRIVATE_SUFFIX = ".key"
MAX_KEY_FILE_BYTES = 16 * 1024
"""A PEM public key is about 113 bytes; anything much bigger is not one (read no further)."""
MAX_KEY_FILES = 64


class KeyFileError(ConfigError):
    """A key file is missing, unreadable or not an Ed25519 key of the expected kind."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id that commands name their key by: 16 hex digits of SHA-256 of the raw key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@attrs.frozen
class KeyPairFiles:
    """What `generate_key_pair` wrote (paths only: the private key stays in its file)."""

    private_path: Path
    public_path: Path
    key_id: str


def generate_key_pair(out_dir: Path, name: str = "operator") -> KeyPairFiles:
    """A new Ed25519 key pair as ``out_dir/NAME.key`` (0600) and ``out_dir/NAME.pub``.

    Refuses to overwrite an existing file (a rotated-out private key must be removed on purpose).
    """
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"--name {clip(name)!r} is not a plain file name",
                           hint="use letters, digits, - and _, e.g. --name dispatch-2026")
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / f"{name}{PRIVATE_SUFFIX}"
    public_path = out_dir / f"{name}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists — not overwriting a key",
                               hint="choose another --name or --out, or remove the old pair "
                                    "on purpose first")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    public = private.public_key()
    public_path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return KeyPairFiles(private_path, public_path, key_id(public))


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}",
                           hint="check the path and that the gateway's user may read it") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path} is larger than {MAX_KEY_FILE_BYTES} bytes: not a key file",
                           hint="point at the .pub files written by `bessai keys generate`")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The operator's signing key (for ``bessai command --sign-key``)."""
    data = _read_bounded(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # never echo the contents: this file is meant to hold a secret
        raise KeyFileError(f"{path} is not an unencrypted PEM private key",
                           hint="give the .key file written by `bessai keys generate`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key",
                           hint="make a key pair with `bessai keys generate --out DIR`")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """One verify key; a private key file is refused (it does not belong on a gateway)."""
    data = _read_bounded(path)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} is a PRIVATE key — a gateway needs only the public half",
                           hint="copy the matching .pub file instead, and keep the .key file "
                                "with whoever signs commands")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path} is not a PEM public key",
                           hint="use the .pub files written by `bessai keys generate`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key",
                           hint="make a key pair with `bessai keys generate --out DIR`")
    return key


def read_verify_keys(source: Path) -> dict[str, Ed25519PublicKey]:
    """The public keys at ``source``: one ``.pub`` file, or every ``*.pub`` in a directory.

    All or nothing: any bad file raises `KeyFileError` naming it. A directory without a single
    ``.pub`` file is an error too (an empty set would reject every command, which is never what
    an operator who configured keys meant).
    """
    if source.is_dir():
        private = sorted(p.name for p in source.iterdir() if p.name.endswith(PRIVATE_SUFFIX))
        if private:
            raise KeyFileError(f"{source} holds private key file(s) {', '.join(private)} — a "
                               f"gateway needs only the public halves",
                               hint="remove them from the gateway (keep them with whoever "
                                    "signs commands); copy the .pub files instead")
        files = sorted(p for p in source.iterdir() if p.name.endswith(PUBLIC_SUFFIX))
        if len(files) > MAX_KEY_FILES:
            raise KeyFileError(f"{source} holds {len(files)} .pub files (at most "
                               f"{MAX_KEY_FILES})", hint="keep only the keys in use")
    elif source.exists():
        files = [source]
    else:
        raise KeyFileError(f"COMMAND_VERIFY_KEYS={source} does not exist",
                           hint="point it at a .pub file or a directory of them "
                                "(`bessai keys generate --out DIR` makes a pair)")
    keys: dict[str, Ed25519PublicKey] = {}
    for path in files:
        key = load_public_key(path)
        keys[key_id(key)] = key
    if not keys:
        raise KeyFileError(f"COMMAND_VERIFY_KEYS={source} holds no .pub file",
                           hint="copy the operators' .pub files into it, or unset the key to "
                                "run without command authentication")
    return keys


class _Unchanged:
    """The default of `VerifyKeys.reload`: keep the configured source."""


UNCHANGED = _Unchanged()


@attrs.define(eq=False)
class VerifyKeys:
    """The public keys this gateway accepts commands from; `reload` re-reads them (SIGHUP).

    ``source`` None: no keys configured — commands are not authenticated (`configured` False).
    """

    source: Path | None
    keys: Mapping[str, Ed25519PublicKey] = attrs.field(factory=dict)
    reload_error: str | None = None
    """Why the last reload kept the previous set (None after a good one)."""

    @classmethod
    def load(cls, source: Path | None) -> VerifyKeys:
        """At start: a bad key file is a configuration error (the gateway does not start)."""
        return cls(source, read_verify_keys(source) if source is not None else {})

    @property
    def configured(self) -> bool:
        return self.source is not None

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self.keys.get(kid)

    def reload(self, source: Path | _Unchanged | None = UNCHANGED) -> bool:
        """Re-read the keys (from a new ``source`` if one is given: a whole-configuration reload
        on SIGHUP); True if the set was replaced. On error the old source and set stay."""
        target = self.source if isinstance(source, _Unchanged) else source
        if target is None:
            if self.source is not None:  # the operator removed COMMAND_VERIFY_KEYS
                self.source, self.keys, self.reload_error = None, {}, None
                log.warning("COMMANDS_UNAUTHENTICATED", reason="COMMAND_VERIFY_KEYS was unset "
                            "by a reload", risk="anyone who can publish to the commands "
                            "topic can drive the battery")
                return True
            return False
        try:
            fresh = read_verify_keys(target)
        except KeyFileError as exc:
            self.reload_error = str(exc)
            log.error("COMMAND_KEYS_RELOAD_FAILED", source=str(target), error=str(exc),
                      kept=",".join(sorted(self.keys)) or "-")
            return False
        added = sorted(set(fresh) - set(self.keys))
        removed = sorted(set(self.keys) - set(fresh))
        self.source, self.keys, self.reload_error = target, fresh, None
        log.warning("COMMAND_KEYS_RELOADED", source=str(target), keys=len(fresh),
                    added=",".join(added) or "-", removed=",".join(removed) or "-")
        return True

    def status(self) -> dict[str, Any]:
        """Public facts only: the source path and the key ids (never key material)."""
        return {"source": None if self.source is None else str(self.source),
                "key_ids": sorted(self.keys), "reload_error": self.reload_error}
