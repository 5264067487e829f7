"""The gateway's version, from the installed package's metadata: the one place it is read.

``pyproject.toml`` is the one place it is *written*; ``bessai --version``, ``bessai-run
--version``, ``/status``, the ``GATEWAY_READY`` line and OTel's ``service.version`` all show
this value, so after a rolling update an operator can confirm what runs.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "bessai-edge-gateway"


def gateway_version() -> str:
    """The installed distribution's version, or ``0+unknown`` when run from an uninstalled
    source tree (never raises: a missing version must not stop a gateway)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


__version__ = gateway_version()
