"""Dispatch: putting an accepted command on the device, and taking it off again.

To force charge or discharge (the profile's ``dispatch`` section, Huawei by default): write the
presets (forcible setting mode 0 = by time), the power tag, the lease (forcible period, minutes),
then the mode tag (1 charge, 2 discharge) — all at DISPATCH priority. ``stop`` writes the mode
tag's stop value (forcing ends; the device follows its working mode); ``auto`` writes the
profile's ``auto`` writes (Huawei: the same, forcible mode 0).

Invariants:

* **The device-side lease is the dead-man switch.** The watchdog calls `renew` well before the
  lease runs out; if the gateway dies, the device leaves forced mode by itself within one lease.
* **A command ends at its ``expires_at``.** `renew` stops forcing once the command has expired
  (wall time), instead of renewing it.
* **Safety wins.** `safety_stop` writes stop at SAFETY priority without waiting for an apply in
  progress; an apply that finds the direction blocked, or a safety stop that landed during it,
  does not leave the device forced (it re-writes stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import structlog
import trio

from bessai.control.device_link import Priority
from bessai.device.profile import TagWrite
from bessai.model import Action, Command

log = structlog.get_logger("bessai.control.dispatch")


class Writer(Protocol):
    async def write(self, tag: str, value: float | int, priority: Priority) -> None: ...


@attrs.frozen
class DispatchTags:
    """The dispatch half of a device profile, as dispatch needs it.

    Build it from a loaded profile with `from_profile`; the defaults are Huawei SUN2000's.
    """

    mode_tag: str = "forcible_mode"
    stop_value: int = 0
    charge_value: int = 1
    discharge_value: int = 2
    charge_power_tag: str = "forcible_charge_power"
    discharge_power_tag: str = "forcible_discharge_power"
    lease_tag: str = "forcible_period"
    lease_period: int = 1
    lease_period_s: float = 60.0
    renew_interval_s: float = 20.0
    preset: tuple[TagWrite, ...] = (TagWrite("forcible_setting_mode", 0),)
    auto: tuple[TagWrite, ...] = (TagWrite("forcible_mode", 0),)
    charge_power_max_w: float | None = None
    discharge_power_max_w: float | None = None
    read_only: bool = False
    """The profile has no dispatch section: every command is refused, nothing is written."""

    @classmethod
    def from_profile(cls, profile: Any) -> DispatchTags:
        """From `bessai.device.Profile` (its ``dispatch`` spec and the power tags' max)."""
        dp = profile.dispatch
        if dp is None:
            return cls(mode_tag="", charge_power_tag="", discharge_power_tag="", lease_tag="",
                       preset=(), auto=(), read_only=True)

        def tag_max(name: str) -> float | None:
            tag = profile.tags.get(name)
            return None if tag is None else tag.max

        return cls(
            mode_tag=dp.mode_tag, stop_value=dp.stop_value, charge_value=dp.charge_value,
            discharge_value=dp.discharge_value, charge_power_tag=dp.charge_power_tag,
            discharge_power_tag=dp.discharge_power_tag, lease_tag=dp.lease.tag,
            lease_period=dp.lease.period, lease_period_s=dp.lease.period_s,
            renew_interval_s=dp.lease.renew_interval_s,
            preset=tuple(dp.preset),
            auto=tuple(dp.auto),
            charge_power_max_w=tag_max(dp.charge_power_tag),
            discharge_power_max_w=tag_max(dp.discharge_power_tag),
        )

    def forcing(self, value: object) -> Action | None:
        """Which forced direction a mode-tag reading means (None: not forcing / unknown)."""
        if value == self.charge_value:
            return Action.CHARGE
        if value == self.discharge_value:
            return Action.DISCHARGE
        return None


@attrs.frozen
class ActiveForcing:
    """The forced command currently held on the device by the gateway."""

    command: Command
    action: Action
    power_w: float
    since: float  # Trio time
    renewed_at: float  # Trio time of the last lease write


class ReadOnlyDevice(RuntimeError):
    """A command for a device whose profile has no dispatch section (e.g. a SunSpec device
    without a writable storage model)."""


class DispatchStopped(RuntimeError):
    """A forced command was not left on the device because safety stopped it meanwhile."""


@attrs.define(eq=False)
class Dispatcher:
    """Applies commands through the device link; remembers the active forcing for the lease.

    ``blocked`` tells whether a direction is blocked right now (the guard's state): checked again
    just before the mode write, so a block that arrived during an apply wins.
    """

    writer: Writer
    tags: DispatchTags = DispatchTags()
    wall_clock: Any = None
    blocked: Any = None  # Callable[[Action], bool] | None
    site_id: str = ""
    device_id: str = ""
    active: ActiveForcing | None = None
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    _stops: int = 0

    async def apply(self, command: Command, power_w: float | None) -> None:
        """Put ``command`` on the device. Raises if a write failed (the caller reports it)."""
        if self.tags.read_only:
            raise ReadOnlyDevice(f"device {self.device_id} is read-only: its profile has no "
                                 "dispatch section (no writable storage controls)")
        async with self._lock:
            if command.action is Action.STOP:
                self.active = None
                await self._write(self.tags.mode_tag, self.tags.stop_value)
                return
            if command.action is Action.AUTO:
                self.active = None
                await self._write_all(self.tags.auto or
                                      (TagWrite(self.tags.mode_tag, self.tags.stop_value),))
                return
            charging = command.action is Action.CHARGE
            power = float(command.power_w if power_w is None else power_w)
            stops_before = self._stops
            await self._write_all(self.tags.preset)
            await self._write(self.tags.charge_power_tag if charging
                              else self.tags.discharge_power_tag, _whole(power))
            await self._write(self.tags.lease_tag, self.tags.lease_period)
            if self.blocked is not None and self.blocked(command.action):
                raise DispatchStopped(f"{command.action.value} became blocked by safety while "
                                      "the command was being applied; not forcing")
            mode = self.tags.charge_value if charging else self.tags.discharge_value
            await self._write(self.tags.mode_tag, mode)
            if self._stops != stops_before:
                # A safety stop landed while we wrote: it wins; write stop again after our mode.
                await self.writer.write(self.tags.mode_tag, self.tags.stop_value,
                                        Priority.SAFETY)
                raise DispatchStopped(f"{command.action.value} stopped by safety while it was "
                                      "being applied")
            now = trio.current_time()
            self.active = ActiveForcing(command, command.action, power, now, now)
            log.info("forced_mode_started", site=self.site_id, device=self.device_id,
                     command_id=command.id, action=command.action.value, power_w=power,
                     lease_s=self.tags.lease_period_s)

    async def renew(self) -> None:
        """Rewrite the lease of the active forcing, or end it if its command has expired."""
        async with self._lock:
            active = self.active
            if active is None:
                return
            if self.wall_clock is not None and active.command.expires_at <= self.wall_clock():
                self.active = None
                log.info("FORCED_MODE_END", site=self.site_id, device=self.device_id,
                         command_id=active.command.id, reason="command expired")
                await self._write(self.tags.mode_tag, self.tags.stop_value)
                return
            if trio.current_time() - active.renewed_at >= self.tags.lease_period_s:
                # The device dropped it by itself (lease ran out while we could not reach it).
                # Resuming a command silently after an outage is not ours to decide: the cloud
                # sends a fresh one.
                self.active = None
                log.warning("FORCED_MODE_END", site=self.site_id, device=self.device_id,
                            command_id=active.command.id,
                            reason="lease lapsed while the device was unreachable")
                return
            await self.writer.write(self.tags.lease_tag, self.tags.lease_period,
                                    Priority.HEARTBEAT)
            if self.active is active:
                self.active = attrs.evolve(active, renewed_at=trio.current_time())

    async def safety_stop(self) -> ActiveForcing | None:
        """Stop forcing at once at SAFETY priority (never waits for an apply in progress).

        Returns what was active (None if the gateway knew of no forcing: the device may still
        have been forced, by a previous gateway instance or by hand). Raises if the write failed.
        """
        if self.tags.read_only:
            return None
        self._stops += 1
        was = self.active
        await self.writer.write(self.tags.mode_tag, self.tags.stop_value, Priority.SAFETY)
        if self.active is was:
            self.active = None
        return was

    async def _write(self, tag: str, value: float | int) -> None:
        await self.writer.write(tag, value, Priority.DISPATCH)

    async def _write_all(self, writes: Sequence[TagWrite]) -> None:
        for w in writes:
            await self._write(w.tag, _whole(w.value))


def _whole(value: float) -> float | int:
    """Integral values as int (register tags are integers after gain)."""
    return int(value) if float(value).is_integer() else value
