"""Helpers shared by the ``bessai`` command modules."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

from bessai.config_files import find_env_file
from bessai.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What ``add_subparsers`` returns: each command module's ``register`` adds its parsers to
    it (generic only in typeshed, so named for the type checker alone)."""


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings for this run, from the env file `bessai.config_files` chose (``bessai``'s
    main resolves it once; an explicit ``--env-file`` must exist)."""
    choice = getattr(args, "env_choice", None)
    if choice is None:
        choice = find_env_file(getattr(args, "env_file", None))
    try:
        return get_settings(env_file=choice.env_file)
    except SettingsError as error:
        if choice.path is not None:
            raise
        raise SettingsError(error.problems, source=choice.source()) from None


def human_bytes(n: float) -> str:
    """``1.0 GiB``, ``512.0 KiB``: binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
