"""Helpers shared by the ``bessai`` command modules."""

from __future__ import annotations

import argparse
from pathlib import Path

from bessai.errors import ConfigError
from bessai.settings import DEFAULT_ENV_FILE, Settings, get_settings


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings for this run; an explicit ``--env-file`` must exist."""
    env_file = getattr(args, "env_file", None)
    if env_file is not None and not Path(env_file).is_file():
        raise ConfigError(
            f"--env-file {env_file!r} does not exist",
            hint="give the path of the gateway's settings file, e.g. config/.env",
        )
    return get_settings(env_file=env_file or DEFAULT_ENV_FILE)


def human_bytes(n: float) -> str:
    """``1.0 GiB``, ``512.0 KiB``: binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
