"""The site supervisor (rest_for_one: device link → safety guard → watchdog) against the
in-process simulator, in virtual time: crashes restart the right children, outages restart none,
and a dead tree leaves the device to its own lease."""

import trio

from actors import ChildSpec, Supervisor
from bessai.clock import trio_wall_clock
from bessai.control.guard import SafetyGuard
from bessai.model import Action, Command
from bessai.sim import Simulator
from tests.sites import DEVICE, SITE, make_site


def command(action, power_w=2000.0, ttl_s=3600.0):
    now = trio_wall_clock()()
    return Command(f"c-{now}", SITE, DEVICE, action, power_w, now, now + ttl_s)


def restarts(sup):
    return {info.id: info.restarts for info in sup.which_children()}


async def test_site_supervisor_starts_link_guard_watchdog_in_order_and_feeds_the_device(
        autojump_clock):
    async with Simulator(soc_pct=50) as sim:
        site = make_site(sim)
        sup = site.supervisor()
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert [i.id for i in sup.which_children()] == ["device_link", "safety_guard",
                                                            "watchdog"]
            await trio.sleep(120)
            assert sim.state().heartbeat_count >= 12
            assert site.ctx.safety.ok
            sup.request_stop()
        assert site.ctx.link.current is None  # the link detached when it stopped


async def test_a_guard_crash_restarts_guard_and_watchdog_but_never_drops_the_link(
        autojump_clock):
    async with Simulator(soc_pct=50) as sim:
        site = make_site(sim)
        crashes = []

        class CrashOnce(SafetyGuard):
            async def check(self, snapshot):
                if not crashes:
                    crashes.append(trio.current_time())
                    raise RuntimeError("bug in the guard")
                return await super().check(snapshot)

        def guard():
            c = site.config
            return CrashOnce(site.ctx, limits=c.limits, tick_s=c.fast_interval_s,
                             dispatch_tags=c.dispatch)

        specs = site.child_specs()
        specs[1] = ChildSpec("safety_guard", guard, grace_s=0.5)
        sup = Supervisor(children=specs, **site.supervisor_options())
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(30)
            assert crashes
            assert restarts(sup) == {"device_link": 0, "safety_guard": 1, "watchdog": 1}
            assert sim.state().connections_total == 1  # the connection survived
            assert site.ctx.safety.ok  # the new guard evaluates
            assert not sim.state().comm_lost
            sup.request_stop()


async def test_a_device_outage_consumes_no_restart_intensity(autojump_clock):
    async with Simulator(soc_pct=50) as sim:
        site = make_site(sim)
        sup = site.supervisor()
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(5)
            sim.faults.silent = True
            await trio.sleep(30 * 60)
            assert site.ctx.safety.blocked_charge
            assert site.ctx.safety.blocked_discharge
            sim.faults.clear()
            await trio.sleep(120)
            assert site.ctx.link.up
            assert site.ctx.safety.ok
            assert restarts(sup) == {"device_link": 0, "safety_guard": 0, "watchdog": 0}
            sup.request_stop()


async def test_cancelled_site_tree_leaves_the_device_to_end_forcing_within_the_lease(
        autojump_clock):
    async with Simulator(soc_pct=50) as sim:
        site = make_site(sim)
        async with trio.open_nursery() as nursery:
            await nursery.start(site.supervisor().run)
            await trio.sleep(3)
            outcome = await site.gate.submit(command(Action.DISCHARGE))
            assert outcome.accepted
            await trio.sleep(100)  # renewed twice or more by now
            assert sim.state().forced_mode == 2
            nursery.cancel_scope.cancel()  # the gateway dies
        died = trio.current_time()
        while sim.state().forced_mode != 0:
            await trio.sleep(0.5)
        assert trio.current_time() - died <= sim.profile.dispatch.lease.period_s


async def test_site_from_settings_takes_limits_and_poll_rates_from_the_settings(autojump_clock):
    from bessai.control import site_from_settings
    from bessai.settings import DeviceSpec, Settings

    settings = Settings(site_id=SITE, devices=(DeviceSpec(DEVICE, "192.0.2.10"),),
                        soc_min_pct=10.0, soc_hysteresis_pct=1.5, poll_interval_s=2.0)
    async with Simulator(soc_pct=9.0) as sim:
        site = site_from_settings(settings, settings.devices[0], wall_clock=trio_wall_clock(),
                                  profile=sim.profile, stream_factory=sim.stream_factory())
        assert site.config.limits.soc_min_pct == 10.0
        assert site.config.limits.stale_after_s == 6.0  # three polls of 2 s
        async with trio.open_nursery() as nursery:
            sup = site.supervisor()
            await nursery.start(sup.run)
            await trio.sleep(5)
            assert site.ctx.safety.blocked_discharge  # 9 % is below this site's 10 %
            assert not site.ctx.safety.blocked_charge
            assert sim.state().heartbeat_count >= 1
            sup.request_stop()
