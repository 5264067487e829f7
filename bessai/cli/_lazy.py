"""Import a command's implementation only when the command runs.

The CLI must start even when a part of the gateway is missing from a build (a command whose
module is absent fails with a clear `FeatureUnavailableError`, exit 3), and ``bessai --help``
must not pay for importing pymodbus, OpenTelemetry or google-auth.
"""

from __future__ import annotations

import importlib
from typing import Any

from bessai.errors import FeatureUnavailableError


def load(module: str, attr: str, *, command: str) -> Any:
    """``module.attr``, or a `FeatureUnavailableError` naming the command and what is missing.

    A missing third-party dependency inside an existing module is reported as such (with the
    package to install), not as a missing feature.
    """
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module == missing or module.startswith(missing + "."):
            raise FeatureUnavailableError(
                f"`bessai {command}` is not available in this build ({module} is missing)",
                hint="install a gateway release that includes it (pip install -U "
                "bessai-edge-gateway), or use the runbook's manual procedure",
            ) from exc
        raise FeatureUnavailableError(
            f"`bessai {command}` needs the Python package {missing!r}, which is not installed",
            hint="reinstall the gateway with its dependencies: pip install bessai-edge-gateway",
        ) from exc
    try:
        return getattr(mod, attr)
    except AttributeError as exc:
        raise FeatureUnavailableError(
            f"`bessai {command}` is not available in this build ({module}.{attr} is missing)",
            hint="install a gateway release that includes it (pip install -U bessai-edge-gateway)",
        ) from exc


def has_in_mro(exc: BaseException, name: str) -> bool:
    """True if ``exc`` is an instance of a class called ``name`` (matched without importing it)."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)
