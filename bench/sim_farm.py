"""N simulated inverters in one Trio process, each on its own loopback Modbus TCP port.

The load bench runs this as a separate process so that the gateway's CPU and RSS are measured
alone. Each device is an independent `Simulator` (own battery model, own register image, one
client at a time, as a real Huawei SDongle); the ports are chosen by the OS.

Protocol with the parent: once every listener is bound, one line ``PORTS p1,p2,...`` is written
to stdout (flushed); the process then serves until SIGTERM or SIGINT and exits 0.

Run: ``/work/venv/bin/python -m bench.sim_farm COUNT [--profile PATH]``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

from bessai.sim import Simulator
from bessai.sim.simulator import DEFAULT_PROFILE


async def serve(count: int, profile: str) -> None:
    async with trio.open_nursery() as nursery:
        ports: list[int] = []
        for index in range(count):
            sim = Simulator(profile, soc_pct=50.0, seed=index)
            await nursery.start(sim.run)
            _host, port = await nursery.start(sim.serve_tcp, "127.0.0.1", 0)
            ports.append(port)
        sys.stdout.write("PORTS " + ",".join(str(p) for p in ports) + "\n")
        sys.stdout.flush()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_farm", description=__doc__)
    parser.add_argument("count", type=int, help="how many simulated inverters (1-1000)")
    parser.add_argument("--profile", default=str(DEFAULT_PROFILE), help="device profile JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 1000:
        parser.error("COUNT must be between 1 and 1000")
    trio.run(serve, args.count, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
