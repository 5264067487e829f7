"""A real gateway-like process for the SIGKILL test: appends and publishes until killed.

    python -m tests.e2e.spool_writer SPOOL EMULATOR_HOST PROJECT TOPIC (write|drain)

``write``: four tasks append telemetry for devices inv0/inv1 and print ``ACK <device> <seq>
<msg_id>`` (flushed) after each append returned, i.e. once the row is accepted (on disk); the
uplink publishes concurrently. ``drain``: append nothing, publish until the spool is empty,
print ``DRAINED`` and exit. Real clock: this is an end-to-end process.
"""

from __future__ import annotations

import sys

import httpx
import structlog
import trio

from bessai.model import Snapshot, TagReading
from bessai.uplink.credentials import Endpoint
from bessai.uplink.message import record_from_snapshot
from bessai.uplink.publisher import Publisher
from bessai.uplink.spool import Spool
from bessai.uplink.uplink import Uplink


async def main(path: str, host: str, project: str, topic: str, mode: str) -> None:
    spool = Spool(path, commit_interval_s=0.05)
    async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        publisher = Publisher(client, project, topic, endpoint=Endpoint.for_emulator(host))
        uplink = Uplink(spool, publisher, batch_max=50, idle_poll_s=0.05,
                        backoff_base_s=0.05, backoff_cap_s=0.5)
        await nursery.start(uplink.run)
        print("READY", flush=True)
        if mode == "drain":
            while spool.stats().depth or spool.stats().leased:
                await trio.sleep(0.05)
            print("DRAINED", flush=True)
            nursery.cancel_scope.cancel()
            return

        async def writer(device: str) -> None:
            n = 0
            while True:
                n += 1
                record = record_from_snapshot(Snapshot(
                    site_id="site1", device_id=device, ts=1.7e9 + n, taken_at=0.0,
                    readings={"soc": TagReading(50.0), "n": TagReading(n)}))
                accepted = await spool.append(record)
                print(f"ACK {accepted.device_id} {accepted.seq} {accepted.msg_id}", flush=True)

        for device in ("inv0", "inv0", "inv1", "inv1"):
            nursery.start_soon(writer, device)


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    trio.run(main, *sys.argv[1:6])
