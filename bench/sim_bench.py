"""Requests per second served by ``bessai-sim`` vs pymodbus's own asyncio server, on loopback.

Baseline: pymodbus 3.16's ``ModbusTcpServer`` (asyncio) serving a ``SimDevice`` with the same
register blocks as the Huawei profile, filled with a snapshot of the simulator's registers.
Result: the Trio simulator (``Simulator.serve_tcp``), whose every read syncs the battery model
and encodes the tags through the profile's codec.

Each server runs in its own process; one blocking client in this process sends requests back
to back (one outstanding, as the gateway talks to an inverter) with TCP_NODELAY. Rounds
alternate between the servers; the table shows the median of the rounds.

Run: ``/work/venv/bin/python -m bench.sim_bench [--requests N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from bench._machine import machine_description, publish_table, utc_now

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sim.md"

CASES = {
    # name: (function code, address, count or value)
    "read 9 regs (SOC..battery power, with reserved)": (3, 37758, 9),
    "read 64 regs (planner-sized, inverter block)": (3, 32000, 64),
    "write 1 reg (heartbeat 49999)": (6, 49999, 1),
}


# ---- servers (run in child processes) ----------------------------------------------------------
def _snapshot() -> tuple[object, dict[int, list[int]]]:
    import trio

    from bessai.device.profile import Table
    from bessai.sim import Simulator

    sim = Simulator()
    out: dict[int, list[int]] = {}

    async def grab() -> None:
        for block in sim.profile.blocks:
            regs = sim.image.read(Table.HOLDING, block.start, block.end - block.start + 1)
            assert isinstance(regs, list)
            out[block.start] = regs

    trio.run(grab)
    return sim, out


def serve_trio() -> None:
    import trio

    from bessai.sim import Simulator

    async def main() -> None:
        sim = Simulator()
        async with sim, trio.open_nursery() as nursery:
            _, port = await nursery.start(sim.serve_tcp, "127.0.0.1", 0)
            print(port, flush=True)
            await trio.sleep_forever()

    trio.run(main)


def serve_trio_echo() -> None:
    """The floor of Trio socket I/O: a correct-length canned answer, no Modbus decoding."""
    import trio

    async def handler(stream: trio.SocketStream) -> None:
        while True:
            data = await stream.receive_some(4096)
            if not data:
                return
            if data[7] == 3:
                count = int.from_bytes(data[10:12], "big")
                body = bytes([1, 3, 2 * count]) + b"\0" * (2 * count)
                await stream.send_all(data[:4] + len(body).to_bytes(2, "big") + body)
            else:
                await stream.send_all(data)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(listeners[0].socket.getsockname()[1], flush=True)
        await trio.serve_listeners(handler, listeners)

    trio.run(main)


def serve_pymodbus() -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    _, blocks = _snapshot()
    simdata = [
        SimData(address=start, values=regs, datatype=DataType.REGISTERS)
        for start, regs in blocks.items()
    ]
    device = SimDevice(id=1, simdata=simdata)

    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.3)
        print(port, flush=True)
        await task

    asyncio.run(main())


# ---- client -----------------------------------------------------------------------------------
def _frame(tid: int, fc: int, address: int, arg: int) -> bytes:
    pdu = struct.pack(">BHH", fc, address, arg)  # FC3 (address, count) or FC6 (address, value)
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def _run_case(port: int, case: tuple[int, int, int], requests: int) -> float:
    fc, address, arg = case
    frames = [_frame(i & 0xFFFF, fc, address, arg) for i in range(256)]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(200):  # warm-up
            sock.sendall(frames[i & 0xFF])
            header = _recv_exact(sock, 6)
            _recv_exact(sock, struct.unpack(">H", header[4:6])[0])
        start = time.perf_counter()
        for i in range(requests):
            sock.sendall(frames[i & 0xFF])
            header = _recv_exact(sock, 6)
            body = _recv_exact(sock, struct.unpack(">H", header[4:6])[0])
            if body[1] & 0x80:
                raise RuntimeError(f"exception 0x{body[2]:02X} for {case}")
        return requests / (time.perf_counter() - start)


def _start(kind: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sim_bench", "--serve", kind],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise RuntimeError(f"{kind} server did not start")
    return proc, int(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serve", choices=["trio", "pymodbus", "trio-echo"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve == "trio":
        serve_trio()
        return 0
    if args.serve == "pymodbus":
        serve_pymodbus()
        return 0
    if args.serve == "trio-echo":
        serve_trio_echo()
        return 0

    kinds = ("pymodbus", "trio", "trio-echo")
    servers = {kind: _start(kind) for kind in kinds}
    results: dict[str, dict[str, list[float]]] = {c: {k: [] for k in kinds} for c in CASES}
    try:
        for _ in range(args.rounds):
            for name, case in CASES.items():
                for kind, (_, port) in servers.items():
                    results[name][kind].append(_run_case(port, case, args.requests))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)

    lines = [
        "# bessai-sim throughput vs pymodbus's asyncio server",
        "",
        f"Date: {utc_now()}. "
        f"Machine: {machine_description()} (shared with other jobs: expect noise).",
        f"Python {platform.python_version()}; sequential requests, one outstanding, loopback; "
        f"{args.requests} requests x {args.rounds} rounds per case, median shown.",
        "",
        "Reference column: a bare Trio socket server answering canned frames (no Modbus, no",
        "model), i.e. the floor of Trio's socket I/O on this machine.",
        "",
        "| case | baseline: pymodbus server (req/s) | bessai-sim (req/s) | ratio "
        "| ref: bare Trio echo (req/s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in CASES:
        base = statistics.median(results[name]["pymodbus"])
        ours = statistics.median(results[name]["trio"])
        echo = statistics.median(results[name]["trio-echo"])
        lines.append(f"| {name} | {base:,.0f} | {ours:,.0f} | {ours / base:.2f} | {echo:,.0f} |")
    publish_table(RESULTS, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
