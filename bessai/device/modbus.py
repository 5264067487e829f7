"""The Modbus client of one device (unit id): requests and replies, nothing else.

A `ModbusClient` turns calls (read registers, write one or several) into pymodbus PDUs, sends
them through the endpoint's `ModbusConnection` and checks each reply against its request. It
has no connection, reconnect gate or backoff of its own: the connection owns all of that (see
`bessai.device.connection`), so one endpoint's units share one connection and one link state.

Invariants:

- every request finishes within its unit's ``timeout_s`` with a result or a typed error:
  ``ModbusReadError``/``ModbusWriteError`` (exception reply), ``ModbusTimeout``,
  ``ModbusProtocolError`` (garbage, or a reply whose transaction id, unit id, function, address
  or length does not match the request), ``DeviceConnectionError`` (a builtin
  ``ConnectionError``);
- requests are serialised by the connection's scheduler by ``priority`` (lower first: safety
  and heartbeat writes, then dispatch writes, then reads at ``PRIORITY_READ``);
- built from a stream factory instead of a connection, the client makes a private, unowned
  connection that opens on demand (CLI tools, tests).
"""

from __future__ import annotations

import random

from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from bessai.device.connection import (
    PRIORITY_READ,
    PRIORITY_WRITE,
    ClientStats,
    ModbusConnection,
    StreamFactory,
    tcp_stream_factory,
)
from bessai.device.errors import ModbusProtocolError, ModbusReadError, ModbusWriteError
from bessai.device.framing import MAX_ADU, MBAP_HEADER, Framing, MbapFraming
from bessai.device.profile import Table

__all__ = ["FC_READ_HOLDING", "FC_READ_INPUT", "FC_WRITE_MULTIPLE", "FC_WRITE_SINGLE",
           "MAX_ADU", "MAX_READ_COUNT", "MAX_WRITE_COUNT", "MBAP_HEADER", "PRIORITY_READ",
           "PRIORITY_WRITE", "ClientStats", "ModbusClient", "StreamFactory",
           "tcp_stream_factory"]

FC_READ_COILS = 0x01
FC_READ_DISCRETE = 0x02
FC_WRITE_COIL = 0x05
MAX_READ_BITS = 2000
FC_READ_HOLDING = 0x03
FC_READ_INPUT = 0x04
FC_WRITE_SINGLE = 0x06
FC_WRITE_MULTIPLE = 0x10
MAX_READ_COUNT = 125
MAX_WRITE_COUNT = 123


class ModbusClient:
    """Requests to one unit id through a `ModbusConnection` (or a private one built from a
    stream factory; ``post_connect_delay_s``/``cooldown_s``/``rng`` only apply then)."""

    def __init__(
        self,
        connection: ModbusConnection | StreamFactory,
        *,
        unit_id: int = 1,
        timeout_s: float = 10.0,
        post_connect_delay_s: float = 1.0,
        cooldown_s: float = 0.05,
        rng: random.Random | None = None,
        peer: str | None = None,
        device_id: str | None = None,
        framing: Framing | None = None,
    ) -> None:
        if not 0 <= unit_id <= 255:
            raise ValueError(f"unit_id {unit_id} is not 0..255 — Huawei: 1 via SDongle, 0 direct")
        if isinstance(connection, ModbusConnection):
            self.connection = connection
            self._private = False
        else:
            host = getattr(connection, "host", None)
            port = getattr(connection, "port", None)
            self.connection = ModbusConnection(
                connection, peer=peer or (f"{host}:{port}" if host is not None else "device"),
                timeout_s=timeout_s, post_connect_delay_s=post_connect_delay_s,
                cooldown_s=cooldown_s, rng=rng or random.Random(),
                framing=framing or MbapFraming())
            self._private = True
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.connection.register(unit_id, device_id)
        self._decoder = self.connection.framing.decoder

    # ---- the connection's state, for callers that only hold the client --------------------

    @property
    def peer(self) -> str:
        return self.connection.peer

    @property
    def stats(self) -> ClientStats:
        return self.connection.stats

    @property
    def connected(self) -> bool:
        return self.connection.connected

    @property
    def last_error(self) -> Exception | None:
        return self.connection.last_error

    @property
    def next_attempt_at(self) -> float:
        return self.connection.next_attempt_at

    async def connect(self) -> None:
        """Open the connection now if it is closed (raises DeviceConnectionError)."""
        await self.connection.connect_now()

    async def aclose(self) -> None:
        """Close a private connection (a shared one is closed by its owner)."""
        if self._private:
            await self.connection.aclose()

    async def __aenter__(self) -> ModbusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- public requests ---------------------------------------------------------------------

    async def read_registers(self, table: Table | str, address: int, count: int, *,
                             unit_id: int | None = None, tag: str | None = None,
                             priority: int = PRIORITY_READ) -> list[int]:
        """Read ``count`` registers from ``table`` (holding: 0x03, input: 0x04)."""
        _check_span(address, count, MAX_READ_COUNT)
        request = (ReadInputRegistersRequest if Table(table) is Table.INPUT
                   else ReadHoldingRegistersRequest)
        reply = await self._execute(request(address=address, count=count), unit_id, tag, priority)
        return list(reply.registers)

    async def read_bits(self, table: Table | str, address: int, count: int, *,
                        unit_id: int | None = None, tag: str | None = None,
                        priority: int = PRIORITY_READ) -> list[int]:
        """Read ``count`` coils (0x01) or discrete inputs (0x02) as 0/1."""
        _check_span(address, count, MAX_READ_BITS)
        request = (ReadDiscreteInputsRequest if Table(table) is Table.DISCRETE_INPUT
                   else ReadCoilsRequest)
        reply = await self._execute(request(address=address, count=count), unit_id, tag, priority)
        return [1 if bit else 0 for bit in reply.bits[:count]]

    async def write_coil(self, address: int, value: int | bool, *, unit_id: int | None = None,
                         tag: str | None = None, priority: int = PRIORITY_WRITE) -> None:
        """Function 0x05: one coil on (1) or off (0)."""
        _check_span(address, 1, 1)
        if value not in (0, 1):
            raise ValueError(f"coil value {value!r} is not 0 or 1")
        pdu = WriteSingleCoilRequest(address=address, bits=[bool(value)])
        await self._execute(pdu, unit_id, tag, priority)

    async def read_holding_registers(self, address: int, count: int, *,
                                     unit_id: int | None = None, tag: str | None = None,
                                     priority: int = PRIORITY_READ) -> list[int]:
        """Function 0x03."""
        return await self.read_registers(Table.HOLDING, address, count, unit_id=unit_id, tag=tag,
                                         priority=priority)

    async def read_input_registers(self, address: int, count: int, *,
                                   unit_id: int | None = None, tag: str | None = None,
                                   priority: int = PRIORITY_READ) -> list[int]:
        """Function 0x04."""
        return await self.read_registers(Table.INPUT, address, count, unit_id=unit_id, tag=tag,
                                         priority=priority)

    async def write_register(self, address: int, value: int, *, unit_id: int | None = None,
                             tag: str | None = None, priority: int = PRIORITY_WRITE) -> None:
        """Function 0x06: one register."""
        _check_span(address, 1, 1)
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"register value {value} is not a 16-bit word")
        pdu = WriteSingleRegisterRequest(address=address, registers=[value])
        await self._execute(pdu, unit_id, tag, priority)

    async def write_registers(self, address: int, values: list[int], *,
                              unit_id: int | None = None, tag: str | None = None,
                              priority: int = PRIORITY_WRITE) -> None:
        """Function 0x10: several consecutive registers in one request."""
        _check_span(address, len(values), MAX_WRITE_COUNT)
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError(f"register values {values} are not all 16-bit words")
        pdu = WriteMultipleRegistersRequest(address=address, registers=list(values))
        await self._execute(pdu, unit_id, tag, priority)

    # ---- the request/response cycle ----------------------------------------------------------

    async def _execute(self, request: ModbusPDU, unit_id: int | None, tag: str | None,
                       priority: int) -> ModbusPDU:
        unit = self.unit_id if unit_id is None else unit_id

        def check(reply_unit: int, pdu_bytes: bytes) -> ModbusPDU:
            return self._check_reply(request, unit, tag, reply_unit, pdu_bytes)

        return await self.connection.request(request, unit, check, priority=priority,
                                             timeout_s=self.timeout_s)

    def _check_reply(self, request: ModbusPDU, unit: int, tag: str | None,
                     reply_unit: int, pdu_bytes: bytes) -> ModbusPDU:
        fc = request.function_code
        if reply_unit != unit:
            raise ModbusProtocolError(f"reply from unit {reply_unit}, request was to unit {unit}")
        if not pdu_bytes or pdu_bytes[0] & 0x7F != fc:
            got = f"0x{pdu_bytes[0]:02X}" if pdu_bytes else "nothing"
            raise ModbusProtocolError(f"reply function {got} does not match request 0x{fc:02X}")
        if pdu_bytes[0] & 0x80:
            if len(pdu_bytes) != 2:
                raise ModbusProtocolError(f"malformed exception reply {pdu_bytes.hex()}")
            code = pdu_bytes[1]
            error_cls = ModbusReadError if fc in (FC_READ_HOLDING, FC_READ_INPUT, FC_READ_COILS,
                                                   FC_READ_DISCRETE) else ModbusWriteError
            raise error_cls(tag, request.address, fc, code, unit)
        if fc in (FC_READ_COILS, FC_READ_DISCRETE):
            expected = 2 + (request.count + 7) // 8
            if len(pdu_bytes) != expected or pdu_bytes[1] != expected - 2:
                raise ModbusProtocolError(f"bit read reply of {len(pdu_bytes)} bytes for "
                                          f"{request.count} bits (expected {expected})")
        elif fc in (FC_READ_HOLDING, FC_READ_INPUT):
            expected = 2 + 2 * request.count
            if len(pdu_bytes) != expected or pdu_bytes[1] != 2 * request.count:
                raise ModbusProtocolError(f"read reply of {len(pdu_bytes)} bytes for "
                                          f"{request.count} registers (expected {expected})")
        elif len(pdu_bytes) != 5:
            raise ModbusProtocolError(f"write reply of {len(pdu_bytes)} bytes (expected 5)")
        reply = self._decoder.decode(pdu_bytes)
        if reply is None or isinstance(reply, ExceptionResponse):
            raise ModbusProtocolError(f"undecodable reply {pdu_bytes.hex()}")
        if isinstance(reply, ReadHoldingRegistersResponse):  # also the input-register reply
            if len(reply.registers) != request.count:
                raise ModbusProtocolError(f"{len(reply.registers)} registers in the reply, "
                                          f"{request.count} requested")
        elif isinstance(reply, ReadCoilsResponse):  # also the discrete-input reply
            if len(reply.bits) < request.count:
                raise ModbusProtocolError(f"{len(reply.bits)} bits in the reply, "
                                          f"{request.count} requested")
        elif isinstance(reply, WriteSingleCoilResponse):
            if (reply.address, bool(reply.bits[0])) != (request.address, bool(request.bits[0])):
                raise ModbusProtocolError(
                    f"coil echo {reply.address}={reply.bits[0]} does not match "
                    f"{request.address}={request.bits[0]}")
        elif isinstance(reply, WriteSingleRegisterResponse):
            if (reply.address, list(reply.registers)) != (request.address,
                                                          list(request.registers)):
                raise ModbusProtocolError(
                    f"write echo {reply.address}={list(reply.registers)} does not match "
                    f"{request.address}={list(request.registers)}")
        elif isinstance(reply, WriteMultipleRegistersResponse) and (
                (reply.address, reply.count) != (request.address, request.count)):
            raise ModbusProtocolError(
                f"write reply {reply.address}+{reply.count} does not match "
                f"{request.address}+{request.count}")
        return reply


def _check_span(address: int, count: int, max_count: int) -> None:
    if not 1 <= count <= max_count:
        raise ValueError(f"register count {count} is not 1..{max_count}")
    if address < 0 or address + count - 1 > 0xFFFF:
        raise ValueError(f"registers {address}..{address + count - 1} are not inside 0..65535")
