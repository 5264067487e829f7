"""The Trio Modbus client against a byte-level peer on in-memory streams, in virtual time.

The peer here speaks raw bytes so it can misbehave in ways a real server will not: garbage,
wrong transaction/unit/function, silence, hang-ups. Every request must end within its timeout
with a result or a typed error. Behaviour against a real, independent server is in
tests/integration/test_device_modbus_pymodbus.py.
"""

from __future__ import annotations

import itertools
import random
import struct

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Backoff
from bessai.device import (
    DeviceConnectionError,
    ModbusClient,
    ModbusConnection,
    ModbusError,
    ModbusProtocolError,
    ModbusReadError,
    ModbusTimeout,
    ModbusWriteError,
)
from tests.peers.mbap import CLOSE, BytePeer, mbap, parse_request


def registers_device(values, unit=1):
    """A well-behaved device holding ``values`` (address -> word) in holding registers."""

    async def handler(tid, req_unit, pdu):
        fc = pdu[0]
        if fc in (3, 4):
            address, count = struct.unpack(">HH", pdu[1:5])
            if any(a not in values for a in range(address, address + count)):
                return mbap(tid, req_unit, bytes([fc | 0x80, 0x02]))
            words = [values[a] for a in range(address, address + count)]
            return mbap(tid, req_unit, bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words))
        if fc == 6:
            address, value = struct.unpack(">HH", pdu[1:5])
            values[address] = value
            return mbap(tid, req_unit, pdu)
        if fc == 16:
            address, count, _n = struct.unpack(">HHB", pdu[1:6])
            for i, w in enumerate(struct.unpack(f">{count}H", pdu[6:6 + 2 * count])):
                values[address + i] = w
            return mbap(tid, req_unit, pdu[:5])
        return mbap(tid, req_unit, bytes([fc | 0x80, 0x01]))

    return handler


@pytest.fixture
def nursery_client(nursery):
    """Build a client whose factory hands out in-memory streams served by ``peer``."""

    def make(peer, **kw):
        kw.setdefault("post_connect_delay_s", 1.0)
        kw.setdefault("timeout_s", 10.0)
        kw.setdefault("cooldown_s", 0.05)
        return ModbusClient(peer.stream_factory(nursery), unit_id=kw.pop("unit_id", 1), **kw)

    return make


async def test_reads_and_writes_round_trip_through_the_framer(nursery_client, autojump_clock):
    values = dict.fromkeys(range(100, 110), 0)
    values[100] = 0x1234
    peer = BytePeer(registers_device(values))
    client = nursery_client(peer)
    assert await client.read_holding_registers(100, 2) == [0x1234, 0]
    await client.write_register(101, 7)
    await client.write_registers(102, [1, 2, 3])
    assert await client.read_input_registers(100, 5) == [0x1234, 7, 1, 2, 3]
    assert [p[3][0] for p in peer.requests] == [3, 6, 16, 4]
    assert [p[1] for p in peer.requests] == [1, 2, 3, 4]  # fresh transaction ids
    await client.aclose()


async def test_nothing_is_sent_during_the_post_connect_delay(nursery_client, autojump_clock):
    peer = BytePeer(registers_device({0: 1}))
    client = nursery_client(peer, post_connect_delay_s=1.0)
    start = trio.current_time()
    await client.read_holding_registers(0, 1)
    assert peer.requests[0][0] - start == pytest.approx(1.0)


async def test_cooldown_separates_requests(nursery_client, autojump_clock):
    peer = BytePeer(registers_device({0: 1}))
    client = nursery_client(peer, cooldown_s=0.3, post_connect_delay_s=0)
    for _ in range(3):
        await client.read_holding_registers(0, 1)
    times = [p[0] for p in peer.requests]
    assert times[1] - times[0] == pytest.approx(0.3)
    assert times[2] - times[1] == pytest.approx(0.3)


async def test_requests_are_serialized_one_in_flight(nursery_client, autojump_clock):
    in_flight = 0
    peak = 0

    async def slow(tid, unit, pdu):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(0.5)
        in_flight -= 1
        return await registers_device({0: 5})(tid, unit, pdu)

    client = nursery_client(BytePeer(slow), post_connect_delay_s=0, cooldown_s=0)
    results = []

    async def one():
        results.append(await client.read_holding_registers(0, 1))

    async with trio.open_nursery() as n:
        for _ in range(5):
            n.start_soon(one)
    assert results == [[5]] * 5
    assert peak == 1


async def test_writes_go_ahead_of_queued_reads(nursery_client, autojump_clock):
    values = {0: 0, 1: 0}
    peer = BytePeer(registers_device(values))
    client = nursery_client(peer, post_connect_delay_s=0, cooldown_s=0.1)
    await client.read_holding_registers(0, 1)  # connected; the lock is free

    async with trio.open_nursery() as n:
        n.start_soon(client.read_holding_registers, 0, 1)  # takes the lock first
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            n.start_soon(client.read_holding_registers, 1, 1)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(client.write_register, 0, 9)
    fcs = [p[3][0] for p in peer.requests[1:]]
    assert fcs == [3, 6, 3, 3, 3]


async def test_exception_replies_become_typed_errors_with_advice(nursery_client, autojump_clock):
    async def handler(tid, unit, pdu):
        address = struct.unpack(">H", pdu[1:3])[0]
        return mbap(tid, unit, bytes([pdu[0] | 0x80, address & 0xFF]))

    client = nursery_client(BytePeer(handler), post_connect_delay_s=0)
    with pytest.raises(ModbusReadError) as info:
        await client.read_holding_registers(0x0102, 1, tag="soc")
    err = info.value
    assert (err.tag, err.address, err.function, err.code) == ("soc", 0x0102, 3, 0x02)
    assert "check the profile's address" in str(err)
    assert "unit id" in str(err)
    with pytest.raises(ModbusReadError, match="busy; it will be retried later") as info:
        await client.read_holding_registers(0x0106, 1)
    assert info.value.retryable
    with pytest.raises(ModbusWriteError, match="permission denied") as info:
        await client.write_register(0x0180, 1, tag="forcible_mode")
    assert (info.value.code, info.value.function) == (0x80, 6)
    assert client.connected  # an exception reply is an answer: the link stays up


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (lambda tid, unit, pdu: mbap(tid + 1, unit, b"\x03\x02\x00\x01"), "transaction id"),
        (lambda tid, unit, pdu: mbap(tid, unit + 1, b"\x03\x02\x00\x01"), "from unit 2"),
        (lambda tid, unit, pdu: mbap(tid, unit, b"\x04\x02\x00\x01"), "function 0x04"),
        (lambda tid, unit, pdu: mbap(tid, unit, b"\x03\x04\x00\x01\x00\x02"), "for 1 registers"),
        (lambda tid, unit, pdu: mbap(tid, unit, b"\x03\x02\x00", ), "expected 4"),
        (lambda tid, unit, pdu: mbap(tid, unit, b"\x03\x02\x00\x01", pid=7), "protocol id 7"),
        (lambda tid, unit, pdu: struct.pack(">HHHB", tid, 0, 0, unit), "MBAP length 0"),
        (lambda tid, unit, pdu: mbap(tid, unit, b"\x83"), "malformed exception"),
    ],
)
async def test_mismatched_or_malformed_replies_are_protocol_errors(
        nursery_client, autojump_clock, reply, match):
    async def handler(tid, unit, pdu):
        return reply(tid, unit, pdu)

    peer = BytePeer(handler)
    client = nursery_client(peer, post_connect_delay_s=0)
    start = trio.current_time()
    with pytest.raises(ModbusProtocolError, match=match):
        await client.read_holding_registers(0, 1)
    assert trio.current_time() - start < 10.0
    assert not client.connected  # the connection is dropped: nothing stale can leak


async def test_write_echo_mismatch_is_a_protocol_error(nursery_client, autojump_clock):
    async def handler(tid, unit, pdu):
        return mbap(tid, unit, b"\x06\x00\x05\x00\x02")

    client = nursery_client(BytePeer(handler), post_connect_delay_s=0)
    with pytest.raises(ModbusProtocolError, match="write echo"):
        await client.write_register(5, 1)


async def test_silent_device_times_out_and_the_late_reply_is_never_used(
        nursery_client, autojump_clock):
    calls = 0

    async def handler(tid, unit, pdu):
        nonlocal calls
        calls += 1
        if calls == 1:
            await trio.sleep(12)  # answers after the 10 s timeout
        return await registers_device({0: calls})(tid, unit, pdu)

    peer = BytePeer(handler)
    client = nursery_client(peer, post_connect_delay_s=0)
    start = trio.current_time()
    with pytest.raises(ModbusTimeout) as info:
        await client.read_holding_registers(0, 1)
    assert isinstance(info.value, TimeoutError)
    assert trio.current_time() - start == pytest.approx(10.0)
    assert "raise timeout_s" in str(info.value)
    await trio.sleep(1)
    assert await client.read_holding_registers(0, 1) == [2]  # a new connection, a fresh reply
    assert peer.connections == 2


async def test_peer_hangup_is_a_connection_error(nursery_client, autojump_clock):
    async def handler(tid, unit, pdu):
        return CLOSE

    client = nursery_client(BytePeer(handler), post_connect_delay_s=0)
    with pytest.raises(ConnectionError) as info:
        await client.read_holding_registers(0, 1)
    assert isinstance(info.value, DeviceConnectionError)
    assert "ConnectionError" in str(info.value)


async def test_reconnects_follow_capped_jittered_backoff(autojump_clock):
    attempts = []

    async def refuse():
        attempts.append(trio.current_time())
        raise OSError(111, "Connection refused")

    backoff = Backoff(initial_s=1.0, multiplier=2.0, max_s=8.0, jitter=0.5)
    connection = ModbusConnection(refuse, backoff=backoff, rng=random.Random(42),
                                  post_connect_delay_s=0)
    client = ModbusClient(connection)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run)
        while len(attempts) < 7:
            await trio.sleep(0.01)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        rng = random.Random(42)
        expected = [min(8.0, 1.0 * 2**n) * (1 - 0.5 * rng.random()) for n in range(6)]
        assert gaps == pytest.approx(expected)
        assert max(gaps) <= 8.0
        # Requests during the backoff fail fast instead of hammering the device.
        with pytest.raises(DeviceConnectionError, match="next reconnect in"):
            await client.read_holding_registers(0, 1)
        assert len(attempts) == 7
        nursery.cancel_scope.cancel()


async def test_reconnect_wait_is_capped_by_the_devices_comm_loss_budget(autojump_clock):
    attempts = []

    async def refuse():
        attempts.append(trio.current_time())
        raise OSError(111, "Connection refused")

    connection = ModbusConnection(refuse, rng=random.Random(1), post_connect_delay_s=0,
                                  reconnect_cap_s=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run)
        await trio.sleep(300)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) <= 5.0 + 1e-9  # the 60 s backoff ceiling never applies
    assert len(attempts) >= 300 / 5


async def test_connect_timeout_is_a_connection_error(autojump_clock):
    async def hang():
        await trio.sleep_forever()

    client = ModbusClient(hang, timeout_s=3)
    start = trio.current_time()
    with pytest.raises(DeviceConnectionError, match="timed out after 3 s"):
        await client.connect()
    assert trio.current_time() - start == pytest.approx(3)


async def test_closed_client_refuses_requests(nursery_client, autojump_clock):
    client = nursery_client(BytePeer(registers_device({0: 1})), post_connect_delay_s=0)
    async with client:
        await client.read_holding_registers(0, 1)
    with pytest.raises(DeviceConnectionError, match="closed"):
        await client.read_holding_registers(0, 1)


def test_invalid_arguments_fail_before_sending():
    client = ModbusClient(None, post_connect_delay_s=0)  # type: ignore[arg-type]

    async def main():
        with pytest.raises(ValueError, match="count 126"):
            await client.read_holding_registers(0, 126)
        with pytest.raises(ValueError, match="65535"):
            await client.read_holding_registers(65535, 2)
        with pytest.raises(ValueError, match="16-bit"):
            await client.write_register(0, 70000)

    trio.run(main)
    with pytest.raises(ValueError, match="unit_id 300"):
        ModbusClient(None, unit_id=300)  # type: ignore[arg-type]


# ---- random bytes from the peer: a typed error within the timeout, never a crash or hang ----

garbage = st.one_of(
    st.binary(min_size=0, max_size=300),
    # a plausible header for the request in flight, followed by a random PDU
    st.tuples(st.binary(min_size=0, max_size=20), st.booleans()).map(
        lambda t: ("HDR", t[0], t[1])),
)


@settings(max_examples=200, deadline=None)
@given(payload=garbage, close_after=st.booleans(), chunks=st.integers(1, 4))
def test_random_bytes_from_the_peer_give_a_typed_error_within_the_timeout(
        payload, close_after, chunks):
    timeout_s = 5.0

    async def scenario():
        client_side, device_side = trio.testing.memory_stream_pair()

        async def connect():
            return client_side

        async def device():
            data = await device_side.receive_some(4096)
            tid, unit, _ = parse_request(data)
            if isinstance(payload, tuple):
                _, pdu, right_unit = payload
                out = struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit if right_unit else unit ^ 1)
                out += pdu
            else:
                out = payload
            step = max(1, len(out) // chunks)
            for i in range(0, len(out), step):
                await device_side.send_all(out[i:i + step])
                await trio.sleep(0.01)
            if close_after:
                await device_side.aclose()
            else:
                await trio.sleep_forever()

        client = ModbusClient(connect, timeout_s=timeout_s, post_connect_delay_s=0)
        outcome = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(device)
            start = trio.current_time()
            try:
                outcome = await client.read_holding_registers(0, 1)
            except ModbusError as exc:  # every failure is typed
                outcome = exc
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        assert elapsed <= timeout_s + 1e-9
        if isinstance(outcome, list):  # hypothesis found a valid reply: it must be decoded
            assert len(outcome) == 1
        else:
            assert isinstance(outcome, ModbusError)

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_cancelled_waiter_does_not_block_the_queue(nursery_client, autojump_clock):
    async def slow(tid, unit, pdu):
        await trio.sleep(1)
        return await registers_device({0: 1})(tid, unit, pdu)

    peer = BytePeer(slow)
    client = nursery_client(peer, post_connect_delay_s=0, cooldown_s=0)
    done = []

    async def read(tag):
        await client.read_holding_registers(0, 1, tag=tag)
        done.append(tag)

    async with trio.open_nursery() as n:
        n.start_soon(read, "first")
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(read, "second")  # queued behind "first"
        cancel = trio.CancelScope()

        async def waiter():
            with cancel:
                await read("cancelled")

        n.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(read, "last")
        await trio.testing.wait_all_tasks_blocked()
        cancel.cancel()  # leaves the queue while "first" holds the connection
    assert done == ["first", "second", "last"]
    assert len(peer.requests) == 3
