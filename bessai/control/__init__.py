"""Local control: what keeps the battery safe when the cloud is gone.

One site per device, wired by `build_site` and supervised rest_for_one:

* `DeviceLink` — owns the device's one Modbus connection; polls; serves writes by `Priority`.
* `SafetyGuard` — evaluates every snapshot (`evaluate`, `Limits`), logs SAFETY_BLOCK, stops
  forcing that worsens a condition.
* `Watchdog` — heartbeat and lease renewal through the device link, whatever the cloud does.
* `CommandGate` — every dispatch command passes here (`handle_command_message`): parsed,
  checked (site, device, expiry, safety), clamped, applied by the `Dispatcher`, recorded.
* Schedules (issue 15) — `parse_schedule` / `Schedule` (the value and its validation),
  `ScheduleStore` / `ScheduleBook` (durable, per device), `ScheduleIntake` (schedule messages on
  the commands subscription), `ScheduleExecutor` (a site child that runs the plan through the
  `Dispatcher`), `bessai.control.controllers` (peak_shave, export_limit).

Critical events leave through the `EventOutbox` (never blocks, never drops).
"""

from bessai.control.command import InvalidCommand, parse_command
from bessai.control.context import LinkHandle, SiteContext
from bessai.control.controllers import ControllerConfig
from bessai.control.device_link import DeviceLink, LinkDown, LinkStatus, Priority
from bessai.control.dispatch import Dispatcher, DispatchTags
from bessai.control.events import EventOutbox
from bessai.control.executor import DirectCommands, ScheduleExecutor
from bessai.control.gate import (
    CommandGate,
    CommandPolicy,
    CommandRouter,
    Decision,
    Outcome,
    PowerLimits,
    decide,
    power_limits,
)
from bessai.control.guard import SafetyGuard
from bessai.control.limits import Limits, RuleHit, SafetyState, evaluate, limits_from
from bessai.control.schedule import InvalidSchedule, Schedule, Slot, SlotAction, parse_schedule
from bessai.control.schedule_intake import ScheduleIntake
from bessai.control.schedule_store import ScheduleBook, ScheduleStore
from bessai.control.site import Site, SiteConfig, build_site, site_from_settings
from bessai.control.watchdog import Watchdog
from bessai.link import LinkState

__all__ = [
    "CommandGate",
    "CommandPolicy",
    "CommandRouter",
    "ControllerConfig",
    "Decision",
    "DeviceLink",
    "DirectCommands",
    "DispatchTags",
    "Dispatcher",
    "EventOutbox",
    "InvalidCommand",
    "InvalidSchedule",
    "Limits",
    "LinkDown",
    "LinkHandle",
    "LinkState",
    "LinkStatus",
    "Outcome",
    "PowerLimits",
    "Priority",
    "RuleHit",
    "SafetyGuard",
    "SafetyState",
    "Schedule",
    "ScheduleBook",
    "ScheduleExecutor",
    "ScheduleIntake",
    "ScheduleStore",
    "Site",
    "SiteConfig",
    "SiteContext",
    "Slot",
    "SlotAction",
    "Watchdog",
    "build_site",
    "decide",
    "evaluate",
    "limits_from",
    "parse_command",
    "parse_schedule",
    "power_limits",
    "site_from_settings",
]
