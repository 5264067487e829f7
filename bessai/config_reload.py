"""What a configuration reload (SIGHUP) changes: which keys apply live, which need a restart.

`plan_reload` compares the running `Settings` with the ones just read and validated, key by key
(the keys of ``config/.env``), and sorts every key into exactly one of three groups:

* ``applied`` — the value changed and the running gateway takes it now: the safety limits and
  their hysteresis, the poll intervals, the log level, the credentials key file and the OTel
  endpoint, the command verify keys and clock-skew limit, the command bounds (`LIVE_KEYS`);
* ``needs_restart`` — the value changed but the running tree keeps the old one until the next
  start (device addresses, spool path, status bind, Pub/Sub names...);
* ``unchanged``.

It decides nothing about *validity*: a file that does not validate never gets here (the
gateway logs every problem and keeps the running configuration). Nothing secret is shown: the
OTel endpoint's ``user:password@`` is redacted; a key file is named by its path only.
"""

from __future__ import annotations

from typing import Any

import attrs

from bessai.settings import KNOWN_KEYS, Settings, redact_url

__all__ = ["LIVE_KEYS", "ReloadPlan", "live_settings", "plan_reload"]

LIVE_KEYS: tuple[str, ...] = (
    "SOC_MIN_PCT", "SOC_MAX_PCT", "SOC_HYSTERESIS_PCT", "TEMP_MAX_C", "TEMP_HYSTERESIS_C",
    "POLL_INTERVAL_S", "SLOW_POLL_INTERVAL_S", "LOG_LEVEL", "GOOGLE_APPLICATION_CREDENTIALS",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "COMMAND_VERIFY_KEYS", "CLOCK_SKEW_MAX_S",
    "COMMAND_MAX_TTL_S", "COMMAND_MIN_POWER_W", "COMMAND_MIN_INTERVAL_S",
)
"""Keys a running gateway applies on SIGHUP. Every other key in KNOWN_KEYS needs a restart."""


def _field(key: str) -> str:
    return "devices" if key == "DEVICES" else key.lower()


def _show(key: str, value: Any) -> str:
    """A value as an operator reads it in CONFIG_RELOADED (``98``, ``unset``, ``inv1@h:502/1``)."""
    if value is None:
        return "unset"
    if key == "OTEL_EXPORTER_OTLP_ENDPOINT":
        return str(redact_url(str(value)))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "+".join(str(v) for v in value)
    return str(value)


@attrs.frozen
class ReloadPlan:
    """The outcome of comparing two settings: ``applied`` holds (key, old, new) as text."""

    applied: tuple[tuple[str, str, str], ...]
    needs_restart: tuple[str, ...]
    unchanged: tuple[str, ...]

    def applied_keys(self) -> tuple[str, ...]:
        return tuple(key for key, _, _ in self.applied)

    def log_fields(self) -> dict[str, Any]:
        """The fields of the one CONFIG_RELOADED line, e.g.
        ``applied=SOC_MAX_PCT:98->90 needs_restart=SPOOL_PATH unchanged=24``."""
        return {
            "applied": ",".join(f"{k}:{old}->{new}" for k, old, new in self.applied) or "none",
            "needs_restart": ",".join(self.needs_restart) or "none",
            "unchanged": len(self.unchanged),
        }


def plan_reload(running: Settings, loaded: Settings) -> ReloadPlan:
    """Sort every key into applied / needs_restart / unchanged (see the module docstring)."""
    applied: list[tuple[str, str, str]] = []
    restart: list[str] = []
    unchanged: list[str] = []
    for key in KNOWN_KEYS:
        old, new = getattr(running, _field(key)), getattr(loaded, _field(key))
        if old == new:
            unchanged.append(key)
        elif key in LIVE_KEYS:
            applied.append((key, _show(key, old), _show(key, new)))
        else:
            restart.append(key)
    return ReloadPlan(tuple(applied), tuple(restart), tuple(unchanged))


def live_settings(running: Settings, loaded: Settings) -> Settings:
    """The settings in force after a reload: ``loaded``'s live keys, ``running``'s others (a
    key that needs a restart keeps its running value, so /status never claims it applied)."""
    return attrs.evolve(running, **{_field(k): getattr(loaded, _field(k)) for k in LIVE_KEYS})
