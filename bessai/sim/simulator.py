"""The in-process simulator: a SUN2000 + LUNA2000 (or any profile's device) on Trio's clock.

The job: wire the battery model, the inverter's logic, the register image and the Modbus
endpoint together, and offer what tests and ``bessai-run --simulator`` need — in-memory streams
(``stream_factory``), a TCP listener (``serve_tcp``), fault switches and state inspection.

Invariants: the device advances only on ``trio.current_time()`` (so it runs under MockClock in
tests and on the real clock as a process); a background ticker wakes at the device's next
deadline (lease, watchdog; at least once a minute) so deadline events are logged when they
happen; every read and write syncs the device first, so answers never lag the clock.

Usage::

    sim = Simulator("profiles/huawei_sun2000.json", soc_pct=50)
    async with sim:                       # or: await nursery.start(sim.run)
        connect = sim.stream_factory()
        stream = await connect()          # a trio.abc.Stream served in memory
        ...
        sim.faults.busy = True            # next answers are exception 0x06
        sim.state().soc_pct
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType

import attrs
import trio
import trio.lowlevel
import trio.testing

from bessai.device.profile import Profile, load_profile
from bessai.sim.faults import Faults
from bessai.sim.inverter import SimulatedInverter, WriteRecord
from bessai.sim.model import BatteryModel, DailyCurves, SiteParams
from bessai.sim.registers import RegisterImage
from bessai.sim.server import ModbusEndpoint, StreamFactory

_REPO_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "huawei_sun2000.json"
# From a source checkout the repository's profile; from an installed wheel, ./profiles/.
DEFAULT_PROFILE = (
    _REPO_PROFILE if _REPO_PROFILE.exists() else Path("profiles") / "huawei_sun2000.json"
)


@attrs.frozen
class SimState:
    """A snapshot of the simulated device for assertions (engineering units)."""

    now: float
    soc_pct: float
    battery_power_w: float
    battery_temp_c: float
    pv_power_w: float
    load_power_w: float
    meter_power_w: float
    forced_mode: int
    lease_deadline: float | None
    comm_lost: bool
    heartbeat_count: int
    connected_peers: tuple[str, ...]
    connections_total: int
    requests_served: int


def _load(profile: Profile | str | Path | None) -> Profile:
    if isinstance(profile, Profile):
        return profile
    return load_profile(DEFAULT_PROFILE if profile is None else profile)


@attrs.define(eq=False)
class Simulator:
    """One simulated device. Construct anywhere; run inside Trio (``async with`` or ``run``).

    ``profile``: a loaded Profile, a path to a profile JSON, or None (the Huawei profile).
    ``unit_id``: None takes the profile's connection unit id.
    ``units``: several unit ids on the same port (a SmartLogger or an SDongle in front of
    several inverters), each with its own battery, registers and faults; this simulator is the
    first of them, `unit` returns the others (``sim.unit(2).faults.silent = True``).
    ``start_hour``: simulated time of day when the simulator starts (PV and load follow it).
    """

    profile: Profile = attrs.field(default=None, converter=_load)
    soc_pct: float = 50.0
    temp_c: float = 25.0
    seed: int = 0
    unit_id: int | None = None
    units: tuple[int, ...] = ()
    single_client: bool = True
    framer: str = "socket"
    """``socket`` (Modbus TCP) or ``rtu`` (RTU frames: RTU over TCP, or a serial line)."""
    params: SiteParams = attrs.field(factory=SiteParams)
    start_hour: float = 12.0
    step_s: float = 1.0
    faults: Faults = attrs.field(factory=Faults)
    model: BatteryModel = attrs.field(init=False)
    inverter: SimulatedInverter = attrs.field(init=False)
    image: RegisterImage = attrs.field(init=False)
    endpoint: ModbusEndpoint = attrs.field(init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _tick_scope: trio.CancelScope | None = attrs.field(default=None, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _cm: AbstractAsyncContextManager[trio.Nursery] | None = attrs.field(default=None, init=False)
    _outer: trio.Nursery | None = attrs.field(default=None, init=False)
    _others: dict[int, Simulator] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.units:
            if len(set(self.units)) != len(self.units):
                raise ValueError(f"units {self.units} repeat a unit id")
            self.unit_id = self.units[0]
        if self.unit_id is None:
            self.unit_id = self.profile.connection.unit_id
        self.model = BatteryModel(
            params=self.params,
            soc_pct=self.soc_pct,
            temp_c=self.temp_c,
            inverter_temp_c=self.params.ambient_c + 5.0,
        )
        self.inverter = SimulatedInverter(
            profile=self.profile,
            model=self.model,
            curves=DailyCurves(self.params, self.seed),
            start_time=_now_or_zero(),
            start_of_day_s=self.start_hour * 3_600.0,
            step_s=self.step_s,
            faults=self.faults,
        )
        self.image = RegisterImage(
            profile=self.profile, inverter=self.inverter, clock=self._clock, on_write=self._rearm
        )
        self.endpoint = ModbusEndpoint(
            context_for=self.image.for_peer,
            unit_id=self.unit_id,
            faults=self.faults,
            single_client=self.single_client,
            framer=self.framer,
        )
        for n, unit in enumerate(self.units[1:], start=1):
            other = Simulator(self.profile, soc_pct=self.soc_pct, temp_c=self.temp_c,
                              seed=self.seed + n, unit_id=unit, params=self.params,
                              start_hour=self.start_hour, step_s=self.step_s)
            other.endpoint = self.endpoint  # one port, one set of connections
            self.endpoint.units[unit] = (other.image.for_peer, other.faults)
            self._others[unit] = other

    def each_unit(self) -> tuple[Simulator, ...]:
        """This simulator and the other units on its port, in ``units`` order."""
        return (self, *self._others.values())

    def unit(self, unit_id: int) -> Simulator:
        """The simulator of one unit id on this port (this one for its own unit id)."""
        if unit_id == self.unit_id:
            return self
        try:
            return self._others[unit_id]
        except KeyError:
            raise KeyError(f"unit {unit_id} is not served here (units: "
                           f"{[self.unit_id, *self._others]})") from None

    # ---- lifecycle --------------------------------------------------------------------------
    def _clock(self) -> float:
        self._start_clock()
        return trio.current_time()

    def _start_clock(self) -> None:
        """Pin the device's time zero to Trio's clock the first time it is used in Trio."""
        if not self._started:
            self._started = True
            self.inverter.restart_clock(trio.current_time())

    async def run(
        self, *, task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the device's ticker and host in-memory sessions until cancelled."""
        self._start_clock()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._ticker)
                for other in self._others.values():
                    other._start_clock()
                    nursery.start_soon(other._ticker)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.endpoint.drop_connections(reason="simulator_stopped")

    async def __aenter__(self) -> Simulator:
        self._cm = trio.open_nursery()
        nursery = await self._cm.__aenter__()
        await nursery.start(self.run)
        self._outer = nursery
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._outer is not None
        assert self._cm is not None
        self._outer.cancel_scope.cancel()
        return await self._cm.__aexit__(exc_type, exc, tb)

    async def _ticker(self) -> None:
        while True:
            deadline = max(self.inverter.next_event_time(), trio.current_time() + 1e-3)
            with trio.CancelScope(deadline=deadline) as scope:
                self._tick_scope = scope
                await trio.sleep_forever()
            self.sync()

    def _rearm(self) -> None:
        if self._tick_scope is not None:
            self._tick_scope.deadline = max(
                self.inverter.next_event_time(), trio.current_time() + 1e-3
            )

    # ---- connections ------------------------------------------------------------------------
    def stream_factory(self) -> StreamFactory:
        """An async callable returning a new client stream served by this simulator in memory.

        Needs the simulator running (``async with sim`` or ``nursery.start(sim.run)``).
        """

        async def connect() -> trio.abc.Stream:
            if self._nursery is None:
                raise RuntimeError(
                    "the simulator is not running — enter `async with sim:` or "
                    "`await nursery.start(sim.run)` before connecting"
                )
            import trio.testing  # here, not at import: trio.testing pulls in pytest

            client, server = trio.testing.memory_stream_pair()
            self._nursery.start_soon(self.endpoint.serve_stream, server)
            await trio.lowlevel.checkpoint()  # let the session register (and close a previous one)
            return client

        return connect

    async def serve_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 5020,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve Modbus TCP on ``host:port`` (0: any free port) until cancelled.

        ``task_status.started`` reports the bound ``(host, port)``.
        """
        self._start_clock()
        await self.endpoint.serve_tcp(host, port, task_status=task_status)

    async def serve_serial(
        self,
        port: str,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve RTU on a serial line (a pty in tests: ``--serial /dev/pts/N``) until
        cancelled. The line is one session for as long as it is open."""
        from bessai.device.serial_port import SerialSettings, open_serial

        self._start_clock()
        self.endpoint.framer = "rtu"
        settings = SerialSettings(port, baudrate, parity, stopbits)
        stream = open_serial(settings)
        from bessai.sim.logfmt import log as sim_log

        sim_log(20, "SIM_LISTENING", serial=str(settings),
                units=",".join(str(u) for u in [self.unit_id, *self._others]))
        task_status.started(str(settings))
        await self.endpoint.serve_stream(stream, peer=str(settings))

    def drop_connections(self) -> int:
        """Close every client connection now (fault injection); returns how many."""
        return self.endpoint.drop_connections()

    # ---- inspection -------------------------------------------------------------------------
    def sync(self) -> None:
        """Advance the device to the current Trio time."""
        self.inverter.sync(self._clock())

    def state(self) -> SimState:
        self.sync()
        m, inv = self.model, self.inverter
        return SimState(
            now=inv.now,
            soc_pct=m.soc_pct,
            battery_power_w=m.battery_power_w,
            battery_temp_c=m.temp_c,
            pv_power_w=m.pv_power_w,
            load_power_w=m.load_power_w,
            meter_power_w=m.meter_power_w,
            forced_mode=inv.forced_mode,
            lease_deadline=inv.lease_deadline,
            comm_lost=inv.comm_lost,
            heartbeat_count=inv.heartbeat_count,
            connected_peers=tuple(self.endpoint.connected_peers),
            connections_total=self.endpoint.connections_total,
            requests_served=self.endpoint.requests_served,
        )

    @property
    def write_log(self) -> list[WriteRecord]:
        return self.inverter.write_log

    def values(self) -> dict[str, float | int | str | None]:
        """Engineering values by tag name, as the registers would show them now."""
        self.sync()
        return self.inverter.values()


def _now_or_zero() -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0
