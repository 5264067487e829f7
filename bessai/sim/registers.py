"""The register image: a device profile's register map, backed by the simulated inverter.

The job: answer pymodbus's datastore calls (``async_getValues`` / ``async_setValues``) for any
profile (:class:`bessai.device.profile.Profile`) — encode the inverter's current values into
registers with the profile's codec on read, decode and validate register writes into tag writes.

Invariants:

* A read inside one register block of the addressed table (holding for function 3, input for
  4) succeeds; registers no tag covers (reserved) read as 0, as do write-only tags; a tag the
  simulator has no value for reads as its first invalid sentinel (0 if it has none). A read
  that leaves every block gets 0x02 (illegal data address).
* A write is all-or-nothing: every register written must belong to a writable holding tag
  covered completely by the write, and every decoded value must be valid and lie in the tag's
  [min, max] — else nothing is applied and the answer is 0x02 (reserved, outside a block, or a
  tag only half written), 0x80 (read-only tag: Huawei's "permission denied") or 0x03 (value out
  of range or an invalid sentinel).
* The inverter is synced to ``clock()`` before every read and write, so values are current.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from pymodbus.constants import ExcCodes

from bessai.device import codec
from bessai.device.errors import CodecError
from bessai.device.profile import Profile, Table, Tag
from bessai.sim.inverter import SimulatedInverter

PERMISSION_DENIED = 0x80
_TABLE_OF_READ = {3: Table.HOLDING, 4: Table.INPUT, 6: Table.HOLDING, 16: Table.HOLDING}


@attrs.define(eq=False)
class RegisterImage:
    """Shared by every connection; :meth:`for_peer` gives each one a context that names it."""

    profile: Profile
    inverter: SimulatedInverter
    clock: Callable[[], float]
    read_only_code: int = PERMISSION_DENIED
    on_write: Callable[[], None] | None = None
    _by_table: dict[Table, list[tuple[int, int, Tag]]] = attrs.field(init=False)
    _blocks: dict[Table, list[tuple[int, int]]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._by_table = {table: [] for table in Table}
        for tag in sorted(self.profile.tags.values(), key=lambda t: t.address):
            self._by_table[tag.table].append((tag.address, tag.end, tag))
        self._blocks = {table: [] for table in Table}
        for block in self.profile.blocks:
            self._blocks[block.table].append((block.start, block.end))

    def for_peer(self, peer: str) -> PeerContext:
        return PeerContext(self, peer)

    def _in_block(self, table: Table, address: int, count: int) -> bool:
        last = address + count - 1
        return any(start <= address and last <= end for start, end in self._blocks[table])

    def _overlapping(self, table: Table, address: int, count: int) -> list[Tag]:
        stop = address + count
        return [tag for first, end, tag in self._by_table[table] if first < stop and end > address]

    def read(self, table: Table, address: int, count: int) -> list[int] | ExcCodes:
        if count < 1 or not self._in_block(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        self.inverter.sync(self.clock())
        values = self.inverter.values()
        registers = [0] * count
        for tag in self._overlapping(table, address, count):
            if not tag.readable:
                continue
            words = _encode_or_invalid(tag, values.get(tag.name))
            for i, word in enumerate(words):
                pos = tag.address + i - address
                if 0 <= pos < count:
                    registers[pos] = word
        return registers

    def write(self, address: int, registers: Sequence[int], peer: str) -> int | None:
        count = len(registers)
        if count < 1 or not self._in_block(Table.HOLDING, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        tags = self._overlapping(Table.HOLDING, address, count)
        partial = any(t.address < address or t.end > address + count for t in tags)
        if partial or sum(t.count for t in tags) != count:
            return ExcCodes.ILLEGAL_ADDRESS
        if any(not t.writable for t in tags):
            return self.read_only_code
        decoded: list[tuple[Tag, float | int | str]] = []
        for tag in tags:
            reading = codec.decode(tag, list(registers[tag.address - address : tag.end - address]))
            value = reading.value
            if not reading.valid or value is None:
                return ExcCodes.ILLEGAL_VALUE
            if isinstance(value, int | float) and (
                (tag.min is not None and value < tag.min)
                or (tag.max is not None and value > tag.max)
            ):
                return ExcCodes.ILLEGAL_VALUE
            decoded.append((tag, value))
        now = self.clock()
        self.inverter.sync(now, exact=True)
        for tag, value in decoded:
            self.inverter.write(tag.name, value, now, peer)
        if self.on_write is not None:
            self.on_write()
        return None


def _encode_or_invalid(tag: Tag, value: float | int | str | None) -> list[int]:
    if value is not None:
        try:
            return codec.encode(tag, value)
        except CodecError:
            pass
    raw = tag.invalid[0] if tag.invalid else 0
    return codec.uint_to_registers(raw, tag.count)


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
        table = _TABLE_OF_READ.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self.image.read(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> int | None:
        _ = device_id
        words = [int(v) for v in values]
        rc = self.image.write(address, words, self.peer)
        if rc is None and func_code == 6:
            self._echo[address] = words
        return rc
