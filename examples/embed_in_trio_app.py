"""Embedding an `actors` supervisor in an existing Trio app.

The app below already has a nursery and a task of its own (a "display" that prints what it
receives). Next to it, a supervisor runs two actors:

* ``sensor`` samples a value every 50 ms into a `LatestCell` (writer never blocks). Its first
  instance hits a simulated fault after 0.4 s; the supervisor restarts it after a short backoff.
* ``reporter`` waits for each newer sensor value and sends it through a bounded mailbox to the
  app's display (backpressure: if the display is slow, the reporter waits, not the sensor).

REST_FOR_ONE means the reporter, which depends on the sensor, is restarted with it. After two
seconds the app asks the supervisor to stop (reverse order: reporter, then sensor), prints what
the supervisor saw, and exits 0. Run it: ``python examples/embed_in_trio_app.py``.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from actors import (
    Backoff,
    ChildSpec,
    LatestCell,
    Strategy,
    Supervisor,
    SupervisorEvent,
    open_mailbox,
)


class Sensor:
    """Samples into a cell. The cell lives outside the actor, so readings survive a restart."""

    def __init__(self, cell: LatestCell[float], faults_left: list[int]) -> None:
        self.cell = cell
        self.faults_left = faults_left
        self.stopping = False

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        started = trio.current_time()
        while not self.stopping:
            self.cell.set(round(20 + 5 * math.sin(trio.current_time()), 2))
            if self.faults_left[0] and trio.current_time() - started > 0.4:
                self.faults_left[0] -= 1
                raise OSError("sensor bus glitch (simulated)")
            await trio.sleep(0.05)

    def request_stop(self) -> None:
        self.stopping = True


class Reporter:
    """Forwards each newer reading to the app through a bounded mailbox."""

    def __init__(self, cell: LatestCell[float], outbox: trio.MemorySendChannel) -> None:
        self.cell = cell
        self.outbox = outbox

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with self.outbox:  # this instance's clone of the mailbox, closed when it ends
            task_status.started()
            seen = self.cell.version
            while True:
                latest = await self.cell.wait_newer(seen)
                seen = latest.version
                await self.outbox.send(f"reading v{latest.version}: {latest.value}")


async def display(inbox: trio.MemoryReceiveChannel) -> None:
    """The app's own task: it knows nothing about supervision."""
    shown = 0
    async for message in inbox:
        shown += 1
        if shown % 10 == 0:
            print(f"app: {message}")


def log_event(event: SupervisorEvent) -> None:
    detail = f" ({event.exception_repr})" if event.exception_repr else ""
    reason = f" {event.reason.value}" if event.reason else ""
    print(f"supervisor {event.supervisor}: {event.child_id} {event.kind.value}{reason}{detail}")


async def main() -> None:
    readings: LatestCell[float] = LatestCell()
    send, receive = open_mailbox(16)
    faults_left = [1]
    supervisor = Supervisor(
        children=[
            ChildSpec("sensor", lambda: Sensor(readings, faults_left), grace_s=1.0),
            ChildSpec("reporter", lambda: Reporter(readings, send.clone()), grace_s=0),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=3,
        period_s=5.0,
        backoff=Backoff(initial_s=0.1, max_s=1.0),
        name="demo",
        on_event=log_event,
    )
    async with trio.open_nursery() as nursery:  # the app's existing nursery
        nursery.start_soon(display, receive)
        await nursery.start(supervisor.run)  # returns once every child reported ready
        print("app: supervisor ready; the app keeps doing its own work")
        await trio.sleep(2.0)
        await supervisor.stop()  # reverse order, each child with its grace; waits for the end
        nursery.cancel_scope.cancel()  # the app's own task ends with the app
    for child in supervisor.which_children():
        print(f"app: child {child.id}: {child.state.value}, restarts={child.restarts}, "
              f"last failure={child.last_failure.exception_repr if child.last_failure else None}")
    print("app: done")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="log: %(levelname)s %(message)s")
    trio.run(main)
