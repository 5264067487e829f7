"""Dispatch: putting an accepted command on the device, and taking it off again.

To force charge or discharge (the device profile's ``dispatch`` section, the one source of the
tags and values): write the presets (Huawei: forcible setting mode 0 = by time), the power tag,
the lease (Huawei: forcible period, minutes), then the mode tag (Huawei: 1 charge, 2 discharge)
— all at DISPATCH priority. ``stop`` writes the mode tag's stop value (forcing ends; the device
follows its working mode); ``auto`` writes the profile's ``auto`` writes (Huawei: the same,
forcible mode 0). A profile without a dispatch section makes the device read-only.

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

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import structlog
import trio

from bessai.clock import WallClock
from bessai.control.device_link import Priority
from bessai.device.profile import DispatchSpec, Profile, TagWrite
from bessai.model import Action, Command

log = structlog.get_logger("bessai.control.dispatch")


class Writer(Protocol):
    async def write(self, tag: str, value: float | int, priority: Priority) -> None: ...


@attrs.frozen
class DispatchTags:
    """What dispatch needs of a device profile: the profile's own `DispatchSpec` (None: the
    profile has no dispatch section, the device is read-only) and the most power its power tags
    accept. Build it with `from_profile`: it states no roles or values of its own, the profile
    is their one source.
    """

    spec: DispatchSpec | None = None
    """None: every command is refused and nothing is written (the default, for a guard or an
    executor built without a profile)."""
    charge_power_max_w: float | None = None
    discharge_power_max_w: float | None = None

    @classmethod
    def from_profile(cls, profile: Profile) -> DispatchTags:
        """From a loaded `bessai.device.Profile` (its ``dispatch`` spec and the power tags' max)."""
        spec = profile.dispatch
        if spec is None:
            return cls()

        def tag_max(name: str) -> float | None:
            tag = profile.tags.get(name)
            return None if tag is None else tag.max

        return cls(spec, tag_max(spec.charge_power_tag), tag_max(spec.discharge_power_tag))

    @property
    def read_only(self) -> bool:
        return self.spec is None

    @property
    def mode_tag(self) -> str:
        """The tag that forces and stops ("" on a read-only device: nothing to read or write)."""
        return "" if self.spec is None else self.spec.mode_tag

    @property
    def stop_value(self) -> int:
        return 0 if self.spec is None else self.spec.stop_value

    @property
    def renew_interval_s(self) -> float:
        """How often the watchdog renews the lease (never, on a read-only device: nothing can
        be forced there)."""
        return math.inf if self.spec is None else self.spec.lease.renew_interval_s

    def forcing(self, value: object) -> Action | None:
        """Which forced direction a mode-tag reading means (None: not forcing / unknown)."""
        if self.spec is None:
            return None
        if value == self.spec.charge_value:
            return Action.CHARGE
        if value == self.spec.discharge_value:
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
    tags: DispatchTags
    wall_clock: WallClock | None = None
    blocked: Callable[[Action], bool] | None = None
    site_id: str = ""
    device_id: str = ""
    active: ActiveForcing | None = None
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    _stops: int = 0

    def _spec(self) -> DispatchSpec:
        if self.tags.spec is None:
            raise ReadOnlyDevice(f"device {self.device_id} is read-only: its profile has no "
                                 "dispatch section (no writable storage controls)")
        return self.tags.spec

    async def apply(self, command: Command, power_w: float | None) -> None:
        """Put ``command`` on the device. Raises if a write failed (the caller reports it)."""
        spec = self._spec()
        async with self._lock:
            if command.action is Action.STOP:
                self.active = None
                await self._write(spec.mode_tag, spec.stop_value)
                return
            if command.action is Action.AUTO:
                self.active = None
                await self._write_all(spec.auto or (TagWrite(spec.mode_tag, spec.stop_value),))
                return
            charging = command.action is Action.CHARGE
            power = float(command.power_w if power_w is None else power_w)
            stops_before = self._stops
            await self._write_all(spec.preset)
            await self._write(spec.charge_power_tag if charging else spec.discharge_power_tag,
                              _whole(power))
            await self._write(spec.lease.tag, spec.lease.period)
            if self.blocked is not None and self.blocked(command.action):
                raise DispatchStopped(f"{command.action.value} became blocked by safety while "
                                      "the command was being applied; not forcing")
            mode = spec.charge_value if charging else spec.discharge_value
            await self._write(spec.mode_tag, mode)
            if self._stops != stops_before:
                # A safety stop landed while we wrote: it wins; write stop again after our mode.
                await self.writer.write(spec.mode_tag, spec.stop_value, Priority.SAFETY)
                raise DispatchStopped(f"{command.action.value} stopped by safety while it was "
                                      "being applied")
            now = trio.current_time()
            self.active = ActiveForcing(command, command.action, power, now, now)
            log.info("forced_mode_started", site=self.site_id, device=self.device_id,
                     command_id=command.id, action=command.action.value, power_w=power,
                     lease_s=spec.lease.period_s)

    async def renew(self) -> None:
        """Rewrite the lease of the active forcing, or end it if its command has expired."""
        async with self._lock:
            active = self.active
            if active is None:
                return
            spec = self._spec()
            if self.wall_clock is not None and active.command.expires_at <= self.wall_clock():
                self.active = None
                log.info("FORCED_MODE_END", site=self.site_id, device=self.device_id,
                         command_id=active.command.id, reason="command expired")
                await self._write(spec.mode_tag, spec.stop_value)
                return
            if trio.current_time() - active.renewed_at >= spec.lease.period_s:
                # The device dropped it by itself (lease ran out while we could not reach it).
                # Resuming a command silently after an outage is not ours to decide: the cloud
                # sends a fresh one.
                self.active = None
                log.warning("FORCED_MODE_END", site=self.site_id, device=self.device_id,
                            command_id=active.command.id,
                            reason="lease lapsed while the device was unreachable")
                return
            await self.writer.write(spec.lease.tag, spec.lease.period, Priority.HEARTBEAT)
            if self.active is active:
                self.active = attrs.evolve(active, renewed_at=trio.current_time())

    async def safety_stop(self) -> ActiveForcing | None:
        """Stop forcing at once at SAFETY priority (never waits for an apply in progress).

        Returns what was active (None if the gateway knew of no forcing: the device may still
        have been forced, by a previous gateway instance or by hand). Raises if the write failed.
        """
        spec = self.tags.spec
        if spec is None:
            return None
        self._stops += 1
        was = self.active
        await self.writer.write(spec.mode_tag, spec.stop_value, Priority.SAFETY)
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
