"""The watchdog: feeds the device's heartbeat and renews forced commands, whatever the cloud does.

Two loops, one per job, both through the device link (HEARTBEAT priority, ahead of dispatch and
reads) and both on Trio's clock:

* **Heartbeat** — writes the profile's heartbeat (a constant, or a counter) every ``interval_s``
  on a fixed schedule (no drift). If the link is down, it waits for the link and writes the
  moment it is back, then resumes the schedule. Every gap between two acknowledged heartbeats is
  recorded (``bessai.watchdog.heartbeat_gap_s``). ``HEARTBEAT_LATE`` is logged the moment the
  gap passes the interval plus ``late_tolerance_s`` (while it is happening, well before the
  device's own timeout), once; ``HEARTBEAT_RESTORED gap_s=...`` when a heartbeat lands again.
* **Lease** — while the gateway holds a forced command, rewrites the device-side lease (Huawei
  forcible period, 47083) every ``renew_interval_s`` — well inside the lease — and ends the
  command at its ``expires_at``. If the gateway dies, nobody renews, and the device leaves forced
  mode by itself within one lease: that is the dead-man switch.

Invariant: nothing here waits on the cloud, the spool or telemetry. A device error on one
heartbeat is logged and the schedule goes on; only a bug escapes `run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio

from bessai.control.context import SiteContext
from bessai.control.device_link import LinkDown, Priority

if TYPE_CHECKING:
    from bessai.device.profile import WatchdogSpec

log = structlog.get_logger("bessai.control.watchdog")


@attrs.define(eq=False)
class Watchdog:
    """Heartbeat and lease renewal for one device. Run it under the site supervisor."""

    ctx: SiteContext
    heartbeat: WatchdogSpec | None = None
    """The profile's watchdog section, the one statement of what to write and how often;
    ``None`` (a read-only profile) writes no heartbeat and only renews leases."""
    renew_interval_s: float = 20.0
    late_tolerance_s: float = 1.0
    last_beat_at: float | None = None
    beats: int = 0
    max_gap_s: float = 0.0
    _stop: trio.Event = attrs.field(factory=trio.Event)
    _beat_failing: bool = False
    _lease_failing: bool = False
    _late: bool = False
    _beaten: trio.Event = attrs.field(factory=trio.Event)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat_loop)
            nursery.start_soon(self._late_loop)
            nursery.start_soon(self._lease_loop)
            task_status.started(self)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _heartbeat_loop(self) -> None:
        if self.heartbeat is None:
            return  # the profile names no heartbeat: nothing is written
        values = self.heartbeat.heartbeat_values()
        value = next(values)
        due = trio.current_time()
        while True:
            await trio.sleep_until(due)
            try:
                await self._beat(value)
            except LinkDown:
                await self.ctx.link.wait_up()  # and beat the moment it is back
                continue
            except trio.Cancelled:
                raise
            except Exception as exc:  # refused by the device: keep the schedule
                if not self._beat_failing:  # once per streak, not every interval
                    log.error("HEARTBEAT_FAILED", site=self.ctx.site_id,
                              device=self.ctx.device_id, tag=self._fed.heartbeat_tag,
                              error=str(exc),
                              next_try_in_s=self._fed.interval_s)
                self._beat_failing = True
                self.ctx.metrics.count("bessai.watchdog.heartbeat_failures",
                                       device=self.ctx.device_id)
            else:
                if self._beat_failing and not self._late:  # a late streak says it itself
                    log.warning("HEARTBEAT_RESTORED", site=self.ctx.site_id,
                                device=self.ctx.device_id)
                self._beat_failing = False
                value = next(values)
            now = trio.current_time()
            due += self._fed.interval_s
            if due <= now:  # we fell behind (link outage): restart the schedule from now
                due = now + self._fed.interval_s

    async def _beat(self, value: int) -> None:
        await self.ctx.link.write(self._fed.heartbeat_tag, value, Priority.HEARTBEAT)
        now = trio.current_time()
        if self.last_beat_at is not None:
            gap = now - self.last_beat_at
            self.max_gap_s = max(self.max_gap_s, gap)
            self.ctx.metrics.record("bessai.watchdog.heartbeat_gap_s", gap,
                                    device=self.ctx.device_id)
            if self._late:
                log.warning("HEARTBEAT_RESTORED", site=self.ctx.site_id,
                            device=self.ctx.device_id, gap_s=round(gap, 3))
            elif gap > self._late_after_s:  # late, but the monitor had no chance to say so
                self._report_late(gap)
        self._late = False
        self.last_beat_at = now
        self.beats += 1
        stats = self.ctx.heartbeat  # published for the status endpoint (outlives a restart)
        if stats.last_beat_at is not None:
            stats.max_gap_s = max(stats.max_gap_s, now - stats.last_beat_at)
        stats.last_beat_at = now
        stats.beats += 1
        self._beaten.set()
        self._beaten = trio.Event()

    @property
    def _fed(self) -> WatchdogSpec:
        """The heartbeat being fed: asked only by the heartbeat loop and what it starts, which
        run only when the profile has one."""
        assert self.heartbeat is not None
        return self.heartbeat

    @property
    def _late_after_s(self) -> float:
        return self._fed.interval_s + self.late_tolerance_s

    def _report_late(self, gap_s: float) -> None:
        log.warning("HEARTBEAT_LATE", site=self.ctx.site_id, device=self.ctx.device_id,
                    gap_s=round(gap_s, 3), interval_s=self._fed.interval_s,
                    device_timeout_s=self._fed.device_timeout_s)
        self.ctx.metrics.count("bessai.watchdog.heartbeat_late", device=self.ctx.device_id)

    async def _late_loop(self) -> None:
        """Say ``HEARTBEAT_LATE`` when the gap since the last acknowledged heartbeat passes the
        threshold — while the device still counts down its own timeout, not after recovery."""
        if self.heartbeat is None:
            return  # no heartbeat, nothing to be late
        while True:
            last = self.last_beat_at
            if last is None:  # nothing to be late against before the first heartbeat
                await self._beaten.wait()
                continue
            await trio.sleep_until(last + self._late_after_s)
            if self.last_beat_at != last:
                continue  # a heartbeat landed in time
            self._late = True
            self._report_late(trio.current_time() - last)
            await self._beaten.wait()

    async def _lease_loop(self) -> None:
        renew_now = False
        while True:
            dispatcher = self.ctx.dispatcher
            delay = 0.0 if renew_now else self.renew_interval_s
            if dispatcher is not None and dispatcher.active is not None:
                # wake at the command's expiry too, to end it on time
                left = dispatcher.active.command.expires_at - self.ctx.wall_clock()
                delay = max(0.0, min(delay, left))
            await trio.sleep(delay)
            renew_now = False
            dispatcher = self.ctx.dispatcher
            if dispatcher is None or dispatcher.active is None:
                continue
            try:
                await dispatcher.renew()
            except LinkDown:
                await self.ctx.link.wait_up()
                renew_now = True  # the moment the link is back
                continue
            except trio.Cancelled:
                raise
            except Exception as exc:
                if not self._lease_failing:
                    log.error("LEASE_RENEW_FAILED", site=self.ctx.site_id,
                              device=self.ctx.device_id, error=str(exc),
                              consequence="the device ends forcing when its lease runs out")
                self._lease_failing = True
                self.ctx.metrics.count("bessai.watchdog.lease_failures",
                                       device=self.ctx.device_id)
            else:
                self._lease_failing = False
