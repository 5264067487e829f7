"""Where to publish and how to authenticate, with google-auth; secrets never reach a log.

- `Endpoint`: ``https://pubsub.googleapis.com`` in production, ``http://$PUBSUB_EMULATOR_HOST``
  for Google's emulator. The emulator is the ONLY case where plain http is allowed; a client
  built here always verifies TLS.
- `ServiceAccountKey`: a service-account key file signs self-signed JWTs locally
  (`google.auth.jwt.Credentials`, audience ``https://pubsub.googleapis.com/``), so no token
  server is needed after an outage. The file is re-read when its mtime changes (key rotation
  without a restart) and a world- or group-readable file draws a ``CREDENTIALS_KEY_READABLE``
  warning.
- `DefaultCredentials`: application default credentials, loaded and refreshed in a worker
  thread (`trio.to_thread`) with google-auth's requests transport (google-auth has no httpx one).
- `NoAuth`: the emulator.

Invariants: no token or key material appears in a repr, a log line or an exception message
(errors name the file and the exception type, never its text; chained causes are suppressed).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import httpx
import structlog
import trio

from bessai.errors import ConfigError  # exit 2: a configuration that cannot work

if TYPE_CHECKING:  # google-auth is imported where credentials are first loaded
    import google.auth.credentials
    from google.auth import jwt

PUBSUB_AUDIENCE = "https://pubsub.googleapis.com/"
PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
PRODUCTION_BASE_URL = "https://pubsub.googleapis.com"


class CredentialsError(Exception):
    """Credentials could not be loaded or refreshed; carries no secret material."""


def _check_base_url(instance: Endpoint, attribute: Any, value: str) -> None:
    if value.startswith("http://") and not instance.emulator:
        raise ConfigError(
            f"Pub/Sub endpoint {value!r} is plain http — only the emulator "
            "(PUBSUB_EMULATOR_HOST) may be reached without TLS; use https://")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"Pub/Sub endpoint {value!r} must start with https://")


@attrs.frozen
class Endpoint:
    """The Pub/Sub REST base URL and whether it is the (unauthenticated) emulator."""

    base_url: str = attrs.field(default=PRODUCTION_BASE_URL, validator=_check_base_url)
    emulator: bool = False

    @classmethod
    def for_emulator(cls, host: str) -> Endpoint:
        host = host.strip()
        if not host or "/" in host:
            raise ConfigError(f"PUBSUB_EMULATOR_HOST={host!r} must be host:port, "
                              "e.g. 127.0.0.1:8085")
        return cls(base_url=f"http://{host}", emulator=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Endpoint:
        """The emulator if ``PUBSUB_EMULATOR_HOST`` is set, else production."""
        env = os.environ if environ is None else environ
        host = env.get("PUBSUB_EMULATOR_HOST")
        return cls.for_emulator(host) if host else cls()


class Credentials(Protocol):
    async def headers(self) -> dict[str, str]:
        """Request headers that authenticate (refreshing first if needed)."""

    def invalidate(self) -> None:
        """Forget the current token (after a 401) so the next `headers` refreshes."""


@attrs.define
class NoAuth:
    """The emulator takes no credentials."""

    async def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        pass


def _bearer(token: str | bytes | None) -> dict[str, str]:
    if isinstance(token, bytes):
        token = token.decode()
    return {"authorization": f"Bearer {token}"}


@attrs.define
class ServiceAccountKey:
    """Self-signed JWTs from a service-account key file; re-read when the file changes."""

    path: Path = attrs.field(converter=Path)
    audience: str = PUBSUB_AUDIENCE
    log: Any = attrs.field(factory=structlog.get_logger, repr=False)
    _creds: jwt.Credentials | None = attrs.field(default=None, init=False, repr=False)
    _mtime_ns: int | None = attrs.field(default=None, init=False, repr=False)
    _stale: bool = attrs.field(default=False, init=False, repr=False)
    loads: int = attrs.field(default=0, init=False)
    refreshes: int = attrs.field(default=0, init=False)

    async def headers(self) -> dict[str, str]:
        creds = await trio.to_thread.run_sync(self._ensure_fresh)
        return _bearer(creds.token)

    def invalidate(self) -> None:
        self._stale = True

    def _ensure_fresh(self) -> jwt.Credentials:
        from google.auth import jwt

        try:
            st = self.path.stat()
        except OSError as exc:
            raise CredentialsError(
                f"cannot read the service-account key file {self.path} "
                f"({type(exc).__name__}) — check GOOGLE_APPLICATION_CREDENTIALS") from None
        creds = self._creds
        if creds is None or st.st_mtime_ns != self._mtime_ns:
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                self.log.warning("CREDENTIALS_KEY_READABLE", path=str(self.path),
                                 mode=oct(stat.S_IMODE(st.st_mode)),
                                 action=f"chmod 600 {self.path}")
            try:
                # google-auth leaves this classmethod unannotated; it returns jwt.Credentials
                creds = jwt.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    str(self.path), audience=self.audience)
            except Exception as exc:
                raise CredentialsError(
                    f"{self.path} is not a usable service-account key ({type(exc).__name__}) "
                    "— download a JSON key for the service account from IAM") from None
            if self._creds is not None:
                self.log.info("CREDENTIALS_KEY_RELOADED", path=str(self.path))
            self._creds, self._mtime_ns = creds, st.st_mtime_ns
            self._stale = True
            self.loads += 1
        if self._stale or not creds.valid:
            try:
                creds.refresh(None)  # local signing: no network
                self.refreshes += 1
            except Exception as exc:
                raise CredentialsError(
                    f"could not sign a JWT with {self.path} ({type(exc).__name__}) — "
                    "check the key is intact") from None
            self._stale = False
        return creds


@attrs.define
class DefaultCredentials:
    """Application default credentials, loaded and refreshed in a worker thread."""

    scopes: tuple[str, ...] = (PUBSUB_SCOPE,)
    _creds: google.auth.credentials.Credentials | None = attrs.field(
        default=None, init=False, repr=False)
    _stale: bool = attrs.field(default=False, init=False, repr=False)

    async def headers(self) -> dict[str, str]:
        creds = await trio.to_thread.run_sync(self._ensure_fresh)
        return _bearer(creds.token)

    def invalidate(self) -> None:
        self._stale = True

    def _ensure_fresh(self) -> google.auth.credentials.Credentials:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        try:
            if self._creds is None:
                self._creds, _ = google.auth.default(scopes=list(self.scopes))
            creds = self._creds
            if self._stale or not creds.valid:
                # google-auth leaves the abstract Credentials.refresh unannotated
                creds.refresh(  # type: ignore[no-untyped-call]
                    google.auth.transport.requests.Request())
                self._stale = False
            return creds
        except google.auth.exceptions.DefaultCredentialsError:
            raise CredentialsError(
                "no Google credentials found — set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file, or PUBSUB_EMULATOR_HOST for the emulator") from None
        except Exception as exc:
            raise CredentialsError(
                f"could not refresh Google credentials ({type(exc).__name__}) — check the "
                "network path to the token server and the account's permissions") from None


@attrs.define
class SwitchableCredentials:
    """Credentials whose source can be replaced while publishers hold them (a reload that points
    GOOGLE_APPLICATION_CREDENTIALS at another key file): every call goes to ``target``."""

    target: Credentials

    async def headers(self) -> dict[str, str]:
        return await self.target.headers()

    def invalidate(self) -> None:
        self.target.invalidate()


def credentials_for(endpoint: Endpoint, key_file: str | os.PathLike[str] | None = None
                    ) -> Credentials:
    """NoAuth for the emulator, a key file's self-signed JWTs if given, else ADC."""
    if endpoint.emulator:
        return NoAuth()
    if key_file:
        return ServiceAccountKey(Path(key_file))
    return DefaultCredentials()


def make_client(endpoint: Endpoint, *, timeout_s: float = 30.0,
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client for this endpoint: TLS always verified; ``transport`` is the test seam."""
    return httpx.AsyncClient(base_url=endpoint.base_url, timeout=timeout_s, verify=True,
                             transport=transport,
                             headers={"user-agent": "bessai-edge-gateway"})
