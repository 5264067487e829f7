"""UniversalDriver: a device profile plus a Modbus client — tags by name, snapshots by plan.

The driver turns names into registers and back. Invariants:

- ``read_all`` returns one :class:`~bessai.model.Snapshot` per call with a reading for EVERY
  requested tag: a request that fails marks exactly its own tags invalid with the reason, and the
  other requests of the plan are still sent; device faults never escape ``read_all``;
- ``write_tag`` refuses read-only tags, out-of-range and unencodable values with
  :class:`TagWriteRefused` BEFORE anything is sent;
- writes go ahead of queued reads on the shared connection (client priority);
- the snapshot's ``ts`` is wall time from the injected wall clock, ``taken_at`` Trio time.

Link transitions are logged once each (``device_link_down`` with the error, which names
``ConnectionError``/``ModbusTimeout``..., and ``device_link_up``); a read that fails with an
exception reply is logged when its error changes, naming ``ModbusReadError`` and the code.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import structlog
import trio

from bessai.clock import WallClock, system_wall_clock
from bessai.device.codec import decode, encode
from bessai.device.errors import (
    CodecError,
    DeviceConnectionError,
    ModbusError,
    ModbusExceptionResponse,
    TagWriteRefused,
    describe_exception_code,
)
from bessai.device.modbus import (
    PRIORITY_READ,
    PRIORITY_WRITE,
    Backoff,
    ModbusClient,
    StreamFactory,
    tcp_stream_factory,
)
from bessai.device.planner import ReadRequest, plan
from bessai.device.profile import Poll, Profile, Tag, load_profile
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

    ``profile_or_path``: a :class:`Profile` or a path to a profile JSON file. ``host``/``port``
    open TCP (port defaults to the profile's); ``stream_factory`` replaces TCP entirely (tests,
    the simulator). ``unit_id``, ``timeout_s``, ``post_connect_delay_s`` and ``cooldown_s``
    default to the profile's connection defaults.
    """

    def __init__(
        self,
        profile_or_path: Profile | str | Path,
        host: str | None = None,
        port: int | None = None,
        unit_id: int | None = None,
        *,
        stream_factory: StreamFactory | None = None,
        site_id: str = "site",
        device_id: str | None = None,
        wall_clock: WallClock = system_wall_clock,
        timeout_s: float | None = None,
        post_connect_delay_s: float | None = None,
        cooldown_s: float | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.profile = (profile_or_path if isinstance(profile_or_path, Profile)
                        else load_profile(profile_or_path))
        conn = self.profile.connection
        if stream_factory is None:
            if host is None:
                raise ValueError("UniversalDriver needs host= (the inverter's address, e.g. "
                                 "INVERTER_IP=192.168.1.50) or a stream_factory=")
            stream_factory = tcp_stream_factory(host, port if port is not None else conn.port)
        self.site_id = site_id
        self.device_id = device_id or self.profile.device.id
        self.wall_clock = wall_clock
        self.client = ModbusClient(
            stream_factory,
            unit_id=conn.unit_id if unit_id is None else unit_id,
            timeout_s=conn.timeout_s if timeout_s is None else timeout_s,
            post_connect_delay_s=(conn.post_connect_delay_s if post_connect_delay_s is None
                                  else post_connect_delay_s),
            cooldown_s=conn.cooldown_s if cooldown_s is None else cooldown_s,
            backoff=backoff,
            rng=rng,
        )
        self._log = log.bind(site=site_id, device=self.device_id)
        self._plans: dict[object, list[ReadRequest]] = {}
        self._link_up: bool | None = None
        self._request_errors: dict[tuple[str, int], str] = {}

    # ---- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now (raises DeviceConnectionError if the device is unreachable)."""
        try:
            await self.client.connect()
        except DeviceConnectionError as exc:
            self._link(False, exc)
            raise
        self._link(True)

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
        return decode(tag, registers)

    async def read_tag(self, name: str) -> int | float | str | None:
        """One tag's value, scaled to its unit (None if the device reports it invalid)."""
        return (await self.read_reading(name)).value

    async def read_all(self, poll_class: Poll | str | None = None,
                       tags: Iterable[str] | None = None) -> Snapshot:
        """One coalesced snapshot of every readable tag (or one poll class, or ``tags``)."""
        readings: dict[str, TagReading] = {}
        for request in self.plan(poll_class, tags):
            try:
                registers = await self._read(request.table, request.address, request.count,
                                             request.tags[0] if len(request.tags) == 1 else None)
            except ModbusError as exc:
                reason = _reason(exc)
                for name in request.tags:
                    readings[name] = TagReading(None, valid=False, reason=reason)
                self._note_request_error(request, exc)
                continue
            self._note_request_error(request, None)
            for name in request.tags:
                tag = self.profile.tags[name]
                off = tag.address - request.address
                readings[name] = decode(tag, registers[off:off + tag.count])
        return Snapshot(site_id=self.site_id, device_id=self.device_id, ts=self.wall_clock(),
                        taken_at=trio.current_time(), readings=readings)

    async def _read(self, table, address: int, count: int, tag: str | None) -> list[int]:
        try:
            registers = await self.client.read_registers(table, address, count, tag=tag,
                                                         priority=PRIORITY_READ)
        except ModbusExceptionResponse:
            self._link(True)  # the device answered: the link is up
            raise
        except ModbusError as exc:
            self._link(False, exc)
            raise
        self._link(True)
        return registers

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
        try:
            if len(registers) == 1:
                await self.client.write_register(tag.address, registers[0], tag=tag.name,
                                                 priority=priority)
            else:
                await self.client.write_registers(tag.address, registers, tag=tag.name,
                                                  priority=priority)
        except ModbusExceptionResponse:
            self._link(True)
            raise
        except ModbusError as exc:
            self._link(False, exc)
            raise
        self._link(True)

    # ---- state reporting ---------------------------------------------------------------------

    def _link(self, up: bool, exc: Exception | None = None) -> None:
        if up == self._link_up:
            return
        self._link_up = up
        if up:
            self._log.info("device_link_up", peer=self.client.peer)
        else:
            self._log.warning("device_link_down", peer=self.client.peer,
                              error=type(exc).__name__ if exc else None, detail=str(exc),
                              retry_at=round(self.client.next_attempt_at, 3))

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
