"""The register image: the profile's register map, backed by the simulated inverter.

The job: answer pymodbus's datastore calls (``async_getValues`` / ``async_setValues``) for any
profile — encode the inverter's current values into registers on read, decode and validate
register writes into tag writes.

Invariants:

* A read inside one register block succeeds; registers no tag covers (reserved) read as 0, as
  do write-only tags. A read that leaves every block gets 0x02 (illegal data address).
* A write is all-or-nothing: every register written must belong to a writable tag covered
  completely by the write, and every decoded value must lie in the tag's [min, max] and not
  be its invalid sentinel — else nothing is applied and the answer is 0x02 (reserved, outside
  a block, or a tag only half written), 0x80 (read-only tag: Huawei's "permission denied") or
  0x03 (value out of range).
* The inverter is synced to ``clock()`` before every read and write, so values are current.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from pymodbus.constants import ExcCodes

from bessai.sim.inverter import SimulatedInverter
from bessai.sim.profile_view import SimProfile, SimTag

PERMISSION_DENIED = 0x80
READ_CODES = frozenset({3, 4, 23})


@attrs.define(eq=False)
class RegisterImage:
    """Shared by every connection; :meth:`for_peer` gives each one a context that names it."""

    profile: SimProfile
    inverter: SimulatedInverter
    clock: Callable[[], float]
    read_only_code: int = PERMISSION_DENIED
    on_write: Callable[[], None] | None = None
    _sorted_tags: list[SimTag] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._sorted_tags = sorted(self.profile.tags.values(), key=lambda t: t.address)

    def for_peer(self, peer: str) -> PeerContext:
        return PeerContext(self, peer)

    def _overlapping(self, address: int, count: int) -> list[SimTag]:
        end = address + count - 1
        return [t for t in self._sorted_tags if t.address <= end and t.end >= address]

    def read(self, address: int, count: int) -> list[int] | ExcCodes:
        if self.profile.block_of(address, count) is None:
            return ExcCodes.ILLEGAL_ADDRESS
        self.inverter.sync(self.clock())
        values = self.inverter.values()
        registers = [0] * count
        for tag in self._overlapping(address, count):
            if not tag.readable:
                continue
            try:
                words = tag.encode(values.get(tag.name))
            except ValueError:
                words = tag.encode(None)
            for i, word in enumerate(words):
                pos = tag.address + i - address
                if 0 <= pos < count:
                    registers[pos] = word
        return registers

    def write(self, address: int, registers: Sequence[int], peer: str) -> int | None:
        count = len(registers)
        if count == 0 or self.profile.block_of(address, count) is None:
            return ExcCodes.ILLEGAL_ADDRESS
        tags = self._overlapping(address, count)
        covered = sum(t.length for t in tags)
        if (
            any(t.address < address or t.end > address + count - 1 for t in tags)
            or covered != count
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        if any(not t.writable for t in tags):
            return self.read_only_code
        decoded: list[tuple[SimTag, float | int | str]] = []
        for tag in tags:
            words = registers[tag.address - address : tag.end - address + 1]
            if tag.raw_of(words) in tag.invalid:
                return ExcCodes.ILLEGAL_VALUE
            value = tag.decode(words)
            if isinstance(value, int | float) and (
                (tag.min is not None and value < tag.min)
                or (tag.max is not None and value > tag.max)
            ):
                return ExcCodes.ILLEGAL_VALUE
            decoded.append((tag, value))
        now = self.clock()
        self.inverter.sync(now)
        for tag, value in decoded:
            self.inverter.write(tag.name, value, now, peer)
        if self.on_write is not None:
            self.on_write()
        return None


@attrs.define(eq=False)
class PeerContext:
    """What one connection's requests see: pymodbus's datastore interface, named for the peer."""

    image: RegisterImage
    peer: str
    _echo: dict[int, list[int]] = attrs.field(factory=dict)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | ExcCodes:
        _ = device_id
        if func_code == 6 and address in self._echo:
            return self._echo.pop(address)  # a write-single reply echoes what was written
        if func_code not in READ_CODES and func_code != 6:
            return ExcCodes.ILLEGAL_FUNCTION
        return self.image.read(address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> int | None:
        _ = device_id, func_code
        rc = self.image.write(address, [int(v) for v in values], self.peer)
        if rc is None and func_code == 6:
            self._echo[address] = [int(v) for v in values]
        return rc
