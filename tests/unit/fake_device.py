"""A tiny in-memory stand-in for the driver, used only until the simulator lands and for fault
injection (a device that stops answering, a slow read) at the driver seam."""

from __future__ import annotations

import attrs
import trio

from bessai.model import Snapshot, TagReading


@attrs.define
class FakeDriver:
    values: dict = attrs.field(factory=lambda: {"soc": 50.0, "battery_temp": 25.0,
                                                "forcible_mode": 0, "battery_power": 0.0})
    read_s: float = 0.05
    write_s: float = 0.01
    down: bool = False
    connects: int = 0
    writes: list = attrs.field(factory=list)  # (trio time, tag, value)
    reads: int = 0

    async def connect(self) -> None:
        self.connects += 1
        await trio.sleep(0.01)
        if self.down:
            raise ConnectionError("connection refused")

    async def read_all(self, poll_class=None) -> Snapshot:
        await trio.sleep(self.read_s)
        if self.down:
            raise ConnectionError("connection reset by peer")
        self.reads += 1
        readings = {k: TagReading(v) if v is not None else TagReading(None, valid=False)
                    for k, v in self.values.items()}
        now = trio.current_time()
        return Snapshot("site1", "inv1", ts=1_767_225_600.0 + now, taken_at=now,
                        readings=readings)

    async def write_tag(self, name, value) -> None:
        await trio.sleep(self.write_s)
        if self.down:
            raise ConnectionError("connection reset by peer")
        self.writes.append((trio.current_time(), name, value))
        self.values[name] = value
