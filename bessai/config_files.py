"""Which env file a gateway process or a ``bessai`` command reads: one search order for all.

The service and the operator's CLI must read the same configuration, or ``bessai spool stats``
run beside a systemd service looks at another spool. Every entry point (``bessai-run`` and each
``bessai`` subcommand) calls `find_env_file` once, and reads the first of:

1. ``--env-file PATH`` — must exist (a typo is an error, never a silent fallback);
2. ``$BESSAI_ENV_FILE`` — must exist, same reason (the systemd unit sets it);
3. ``./config/.env`` — relative to the working directory (a checkout, Docker's ``/app``);
4. ``/etc/bessai/bessai.env`` — the system-wide file of a systemd install.

None found is not an error by itself (Docker's ``env_file`` and systemd can pass everything in
the environment); the process environment always wins over the file. `EnvFileChoice.describe`
says what was read and what was looked for (``bessai check-config`` prints it), so "SITE_ID is
not set" comes with "no env file found: looked for ...".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from bessai.errors import ConfigError

__all__ = ["ENV_VARIABLE", "SEARCH_PATHS", "EnvFileChoice", "find_env_file"]

ENV_VARIABLE = "BESSAI_ENV_FILE"
SEARCH_PATHS: tuple[Path, ...] = (Path("config/.env"), Path("/etc/bessai/bessai.env"))
"""Looked for in this order when neither ``--env-file`` nor BESSAI_ENV_FILE is given."""


@attrs.frozen
class EnvFileChoice:
    """The env file to read (None: none found) and the paths looked for that did not exist."""

    path: Path | None
    via: str  # "--env-file", "BESSAI_ENV_FILE" or "search"
    not_found: tuple[Path, ...] = ()

    @property
    def env_file(self) -> str | None:
        """The path as `bessai.settings.get_settings` takes it (None: the environment only)."""
        return None if self.path is None else str(self.path)

    def describe(self) -> str:
        """``read: /etc/bessai/bessai.env (search); not found: config/.env``."""
        read = f"{self.path} ({self.via})" if self.path is not None else "none"
        missing = ", ".join(str(p) for p in self.not_found) or "-"
        return f"read: {read}; not found: {missing}"

    def source(self) -> str:
        """Where a wrong setting is to be fixed, for error hints."""
        if self.path is not None:
            return str(self.path)
        looked = ", ".join(str(p) for p in self.not_found)
        return f"an env file (none found; looked for {looked}) or the environment"


def find_env_file(explicit: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> EnvFileChoice:
    """The env file by the search order of the module docstring; `ConfigError` (exit 2) when
    ``--env-file`` or BESSAI_ENV_FILE names a file that does not exist."""
    environ = os.environ if environ is None else environ
    for via, value in (("--env-file", explicit), (ENV_VARIABLE, environ.get(ENV_VARIABLE))):
        if value is None or not str(value).strip():
            continue
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # ``~user`` for a user this host does not have
            path = Path(value)
        if not path.is_file():
            shown = f"{via} {str(value)!r}" if via == "--env-file" else f"{via}={str(value)!r}"
            raise ConfigError(
                f"{shown} does not exist (or is not a file) — looked in {path.resolve().parent}",
                hint="give the path of the gateway's settings file, e.g. "
                     "/etc/bessai/bessai.env or config/.env (copy config/.env.example)")
        return _readable(EnvFileChoice(path, via))
    not_found: list[Path] = []
    for candidate in SEARCH_PATHS:
        if candidate.is_file():
            return _readable(EnvFileChoice(candidate, "search", tuple(not_found)))
        not_found.append(candidate)
    return EnvFileChoice(None, "search", tuple(not_found))


def _readable(choice: EnvFileChoice) -> EnvFileChoice:
    """The choice, or a `ConfigError` saying who cannot read the file (a Docker container runs
    as uid 10001; a systemd service as ``bessai``)."""
    assert choice.path is not None
    if not os.access(choice.path, os.R_OK):
        raise ConfigError(
            f"{choice.path} (found by {choice.via}) is not readable by uid {os.getuid()}",
            hint=f"give the gateway's group read access: chgrp bessai {choice.path} (Docker: "
                 f"chgrp 10001) && chmod 0640 {choice.path}")
    return choice
