"""The simulated inverter's own logic: settings, forced dispatch, its lease and its watchdog.

The job: keep the device-side state a client can change by writing registers (working mode,
cutoffs, power limits, forced charge/discharge and its period, heartbeat), decide the battery
setpoint from it, and advance the physics (:mod:`bessai.sim.model`) on Trio's clock.

Invariants:

* Time only moves forward through :meth:`SimulatedInverter.sync` (``now`` from
  ``trio.current_time()`` in the simulator), in steps of at most ``step_s``, split exactly at
  the lease and watchdog deadlines so that what happens at a deadline happens at that instant.
* Forced mode (mode tag = charge/discharge) holds only while its lease holds: the lease starts
  at the last write of the mode tag or of the lease tag (forcible period) and lasts
  ``period * unit``; a period of 0 means the command lapses at once. Write the period before
  the mode, as the profile's dispatch notes say. When the lease runs out the mode tag reads stop.
* Watchdog: no heartbeat write for ``device_timeout_s`` (armed at start) puts the device in
  comm loss: forced mode is cancelled, the battery idles (0 W) and the profile's ``comm_loss``
  tag reads its value (Huawei: device_status 0x0303). The next heartbeat write clears it.
* Outside forced mode the working mode decides: 2 (maximise self-consumption) charges PV
  surplus and covers the deficit; every other working mode idles the battery.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import attrs

from bessai.device.profile import Profile
from bessai.sim.faults import Faults
from bessai.sim.logfmt import log
from bessai.sim.model import BatteryModel, DailyCurves, Limits, SiteParams

DEVICE_ON_GRID = 0x0200
DEVICE_FAULT = 0x0300
BATTERY_STANDBY = 1
BATTERY_RUNNING = 2
BATTERY_FAULT = 3
SELF_CONSUMPTION = 2


@attrs.frozen
class Roles:
    """Which tags play the watchdog and dispatch parts, and the device's own timeout."""

    heartbeat_tag: str = "heartbeat"
    device_timeout_s: float = 60.0
    comm_loss_tag: str | None = "device_status"
    comm_loss_value: int | None = 0x0303
    mode_tag: str = "forcible_mode"
    mode_stop: int = 0
    mode_charge: int = 1
    mode_discharge: int = 2
    charge_power_tag: str = "forcible_charge_power"
    discharge_power_tag: str = "forcible_discharge_power"
    lease_tag: str = "forcible_period"
    lease_unit_s: float = 60.0

    @classmethod
    def from_profile(cls, profile: Profile) -> Roles:
        w, d = profile.watchdog, profile.dispatch
        if w is None or d is None:  # a read-only map: nothing to force, no heartbeat to miss
            return cls(heartbeat_tag="", device_timeout_s=math.inf, comm_loss_tag=None,
                       comm_loss_value=None, mode_tag="", charge_power_tag="",
                       discharge_power_tag="", lease_tag="")
        return cls(
            heartbeat_tag=w.heartbeat_tag,
            device_timeout_s=w.device_timeout_s,
            comm_loss_tag=w.comm_loss_tag,
            comm_loss_value=w.comm_loss_value,
            mode_tag=d.mode_tag,
            mode_stop=d.stop_value,
            mode_charge=d.charge_value,
            mode_discharge=d.discharge_value,
            charge_power_tag=d.charge_power_tag,
            discharge_power_tag=d.discharge_power_tag,
            lease_tag=d.lease.tag,
            lease_unit_s=60.0 if d.lease.unit == "min" else 1.0,
        )


@attrs.frozen
class WriteRecord:
    """One tag write as the device applied it (for tests and the log)."""

    at: float
    peer: str
    tag: str
    value: float | int | str


def default_settings(params: SiteParams) -> dict[str, float | int]:
    """A LUNA2000 as shipped: self-consumption, 100 %/10 % cutoffs, full power, no forcing."""
    return {
        "working_mode": SELF_CONSUMPTION,
        "charge_cutoff": 100.0,
        "discharge_cutoff": 10.0,
        "max_charging_power": params.max_charge_power_w,
        "max_discharging_power": params.max_discharge_power_w,
        "forcible_period": 0,
        "forcible_mode": 0,
        "forcible_setting_mode": 0,
        "forcible_charge_power": 0,
        "forcible_discharge_power": 0,
    }


@attrs.define(on_setattr=attrs.setters.NO_OP)
class SimulatedInverter:
    """Device state machine + physics. All methods take ``now`` (Trio seconds)."""

    roles: Roles
    model: BatteryModel
    curves: DailyCurves
    start_time: float
    start_of_day_s: float = 12 * 3_600.0
    step_s: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    min_step_s: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    faults: Faults = attrs.field(factory=Faults)
    settings: dict[str, float | int | str] = attrs.field(factory=dict)
    now: float = attrs.field(default=math.nan)
    lease_start: float | None = None
    watchdog_deadline: float = 0.0
    comm_lost: bool = False
    heartbeat_count: int = 0
    write_log: list[WriteRecord] = attrs.field(factory=list)
    write_log_max: int = 10_000
    derive: Callable[[dict[str, float | int | str | None]], None] | None = None
    """Adds register-map specific values (a SunSpec map's aliases) before faults apply."""

    def __attrs_post_init__(self) -> None:
        if math.isnan(self.now):
            self.now = self.start_time
        for name, value in default_settings(self.model.params).items():
            self.settings.setdefault(name, value)
        self.settings.setdefault(self.roles.mode_tag, self.roles.mode_stop)
        self.restart_clock(self.start_time)

    def restart_clock(self, now: float) -> None:
        """Make ``now`` the device's time zero (power flows as at that instant, watchdog armed)."""
        self.start_time = self.now = now
        self.watchdog_deadline = now + self.roles.device_timeout_s
        tod = self.time_of_day_s(now)
        pv, load = self.curves.pv_w(tod), self.curves.load_w(tod)
        m = self.model
        m.pv_power_w, m.load_power_w = pv, load
        m.battery_power_w = m.clamp(self.target_power_w(pv, load), self.limits())

    # ---- what the device is doing -------------------------------------------------------
    @property
    def forced_mode(self) -> int:
        return int(self.settings.get(self.roles.mode_tag, self.roles.mode_stop))

    @property
    def lease_deadline(self) -> float | None:
        if self.forced_mode == self.roles.mode_stop or self.lease_start is None:
            return None
        period = float(self.settings.get(self.roles.lease_tag, 0) or 0)
        return self.lease_start + period * self.roles.lease_unit_s

    def time_of_day_s(self, now: float | None = None) -> float:
        return self.start_of_day_s + ((self.now if now is None else now) - self.start_time)

    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            max_charge_w=float(s.get("max_charging_power", math.inf)),
            max_discharge_w=float(s.get("max_discharging_power", math.inf)),
            charge_cutoff_pct=float(s.get("charge_cutoff", 100.0)),
            discharge_cutoff_pct=float(s.get("discharge_cutoff", 0.0)),
        )

    def target_power_w(self, pv_w: float, load_w: float) -> float:
        """The battery setpoint (+ charge) the device's own logic asks for."""
        if self.comm_lost or self.faults.device_fault:
            return 0.0
        mode = self.forced_mode
        r = self.roles
        if mode == r.mode_charge:
            return float(self.settings.get(r.charge_power_tag, 0) or 0)
        if mode == r.mode_discharge:
            return -float(self.settings.get(r.discharge_power_tag, 0) or 0)
        if int(self.settings.get("working_mode", SELF_CONSUMPTION)) == SELF_CONSUMPTION:
            return pv_w - load_w
        return 0.0

    def next_event_time(self) -> float:
        """When the device next has something to decide (lease or watchdog deadline)."""
        candidates = [self.now + 60.0]
        if not self.comm_lost:
            candidates.append(self.watchdog_deadline)
        if (lease := self.lease_deadline) is not None:
            candidates.append(lease)
        return max(self.now, min(candidates))

    # ---- advancing time ---------------------------------------------------------------------
    def _due(self, now: float) -> bool:
        lease = self.lease_deadline
        return (lease is not None and now >= lease) or (
            not self.comm_lost and now >= self.watchdog_deadline
        )

    def sync(self, now: float, *, exact: bool = False) -> None:
        """Advance the device and the physics to ``now``.

        Spans shorter than ``min_step_s`` with no deadline in them are left to accumulate
        (the next sync integrates them), which keeps a busy client cheap without losing energy.
        ``exact`` (before a write) always advances, so a new setpoint starts at its instant.
        """
        if not exact and now - self.now < self.min_step_s and not self._due(now):
            return
        while True:
            self._fire_due_events()
            if self.now >= now:
                return
            boundary = min(now, self.now + self.step_s)
            if not self.comm_lost:
                boundary = min(boundary, max(self.watchdog_deadline, self.now))
            if (lease := self.lease_deadline) is not None:
                boundary = min(boundary, max(lease, self.now))
            dt = boundary - self.now
            if dt <= 0:
                # a deadline exactly at self.now: fire it and go on
                self._fire_due_events()
                boundary = min(now, self.now + self.step_s)
                dt = boundary - self.now
            mid = self.time_of_day_s(self.now + dt / 2)
            pv, load = self.curves.pv_w(mid), self.curves.load_w(mid)
            self.model.step(dt, self.target_power_w(pv, load), pv, load, self.limits())
            self.now = boundary

    def _fire_due_events(self) -> None:
        r = self.roles
        lease = self.lease_deadline
        if lease is not None and self.now >= lease:
            self.settings[r.mode_tag] = r.mode_stop
            self.lease_start = None
            log(logging.INFO, "FORCED_MODE_END", reason="lease_expired", at=round(self.now, 3))
        if not self.comm_lost and self.now >= self.watchdog_deadline:
            self.comm_lost = True
            was_forced = self.forced_mode != r.mode_stop
            self.settings[r.mode_tag] = r.mode_stop
            self.lease_start = None
            log(
                logging.WARNING,
                "COMM_LOSS",
                timeout_s=r.device_timeout_s,
                forced_mode_cancelled=was_forced,
                at=round(self.now, 3),
            )

    # ---- client writes ----------------------------------------------------------------------
    def write(self, tag: str, value: float | int | str, now: float, peer: str = "-") -> None:
        """Apply one validated tag write at ``now`` (call :meth:`sync` first)."""
        r = self.roles
        record = WriteRecord(at=now, peer=peer, tag=tag, value=value)
        self.write_log.append(record)
        if len(self.write_log) > self.write_log_max:
            del self.write_log[: len(self.write_log) - self.write_log_max]
        if tag == r.heartbeat_tag:
            self.heartbeat_count += 1
            self.watchdog_deadline = now + r.device_timeout_s
            if self.comm_lost:
                self.comm_lost = False
                log(logging.INFO, "COMM_RESTORED", peer=peer, at=round(now, 3))
            log(logging.DEBUG, "heartbeat", peer=peer, count=self.heartbeat_count)
            return
        log(logging.INFO, "client_write", peer=peer, tag=tag, value=value)
        self.settings[tag] = value
        if tag == r.mode_tag:
            if int(value) == r.mode_stop:
                self.lease_start = None
            else:
                self.lease_start = now
        elif tag == r.lease_tag and self.forced_mode != r.mode_stop:
            self.lease_start = now

    # ---- what the registers show ------------------------------------------------------------
    def values(self) -> dict[str, float | int | str | None]:
        """Engineering values by tag name (tags absent here read as invalid or 0)."""
        m, p = self.model, self.model.params
        fault = self.faults.device_fault
        battery_status = (
            BATTERY_FAULT
            if fault
            else BATTERY_RUNNING
            if abs(m.battery_power_w) >= 1
            else BATTERY_STANDBY
        )
        device_status = DEVICE_FAULT if fault else DEVICE_ON_GRID
        tod = self.time_of_day_s()
        out: dict[str, float | int | str | None] = {
            "soc": round(m.soc_pct, 1),
            "battery_power": round(m.battery_power_w),
            "battery_temp": round(m.temp_c, 1),
            "battery_status": battery_status,
            "active_power": round(m.active_power_w),
            "input_power": round(m.pv_power_w),
            "meter_power": round(m.meter_power_w),
            "device_status": device_status,
            "inverter_temp": round(m.inverter_temp_c, 1),
            "grid_frequency": round(50.0 + 0.02 * math.sin(2 * math.pi * tod / 600.0), 2),
            "rated_capacity": round(p.rated_capacity_wh),
            "max_charge_power": round(p.max_charge_power_w),
            "max_discharge_power": round(p.max_discharge_power_w),
            "state_1": 0b110 if not fault else 0b1000,  # grid-connected (normally) / shutdown
            "state_2": 0b111,  # unlocked, PV connected, DSP data collection
            "state_3": 0,
            "alarm_1": 0,
            "alarm_2": 0,
            "alarm_3": 0,
        }
        out.update(self.settings)
        if self.derive is not None:
            self.derive(out)
        if self.comm_lost and self.roles.comm_loss_tag is not None:
            out[self.roles.comm_loss_tag] = self.roles.comm_loss_value
        if self.faults.pinned:
            out.update(self.faults.pinned)
        for name in self.faults.invalid_tags:
            out[name] = None  # the register image encodes None as the invalid sentinel
        return out
