"""UniversalDriver: a device profile plus a Modbus client — tags by name, snapshots by plan.

The driver turns names into registers and back. Invariants:

- ``read_all`` returns one :class:`~bessai.model.Snapshot` per call with a reading for EVERY
  requested tag: a request that fails marks exactly its own tags invalid with the reason, and the
  other requests of the plan are still sent; device faults never escape ``read_all``;
- ``write_tag`` refuses read-only tags, out-of-range and unencodable values with
  :class:`TagWriteRefused` BEFORE anything is sent;
- writes go ahead of queued reads on the shared connection (client priority);
- the snapshot's ``ts`` is wall time from the injected wall clock, ``taken_at`` Trio time.

The link state is not the driver's: the endpoint's `ModbusConnection` logs DEVICE_LINK_DOWN/UP
once per transition, and the device link the unit's state. The driver records in
``unit_fault`` whether its unit stopped answering during the last ``read_all`` (a timeout or a
lost connection: the rest of that plan is not sent, its tags are invalid with the same reason,
so a silent unit costs the shared connection one timeout per poll, not one per request). A read
that fails with an exception reply is logged when its error changes, naming
``ModbusReadError`` and the code.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import structlog
import trio

from bessai.clock import WallClock, system_wall_clock
from bessai.device.codec import apply_scale, decode, encode
from bessai.device.connection import ModbusConnection
from bessai.device.errors import (
    CodecError,
    DeviceConnectionError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusTimeout,
    TagWriteRefused,
    describe_exception_code,
)
from bessai.device.modbus import (
    PRIORITY_READ,
    PRIORITY_WRITE,
    ModbusClient,
    StreamFactory,
    tcp_stream_factory,
)
from bessai.device.planner import ReadRequest, plan
from bessai.device.profile import Poll, Profile, Table, Tag, load_profile
from bessai.model import Snapshot, TagReading

log = structlog.get_logger("bessai.device.driver")


def _reason(exc: Exception) -> str:
    """A short reason for an invalid reading: error name and, for exception replies, the code."""
    if isinstance(exc, ModbusExceptionResponse):
        return f"{type(exc).__name__} {describe_exception_code(exc.code)}"
    if isinstance(exc, ConnectionError):
        return f"ConnectionError: {getattr(exc, 'detail', exc)}"
    return type(exc).__name__


class UniversalDriver:
    """Reads and writes a device's tags by name, as its profile describes them.

    ``profile_or_path``: a :class:`Profile` or a path to a profile JSON file. ``connection``: the
    endpoint's shared `ModbusConnection` (the gateway's; several drivers, one per unit id, share
    one). Without it the driver makes a private one: ``host``/``port`` open TCP (port defaults
    to the profile's), ``stream_factory`` replaces TCP entirely (tests, the simulator).
    ``unit_id``, ``timeout_s``, ``post_connect_delay_s`` and ``cooldown_s`` default to the
    profile's connection defaults (the last two only for a private connection).
    """

    def __init__(
        self,
        profile_or_path: Profile | str | Path,
        host: str | None = None,
        port: int | None = None,
        unit_id: int | None = None,
        *,
        connection: ModbusConnection | None = None,
        stream_factory: StreamFactory | None = None,
        site_id: str = "site",
        device_id: str | None = None,
        wall_clock: WallClock = system_wall_clock,
        timeout_s: float | None = None,
        post_connect_delay_s: float | None = None,
        cooldown_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.profile = (profile_or_path if isinstance(profile_or_path, Profile)
                        else load_profile(profile_or_path))
        conn = self.profile.connection
        if connection is None and stream_factory is None:
            if host is None:
                raise ValueError("UniversalDriver needs host= (the inverter's address, e.g. "
                                 "INVERTER_IP=192.168.1.50) or a stream_factory=")
            stream_factory = tcp_stream_factory(host, port if port is not None else conn.port)
        self.site_id = site_id
        self.device_id = device_id or self.profile.device.id
        self.wall_clock = wall_clock
        self.client = ModbusClient(
            connection if connection is not None else stream_factory,  # type: ignore[arg-type]
            unit_id=conn.unit_id if unit_id is None else unit_id,
            device_id=self.device_id,
            timeout_s=conn.timeout_s if timeout_s is None else timeout_s,
            post_connect_delay_s=(conn.post_connect_delay_s if post_connect_delay_s is None
                                  else post_connect_delay_s),
            cooldown_s=conn.cooldown_s if cooldown_s is None else cooldown_s,
            rng=rng,
        )
        if connection is None:  # a private connection speaks for this site
            self.client.connection.adopt(site_id=site_id, metrics=self.client.connection.metrics)
        self._log = log.bind(site=site_id, device=self.device_id)
        self._plans: dict[object, list[ReadRequest]] = {}
        self.unit_fault: Exception | None = None
        """Set by `read_all` when this unit stopped answering (timeout, lost connection)."""
        self._request_errors: dict[tuple[str, int], str] = {}

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def connection(self) -> ModbusConnection:
        """The endpoint's connection this driver's requests go through."""
        return self.client.connection

    async def connect(self) -> None:
        """Open the connection now (raises DeviceConnectionError if the device is unreachable)."""
        await self.client.connect()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> UniversalDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        return self.client.connected

    # ---- reads -------------------------------------------------------------------------------

    def plan(self, poll_class: Poll | str | None = None,
             tags: Iterable[str] | None = None) -> list[ReadRequest]:
        """The read plan for a poll class or tag list (cached)."""
        key = (poll_class, tuple(tags) if tags is not None else None)
        if key not in self._plans:
            self._plans[key] = plan(self.profile, tags=key[1], poll=poll_class)
        return self._plans[key]

    async def read_reading(self, name: str) -> TagReading:
        """One tag's reading; raises the Modbus error if the read fails."""
        tag = self.profile.tag(name)
        if not tag.readable:
            raise ValueError(f"tag {name!r} is write-only (access {tag.access})")
        registers = await self._read(tag.table, tag.address, tag.count, tag.name)
        reading = decode(tag, registers)
        if tag.scale_factor is not None:
            scale = await self.read_reading(tag.scale_factor)
            reading = apply_scale(reading, scale, tag.scale_factor)
        return reading

    async def read_tag(self, name: str) -> int | float | str | None:
        """One tag's value, scaled to its unit (None if the device reports it invalid)."""
        return (await self.read_reading(name)).value

    async def read_all(self, poll_class: Poll | str | None = None,
                       tags: Iterable[str] | None = None) -> Snapshot:
        """One coalesced snapshot of every readable tag (or one poll class, or ``tags``)."""
        readings: dict[str, TagReading] = {}
        self.unit_fault = None
        for request in self.plan(poll_class, tags):
            if self.unit_fault is not None:  # the unit stopped answering: skip the rest
                for name in request.tags:
                    readings[name] = TagReading(None, valid=False,
                                                reason=_reason(self.unit_fault))
                continue
            try:
                registers = await self._read(request.table, request.address, request.count,
                                             request.tags[0] if len(request.tags) == 1 else None)
            except ModbusError as exc:
                reason = _reason(exc)
                for name in request.tags:
                    readings[name] = TagReading(None, valid=False, reason=reason)
                if isinstance(exc, ModbusTimeout | DeviceConnectionError):
                    self.unit_fault = exc
                else:
                    self._note_request_error(request, exc)
                continue
            self._note_request_error(request, None)
            for name in request.tags:
                tag = self.profile.tags[name]
                off = tag.address - request.address
                readings[name] = decode(tag, registers[off:off + tag.count])
        for name, reading in list(readings.items()):
            sf = self.profile.tags[name].scale_factor
            if sf is not None:
                readings[name] = apply_scale(reading, readings.get(sf), sf)
        return Snapshot(site_id=self.site_id, device_id=self.device_id, ts=self.wall_clock(),
                        taken_at=trio.current_time(), readings=readings)

    async def _read(self, table: Table, address: int, count: int,
                    tag: str | None) -> list[int]:
        if Table(table).is_bits:
            return await self.client.read_bits(table, address, count, tag=tag,
                                               priority=PRIORITY_READ)
        return await self.client.read_registers(table, address, count, tag=tag,
                                                priority=PRIORITY_READ)

    # ---- writes ------------------------------------------------------------------------------

    def check_write(self, name: str, value: float | int | str) -> tuple[Tag, list[int]]:
        """The tag and registers for a write, or TagWriteRefused (nothing is sent)."""
        try:
            tag = self.profile.tag(name)
        except KeyError as exc:
            raise TagWriteRefused(name, value, str(exc.args[0])) from None
        if not tag.writable:
            raise TagWriteRefused(name, value, f"tag is read-only (access {tag.access}) in "
                                  f"profile {self.profile.device.id}")
        if not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TagWriteRefused(name, value, "value is not a number")
            if tag.min is None or tag.max is None or not tag.min <= value <= tag.max:
                raise TagWriteRefused(name, value, f"outside the profile's limits "
                                      f"{tag.min}..{tag.max} {tag.unit or ''}".rstrip())
        try:
            registers = encode(tag, value)
        except CodecError as exc:
            raise TagWriteRefused(name, value, str(exc)) from exc
        return tag, registers

    async def write_tags(self, writes: Iterable[tuple[str, float | int | str]], *,
                         priority: int = PRIORITY_WRITE) -> None:
        """Write several tags in order; every write is checked before the first is sent."""
        checked = [(name, value, self.check_write(name, value)) for name, value in writes]
        for name, value, _ in checked:
            await self.write_tag(name, value, priority=priority)

    async def write_tag(self, name: str, value: float | int | str, *,
                        priority: int = PRIORITY_WRITE) -> None:
        """Write a tag (value in its unit); checks happen before anything is sent."""
        tag, registers = self.check_write(name, value)
        if tag.table is Table.COIL:
            await self.client.write_coil(tag.address, registers[0], tag=tag.name,
                                         priority=priority)
        elif len(registers) == 1:
            await self.client.write_register(tag.address, registers[0], tag=tag.name,
                                             priority=priority)
        else:
            await self.client.write_registers(tag.address, registers, tag=tag.name,
                                              priority=priority)

    # ---- state reporting ---------------------------------------------------------------------

    def _note_request_error(self, request: ReadRequest, exc: Exception | None) -> None:
        key = (request.table.value, request.address)
        text = _reason(exc) if exc is not None else ""
        if self._request_errors.get(key, "") == text:
            return
        self._request_errors[key] = text
        if exc is None:
            self._log.info("device_read_recovered", address=request.address, tags=request.tags)
        elif isinstance(exc, ModbusExceptionResponse):
            self._log.warning("device_read_failed", error=type(exc).__name__,
                              address=request.address, tags=request.tags, detail=str(exc))
