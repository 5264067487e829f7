"""A tiny Trio Modbus client for the simulator's in-process tests, on any trio.abc.Stream.

Built from pymodbus's client-side pieces (``FramerSocket`` with ``DecodePDU(is_server=False)``),
independent of the simulator's server code path, so a test proves what a real Modbus client
would see on the wire.
"""

from __future__ import annotations

import trio
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from bessai.device import codec
from bessai.device.profile import Profile


class ModbusExceptionAnswer(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"exception 0x{code:02X}")
        self.code = code


class TrioTestClient:
    """One request at a time over a ``trio.abc.Stream``; decodes tags with the profile."""

    def __init__(self, stream: trio.abc.Stream, profile: Profile, unit_id: int = 1) -> None:
        self.stream = stream
        self.profile = profile
        self.unit_id = unit_id
        self.framer = FramerSocket(DecodePDU(is_server=False))
        self.tid = 0
        self.buf = b""
        self.lock = trio.Lock()  # one request at a time, like the gateway's device link

    async def send(self, request: ModbusPDU) -> None:
        self.tid += 1
        request.transaction_id = self.tid
        request.dev_id = self.unit_id
        try:
            await self.stream.send_all(self.framer.buildFrame(request))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise EOFError("the simulator closed the connection") from exc

    async def receive(self) -> ModbusPDU:
        while True:
            used, pdu = self.framer.handleFrame(self.buf, 0, 0)
            if pdu is not None:
                self.buf = self.buf[used:]
                return pdu
            data = await self.stream.receive_some(4096)
            if not data:
                raise EOFError("the simulator closed the connection")
            self.buf += data

    async def request(self, request: ModbusPDU) -> ModbusPDU:
        async with self.lock:
            await self.send(request)
            response = await self.receive()
        assert response.transaction_id == self.tid
        if isinstance(response, ExceptionResponse):
            raise ModbusExceptionAnswer(response.exception_code)
        return response

    async def read(self, address: int, count: int) -> list[int]:
        response = await self.request(ReadHoldingRegistersRequest(address=address, count=count))
        return list(response.registers)

    async def write(self, address: int, registers: list[int]) -> None:
        await self.request(WriteMultipleRegistersRequest(address=address, registers=registers))

    async def write_single(self, address: int, value: int) -> None:
        await self.request(WriteSingleRegisterRequest(address=address, registers=[value]))

    async def read_tag(self, name: str) -> float | int | str | None:
        tag = self.profile.tag(name)
        return codec.decode_value(tag, await self.read(tag.address, tag.count))

    async def write_tag(self, name: str, value: float | int) -> None:
        tag = self.profile.tag(name)
        await self.write(tag.address, codec.encode(tag, value))
