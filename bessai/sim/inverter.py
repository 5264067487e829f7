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

from bessai.device.profile import DispatchSpec, Profile, WatchdogSpec
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
class WriteRecord:
    """One tag write as the device applied it (for tests and the log)."""

    at: float
    peer: str
    tag: str
    value: float | int | str


def default_settings(params: SiteParams, dispatch: DispatchSpec | None) -> dict[str, float | int]:
    """A LUNA2000 as shipped: self-consumption, 100 %/10 % cutoffs, full power, no forcing
    (every other tag the profile's dispatch writes reads 0, the mode tag its stop value)."""
    settings: dict[str, float | int] = {}
    if dispatch is not None:
        written = (dispatch.lease.tag, dispatch.charge_power_tag, dispatch.discharge_power_tag,
                   *(w.tag for w in (*dispatch.preset, *dispatch.auto)))
        settings.update(dict.fromkeys(written, 0))
        settings[dispatch.mode_tag] = dispatch.stop_value
    settings.update({
        "working_mode": SELF_CONSUMPTION,
        "charge_cutoff": 100.0,
        "discharge_cutoff": 10.0,
        "max_charging_power": params.max_charge_power_w,
        "max_discharging_power": params.max_discharge_power_w,
    })
    return settings


@attrs.define(on_setattr=attrs.setters.NO_OP)
class SimulatedInverter:
    """Device state machine + physics. All methods take ``now`` (Trio seconds).

    The watchdog and dispatch roles (which tag is the heartbeat, the mode, the lease...) are the
    profile's own ``watchdog`` and ``dispatch`` sections, read where they are used.
    """

    profile: Profile
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
    _watchdog: WatchdogSpec | None = attrs.field(init=False)
    _dispatch: DispatchSpec | None = attrs.field(init=False)
    """The profile's own sections (references, looked up once: `sync` is the hot path)."""

    def __attrs_post_init__(self) -> None:
        if math.isnan(self.now):
            self.now = self.start_time
        self._watchdog, self._dispatch = self.profile.watchdog, self.profile.dispatch
        for name, value in default_settings(self.model.params, self._dispatch).items():
            self.settings.setdefault(name, value)
        self.restart_clock(self.start_time)

    def restart_clock(self, now: float) -> None:
        """Make ``now`` the device's time zero (power flows as at that instant, watchdog armed)."""
        self.start_time = self.now = now
        self.watchdog_deadline = now + self._device_timeout_s
        tod = self.time_of_day_s(now)
        pv, load = self.curves.pv_w(tod), self.curves.load_w(tod)
        m = self.model
        m.pv_power_w, m.load_power_w = pv, load
        m.battery_power_w = m.clamp(self.target_power_w(pv, load), self.limits())

    # ---- what the device is doing -------------------------------------------------------
    @property
    def _device_timeout_s(self) -> float:
        """No heartbeat for this long is comm loss (never, without a watchdog section)."""
        w = self._watchdog
        return math.inf if w is None else w.device_timeout_s

    @property
    def forced_mode(self) -> int:
        """The mode tag's value (a read-only device, without one, is never forced: 0)."""
        d = self._dispatch
        if d is None:
            return 0
        return int(self.settings.get(d.mode_tag, d.stop_value))

    @property
    def forcing(self) -> bool:
        d = self._dispatch
        return d is not None and self.forced_mode != d.stop_value

    @property
    def lease_deadline(self) -> float | None:
        d = self._dispatch
        if (d is None or self.lease_start is None
                or int(self.settings.get(d.mode_tag, d.stop_value)) == d.stop_value):
            return None
        period = float(self.settings.get(d.lease.tag, 0) or 0)
        return self.lease_start + period * d.lease.unit_s

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
        d = self._dispatch
        if d is not None:
            mode = int(self.settings.get(d.mode_tag, d.stop_value))
            if mode == d.charge_value:
                return float(self.settings.get(d.charge_power_tag, 0) or 0)
            if mode == d.discharge_value:
                return -float(self.settings.get(d.discharge_power_tag, 0) or 0)
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

    def _stop_forcing(self) -> None:
        d = self._dispatch
        if d is not None:
            self.settings[d.mode_tag] = d.stop_value
        self.lease_start = None

    def _fire_due_events(self) -> None:
        lease = self.lease_deadline
        if lease is not None and self.now >= lease:
            self._stop_forcing()
            log(logging.INFO, "FORCED_MODE_END", reason="lease_expired", at=round(self.now, 3))
        if not self.comm_lost and self.now >= self.watchdog_deadline:
            self.comm_lost = True
            was_forced = self.forcing
            self._stop_forcing()
            log(
                logging.WARNING,
                "COMM_LOSS",
                timeout_s=self._device_timeout_s,
                forced_mode_cancelled=was_forced,
                at=round(self.now, 3),
            )

    # ---- client writes ----------------------------------------------------------------------
    def write(self, tag: str, value: float | int | str, now: float, peer: str = "-") -> None:
        """Apply one validated tag write at ``now`` (call :meth:`sync` first)."""
        w, d = self._watchdog, self._dispatch
        record = WriteRecord(at=now, peer=peer, tag=tag, value=value)
        self.write_log.append(record)
        if len(self.write_log) > self.write_log_max:
            del self.write_log[: len(self.write_log) - self.write_log_max]
        if w is not None and tag == w.heartbeat_tag:
            self.heartbeat_count += 1
            self.watchdog_deadline = now + w.device_timeout_s
            if self.comm_lost:
                self.comm_lost = False
                log(logging.INFO, "COMM_RESTORED", peer=peer, at=round(now, 3))
            log(logging.DEBUG, "heartbeat", peer=peer, count=self.heartbeat_count)
            return
        log(logging.INFO, "client_write", peer=peer, tag=tag, value=value)
        self.settings[tag] = value
        if d is None:
            return
        if tag == d.mode_tag:
            self.lease_start = None if int(value) == d.stop_value else now
        elif tag == d.lease.tag and self.forcing:
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
        w = self._watchdog
        if self.comm_lost and w is not None:
            out[w.comm_loss_tag] = w.comm_loss_value
        if self.faults.pinned:
            out.update(self.faults.pinned)
        for name in self.faults.invalid_tags:
            out[name] = None  # the register image encodes None as the invalid sentinel
        return out
