"""pymodbus's own asyncio Modbus TCP server as an independent peer, run in a subprocess.

The Trio client and driver are tested against this real, independent implementation rather
than against a mock. Run as ``python -m tests.peers.pymodbus_server CONFIG_JSON``; it prints
``PORT <n>`` once listening and serves until killed (or until stdin closes).

Config: ``{"unit_id": 1, "port": 0, "framer": "socket"|"rtu", "serial": "/dev/pts/N",
"baudrate": 9600, "holding": [[start, [words...]], ...], "coils"/"discrete": [[start, [0|1...]]],
"input": [...], "busy": [addr...], "denied": [addr...], "delay_s": 0}``. Addresses outside the
given ranges answer exception 0x02 (like the inverter); a request touching a ``busy`` address
answers 0x06, a ``denied`` address 0x80 (Huawei's permission denied).

:class:`PymodbusPeer` starts/kills/restarts it from a test; :func:`config_from_profile` fills the
ranges from a device profile's blocks and per-tag values.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _serve(config: dict) -> None:
    import asyncio

    from pymodbus.constants import ExcCodes
    from pymodbus.pdu import ExceptionResponse
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimData, SimDevice
    from pymodbus.simulator.simutils import DataType

    busy = set(config.get("busy", []))
    denied = set(config.get("denied", []))
    delay_s = float(config.get("delay_s", 0))

    async def action(fc, _start, address, count, _regs, _values):
        touched = set(range(address, address + count))
        if delay_s:
            await asyncio.sleep(delay_s)
        if touched & busy:
            return ExcCodes.DEVICE_BUSY
        if touched & denied:
            return ExcCodes.NEGATIVE_ACKNOWLEDGE  # rewritten to 0x80 below
        return None

    def trace_pdu(sending, pdu):
        if sending and isinstance(pdu, ExceptionResponse) and pdu.exception_code == 0x07:
            pdu.exception_code = 0x80
        return pdu

    def blocks(key):
        out = [SimData(start, values=list(words), datatype=DataType.REGISTERS)
               for start, words in config.get(key, [])]
        return out or [SimData(0, count=1, datatype=DataType.INVALID)]

    def bit_blocks(key):
        out = [SimData(start, values=[bool(b) for b in bits], datatype=DataType.BITS)
               for start, bits in config.get(key, [])]
        return out or [SimData(0, values=False, datatype=DataType.BITS)]

    device = SimDevice(id=config.get("unit_id", 1),
                       simdata=(bit_blocks("coils"), bit_blocks("discrete"), blocks("holding"),
                                blocks("input")),
                       action=action)

    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer

    framer = FramerType.RTU if config.get("framer") == "rtu" else FramerType.SOCKET

    async def main():
        if config.get("serial"):  # RTU on a serial line (a pty in tests)
            server = ModbusSerialServer(device, framer=FramerType.RTU, port=config["serial"],
                                        baudrate=config.get("baudrate", 9600),
                                        trace_pdu=trace_pdu)
            await server.serve_forever(background=True)
            port = 0
        else:
            server = ModbusTcpServer(device, framer=framer,
                                     address=("127.0.0.1", config.get("port", 0)),
                                     trace_pdu=trace_pdu)
            await server.serve_forever(background=True)
            port = server.transport.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
        await server.shutdown()

    asyncio.run(main())


class PymodbusPeer:
    """A pymodbus server subprocess: ``start()``, ``kill()`` (SIGKILL), ``restart()``."""

    def __init__(self, config: dict) -> None:
        self.config = dict(config)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> PymodbusPeer:
        config = dict(self.config)
        if self.port is not None:
            config["port"] = self.port  # come back on the same port after a restart
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.peers.pymodbus_server", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=ROOT, env=env, text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            self.kill()
            raise RuntimeError("pymodbus peer did not start listening in time")
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.kill()
            raise RuntimeError(f"pymodbus peer failed to start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream:
                    stream.close()
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> PymodbusPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def config_from_profile(profile, values: dict | None = None, **extra) -> dict:
    """Peer config with the profile's blocks (reserved registers 0) and tags set to ``values``.

    ``values`` maps tag names to values in the tag's unit (encoded with the profile's codec) or
    to raw register lists.
    """
    from bessai.device.codec import encode

    values = values or {}
    tables: dict[str, list] = {"holding": [], "input": []}
    for block in profile.blocks:
        if block.table.value not in tables:  # coils / discrete inputs: the caller's "coils"
            continue
        words = [0] * (block.end - block.start + 1)
        for tag in profile.tags.values():
            if tag.table != block.table or not block.contains(tag.address, tag.count):
                continue
            if tag.name in values:
                v = values[tag.name]
                regs = v if isinstance(v, list) else encode(tag, v)
                off = tag.address - block.start
                words[off:off + tag.count] = regs
        tables[block.table.value].append([block.start, words])
    return {"unit_id": profile.connection.unit_id, **tables, **extra}


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
