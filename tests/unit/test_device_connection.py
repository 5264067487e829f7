"""The shared endpoint connection in virtual time against a byte-level peer with several units:
priorities across units, turns between units, and what a timeout costs (and does not cost)."""

from __future__ import annotations

import struct

import trio
import trio.testing

from bessai.device import ModbusClient, ModbusConnection, ModbusTimeout
from tests.peers.mbap import BytePeer, mbap


class Units(BytePeer):
    """A gateway holding register 0 = unit id for each unit; ``silent`` units never answer,
    ``late`` units answer after ``late_s``. Records (unit, function) of every request."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(self._answer)
        self.delay_s = delay_s
        self.silent: set[int] = set()
        self.late: dict[int, float] = {}
        self.served: list[tuple[int, int]] = []

    async def _answer(self, tid: int, unit: int, pdu: bytes) -> bytes | None:
        self.served.append((unit, pdu[0]))
        if unit in self.silent:
            return None
        await trio.sleep(self.late.get(unit, self.delay_s))
        reply = bytes([3, 2]) + struct.pack(">H", unit) if pdu[0] == 3 else pdu[:5]
        return mbap(tid, unit, reply)


def connection_to(peer: Units, nursery: trio.Nursery, **kwargs) -> ModbusConnection:
    kwargs.setdefault("post_connect_delay_s", 0.0)
    kwargs.setdefault("cooldown_s", 0.0)
    return ModbusConnection(peer.stream_factory(nursery), peer="gw", **kwargs)


async def test_units_take_turns_and_a_heartbeat_goes_before_every_queued_read(autojump_clock):
    peer = Units(delay_s=0.1)
    async with trio.open_nursery() as nursery:
        connection = connection_to(peer, nursery)
        one, two = ModbusClient(connection, unit_id=1), ModbusClient(connection, unit_id=2)
        await one.read_holding_registers(0, 1)  # connected
        peer.served.clear()
        async with trio.open_nursery() as inner:
            inner.start_soon(two.read_holding_registers, 0, 1)  # holds the connection
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):  # unit 1 queues three reads first...
                inner.start_soon(one.read_holding_registers, 0, 1)
                await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):  # ...then unit 2 three
                inner.start_soon(two.read_holding_registers, 0, 1)
                await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(two.write_register, 49999, 1)  # a heartbeat, queued last
        nursery.cancel_scope.cancel()
    # the heartbeat right after the request in flight; then the units alternate (FIFO would
    # have served unit 1's three reads before any of unit 2's)
    assert peer.served == [(2, 3), (2, 6), (1, 3), (2, 3), (1, 3), (2, 3), (1, 3), (2, 3)]


async def test_one_silent_unit_costs_its_own_timeouts_not_the_shared_connection(autojump_clock):
    peer = Units()
    async with trio.open_nursery() as nursery:
        connection = connection_to(peer, nursery, timeout_s=2.0)
        one, two = ModbusClient(connection, unit_id=1), ModbusClient(connection, unit_id=2,
                                                                     timeout_s=2.0)
        assert await one.read_holding_registers(0, 1) == [1]
        peer.silent.add(2)
        started = trio.current_time()
        try:
            await two.read_holding_registers(0, 1)
        except ModbusTimeout:
            pass
        else:
            raise AssertionError("a silent unit answered")
        assert trio.current_time() - started == 2.0  # its own timeout
        assert connection.connected  # unit 1 answered since the connect: the line is fine
        assert await one.read_holding_registers(0, 1) == [1]
        peer.silent.add(1)  # now nobody answers: the connection itself is suspect
        for client in (one, two):
            try:
                await client.read_holding_registers(0, 1)
            except ModbusTimeout:
                pass
        assert not connection.connected
        assert peer.connections == 1
        nursery.cancel_scope.cancel()


async def test_a_late_reply_after_a_timeout_is_discarded_not_taken_for_the_next(autojump_clock):
    peer = Units()
    async with trio.open_nursery() as nursery:
        connection = connection_to(peer, nursery, timeout_s=1.0)
        one = ModbusClient(connection, unit_id=1)
        two = ModbusClient(connection, unit_id=2, timeout_s=1.0)
        assert await one.read_holding_registers(0, 1) == [1]
        peer.late[2] = 1.5  # answers half a second after its timeout
        try:
            await two.read_holding_registers(0, 1)
        except ModbusTimeout:
            pass
        # unit 1's next read meets unit 2's late reply first: skipped by its transaction id
        assert await one.read_holding_registers(0, 1) == [1]
        assert connection.connected
        assert peer.connections == 1
        nursery.cancel_scope.cancel()
