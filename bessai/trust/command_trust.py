"""What the command path asks before it trusts a command: who signed it, whether it was seen
before, and whether the gateway's clock can judge it.

The pipeline for one Pub/Sub message is parse → `CommandTrust.verify` (router) → gate, and in
the gate: `admit` (durable replay check, claims the id) → decide with `expiry_now` →
`refuse_forcing` (clock trust). Every refusal is a reason string whose first word names it
(``signature_missing``, ``signature_unknown_key``, ``signature_invalid``, ``signature_scope``,
``replay``, ``replay_store_unavailable``, ``clock_untrusted``): the gate turns it into
COMMAND_REJECTED and a command_result message like any other rejection.

Invariants:

- Without COMMAND_VERIFY_KEYS nothing is verified (``authenticated`` False: logged at start as
  COMMANDS_UNAUTHENTICATED, shown on /status and by ``bessai check-config``).
- `verify` runs before `admit`, so a message that fails verification never burns its id.
- A failing replay store (a full, read-only or locked disk) is a state (REPLAY_STORE_FAILED
  once, REPLAY_STORE_RECOVERED once). While it lasts, claimed ids are held in memory (at most
  `HELD_IDS_MAX`) and written to the store when it works again, so a disk fault neither stops
  dispatch nor lets a copy through in the same run; ids already on disk are still read. Only
  past that bound are charge and discharge refused (``replay_store_unavailable``); stop and auto
  always go through (they end forcing, which is never less safe).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog

from bessai.bounds import clip
from bessai.clock import WallClock, system_wall_clock
from bessai.model import Action, Command
from bessai.observe.sink import NULL_SINK, MetricSink
from bessai.trust.keys import VerifyKeys
from bessai.trust.replay import ReplayStore, ReplayStoreError, store_path_for
from bessai.trust.signature import verify_command
from bessai.trust.skew import DEFAULT_MAX_SKEW_S, SkewTracker

log = structlog.get_logger("bessai.trust")

_FORCING = (Action.CHARGE, Action.DISCHARGE)

HELD_IDS_MAX = 10_000
"""Command ids held in memory while the replay store cannot be written (each a few hundred
bytes); past it, charge/discharge are refused until the store works again."""


@attrs.define(eq=False)
class CommandTrust:
    """One per gateway: the verify keys, the replay store and the clock's trust."""

    keys: VerifyKeys
    clock: SkewTracker
    replay: ReplayStore | None = None
    wall_clock: WallClock = system_wall_clock
    sink: MetricSink = NULL_SINK
    replay_fault: str | None = None
    """Why the replay store failed last (None while it works)."""
    held: dict[str, tuple[float, float]] = attrs.field(factory=dict)
    """Ids claimed while the store failed: id → (expires_at, handled_at), written on recovery."""

    @classmethod
    def from_settings(cls, settings: Any, *, wall_clock: WallClock = system_wall_clock,
                      sink: MetricSink = NULL_SINK) -> CommandTrust:
        """COMMAND_VERIFY_KEYS (a bad key file raises `KeyFileError`, a configuration error),
        CLOCK_SKEW_MAX_S, and the replay store beside SPOOL_PATH."""
        return cls(
            keys=VerifyKeys.load(getattr(settings, "command_verify_keys", None)),
            clock=SkewTracker(getattr(settings, "clock_skew_max_s", DEFAULT_MAX_SKEW_S),
                              wall_clock=wall_clock, sink=sink),
            replay=ReplayStore(store_path_for(Path(settings.spool_path))),
            wall_clock=wall_clock, sink=sink)

    @property
    def authenticated(self) -> bool:
        return self.keys.configured

    def announce(self, *, subscription: str | None) -> None:
        """At start: say loudly when commands are taken without authentication."""
        if subscription is None:
            return
        if self.authenticated:
            log.info("commands_authenticated", keys=",".join(sorted(self.keys.keys)),
                     source=str(self.keys.source))
        else:
            log.warning("COMMANDS_UNAUTHENTICATED", subscription=subscription,
                        risk="anyone who can publish to the commands topic can drive the "
                             "battery",
                        fix="set COMMAND_VERIFY_KEYS (ops/RUNBOOK.md, signed commands)")

    def reload_keys(self) -> bool:
        """For SIGHUP: re-read COMMAND_VERIFY_KEYS (the old set stays if the new one is bad)."""
        return self.keys.reload()

    def reconfigure(self, settings: Any) -> None:
        """For a reload of the whole configuration (SIGHUP with new settings): the verify keys
        from ``settings.command_verify_keys`` (a bad new set keeps the old one) and the clock
        limit ``settings.clock_skew_max_s``. The replay store stays where it is."""
        self.keys.reload(getattr(settings, "command_verify_keys", None))
        self.clock.max_skew_s = getattr(settings, "clock_skew_max_s", self.clock.max_skew_s)

    # ---- the router: who signed it ---------------------------------------------------------

    def verify(self, data: bytes, attributes: Mapping[str, str], command: Command) -> str | None:
        """The rejection reason for a command whose signature does not hold, else None."""
        return self.verify_scope(data, attributes, command.site_id, command.device_id)

    def verify_scope(self, data: bytes, attributes: Mapping[str, str], site_id: str,
                     device_id: str) -> str | None:
        """The rejection reason for a message (a command or a schedule) whose signature does not
        hold or whose signed body does not name ``site_id`` and ``device_id``, else None."""
        if not self.keys.configured:
            return None
        rejection = verify_command(data, attributes, self.keys, site_id=site_id,
                                   device_id=device_id)
        if rejection is None:
            return None
        self.sink.count("bessai.commands.signature_rejected", fault=rejection.fault.value)
        return rejection.reason

    # ---- the gate: seen before? can the clock judge it? --------------------------------------

    async def admit(self, command: Command) -> str | None:
        """Claim the command's id in the replay store; the refusal reason if it was handled
        before (or, for charge/discharge, if it can be recorded neither on disk nor in the
        bounded in-memory hold), else None."""
        if self.replay is None:
            return None
        now = self.wall_clock()
        trusted_now = now if self.clock.trusted else None
        if command.id in self.held:
            return _replayed(command)
        try:
            await self._write_held(trusted_now)
            new = await self.replay.claim(command.id, command.expires_at, now, trusted_now)
        except ReplayStoreError as exc:
            return await self._admit_while_failing(command, now, exc)
        if self.replay_fault is not None:
            self.replay_fault = None
            log.warning("REPLAY_STORE_RECOVERED", path=str(self.replay.path))
        return None if new else _replayed(command)

    async def _write_held(self, trusted_now: float | None) -> None:
        """Write the ids held during a store fault (oldest first); raises while it still fails."""
        assert self.replay is not None
        while self.held:
            command_id, (expires_at, handled_at) = next(iter(self.held.items()))
            await self.replay.claim(command_id, expires_at, handled_at, trusted_now)
            del self.held[command_id]

    async def _admit_while_failing(self, command: Command, now: float,
                                   exc: ReplayStoreError) -> str | None:
        assert self.replay is not None
        if self.replay_fault is None:
            log.error("REPLAY_STORE_FAILED", path=str(self.replay.path), error=clip(exc),
                      effect=f"command ids held in memory (at most {HELD_IDS_MAX}) and written "
                             "when the store works again; stop and auto always go through")
        self.replay_fault = clip(exc)
        try:
            seen = await self.replay.contains(command.id)  # reads work on a full disk
        except ReplayStoreError:
            seen = False
        if seen:
            return _replayed(command)
        if len(self.held) < HELD_IDS_MAX:
            self.held[command.id] = (command.expires_at, now)
            return None
        if command.action in _FORCING:
            return (f"replay_store_unavailable: the command-id store {self.replay.path} "
                    f"cannot be written ({clip(exc)}) and {HELD_IDS_MAX} ids are already held "
                    f"in memory — fix the disk, then send the command again")
        return None

    def expiry_now(self, local_wall: float) -> float:
        """The wall time expiry is judged by: server time while the local clock is untrusted."""
        return self.clock.server_now(local_wall)

    def refuse_forcing(self, command: Command) -> str | None:
        """``clock_untrusted`` for charge/discharge while the skew is over the limit."""
        if command.action not in _FORCING or self.clock.trusted:
            return None
        skew = self.clock.skew_s or 0.0
        side = "behind" if skew > 0 else "ahead of"
        return (f"clock_untrusted: this gateway's clock is {abs(skew):.0f} s {side} Pub/Sub's "
                f"(limit CLOCK_SKEW_MAX_S={self.clock.max_skew_s:g} s) — charge and discharge "
                f"are refused until the host clock is fixed (NTP/chrony); stop and auto still "
                f"work")

    # ---- introspection ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For /status: public facts only (key ids, never key material)."""
        return {"authenticated": self.authenticated, "keys": self.keys.status(),
                "clock": self.clock.status(),
                "replay_store": None if self.replay is None else
                {"path": str(self.replay.path), "fault": self.replay_fault}}


def _replayed(command: Command) -> str:
    return (f"replay: command id {clip(command.id)!r} was already handled by this gateway — a "
            f"copy is never applied again; send a new command with a fresh id")
