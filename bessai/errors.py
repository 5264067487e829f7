"""User-facing errors: a one-line cause and a hint that says what to do next.

Any module may raise a `BessaiError` (or a subclass) when the fault is something an operator can
fix: a bad setting, an unreachable inverter, a command that is not in this build. The CLI prints
it as two lines and exits with the error's ``exit_code``; it shows a traceback only with
``--debug``::

    error: cannot connect to the inverter at 192.168.1.50:502: connection refused
    hint: check INVERTER_IP and INVERTER_PORT and that Modbus TCP is enabled on the inverter

Invariants: ``str(err)`` is the cause alone, without the hint (one line, except for errors that
list several problems, such as `bessai.settings.SettingsError`); the hint is optional; exit
codes are stable (documented in ops/RUNBOOK.md): 1 = the check or operation failed,
2 = configuration or usage error, 3 = not in this build, 4 = no answer (the peer that would
say whether it worked — e.g. the gateway's status endpoint for ``bessai health`` — could not be
reached or gave no usable answer; nothing is known about its health).
"""

from __future__ import annotations

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_NO_ANSWER",
    "EXIT_UNAVAILABLE",
    "BessaiError",
    "ConfigError",
    "FeatureUnavailableError",
    "NoAnswerError",
    "OperationFailedError",
]

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_NO_ANSWER = 4


class BessaiError(Exception):
    """A fault the user can act on: ``message`` says what went wrong, ``hint`` what to do next."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        """The text the CLI prints: ``error: ...`` and, when there is one, ``hint: ...``."""
        lines = [f"error: {self.message}"]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class ConfigError(BessaiError):
    """The configuration (settings, a profile, a command line) is wrong; nothing was attempted."""

    exit_code = EXIT_CONFIG


class OperationFailedError(BessaiError):
    """The configuration is fine but the operation failed (device unreachable, unhealthy)."""

    exit_code = EXIT_FAILED


class FeatureUnavailableError(BessaiError):
    """The requested feature is not part of this build (a module or function is missing)."""

    exit_code = EXIT_UNAVAILABLE


class NoAnswerError(BessaiError):
    """The peer that would tell did not answer (refused, timed out, overloaded, not the gateway):
    distinct from a failed check, so a monitor can tell "down" from "could not ask"."""

    exit_code = EXIT_NO_ANSWER
