"""Idle and slow-loris connections cannot deny ``/healthz`` to a real client.

Against the real `StatusServer` with its shipped defaults, over real sockets: 100 connections
that open and send nothing, and 100 that send a partial request head and never finish it (slow
loris), then a real client — before, about 33 such connections made every real request answer
503, and `bessai health` reported a false "unhealthy". The in-process tests run on virtual time
(a MockClock that jumps only when every task has waited 50 real ms with no I/O ready): the real
client must be answered without waiting on any of the server's timers (the 1 s wait for a free
slot, the 2 s head deadline), so its answer takes zero virtual seconds however loaded the machine
is, and the head deadline is exactly ``request_timeout_s``. `bessai health` is a real process on
the real clock.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from bessai.observe.status import StatusServer
from tests.integration.cli_harness import ROOT, cli_env
from tests.status_clients import ALL_UP, get_healthz, hostile_connections, partial_head


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that waits for the loopback sockets: it jumps only after 50 real ms idle."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.mark.parametrize("hostile", [200, 600])
async def test_idle_and_slow_loris_connections_do_not_deny_healthz_to_a_real_client(
        hostile: int, clock: trio.testing.MockClock) -> None:
    """200: within the connection budget (256). 600: more than the budget — the oldest of them
    are shed to make room, and the real client is still answered."""
    server = StatusServer(lambda: ALL_UP, port=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run)
        streams = await hostile_connections(port, hostile)
        await trio.sleep(0.2)  # the clock jumps once the server has accepted every one of them
        for attempt in range(3):  # three real requests, each while the hostile ones hang on
            started = trio.current_time()
            with trio.fail_after(5):
                status, body = await get_healthz(port)
            took = trio.current_time() - started
            assert (status, body) == (200, b"ok\n"), (attempt, status, body)
            assert took == 0.0, f"the real client waited {took:.3f} virtual s on a timer"
        # no newcomer got 503: every refusal was a hostile connection shed with 408
        assert server.rejected == server.evicted
        if hostile > server.max_connections:
            assert server.evicted >= hostile - server.max_connections
        else:
            assert server.evicted == 0
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_slow_loris_connections_are_dropped_after_the_head_deadline(
        clock: trio.testing.MockClock) -> None:
    server = StatusServer(lambda: ALL_UP, port=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(partial_head(0))
        started = trio.current_time()
        with trio.fail_after(10):
            reply = b""
            while chunk := await stream.receive_some(4096):
                reply += chunk
        took = trio.current_time() - started
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert took == pytest.approx(server.request_timeout_s)
        await stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.fixture
def server_in_thread() -> Iterator[int]:
    """The real StatusServer in its own Trio thread; yields its port."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        server = StatusServer(lambda: ALL_UP, port=0)
        async with trio.open_nursery() as nursery:
            holder["port"] = await nursery.start(server.run)
            holder["cancel"] = nursery.cancel_scope
            holder["token"] = trio.lowlevel.current_trio_token()
            ready.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield holder["port"]
    finally:
        trio.from_thread.run_sync(holder["cancel"].cancel, trio_token=holder["token"])
        thread.join(10)


def test_bessai_health_says_healthy_while_100_slow_connections_hang(server_in_thread):
    port = server_in_thread
    hostile = []
    try:
        for i in range(100):
            sock = socket.create_connection(("127.0.0.1", port))
            if i % 2:
                sock.sendall(partial_head(i))
            hostile.append(sock)
        time.sleep(0.2)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "bessai.cli.main", "health", "--timeout-s", "3", "--url",
             f"http://127.0.0.1:{port}/healthz"],
            cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"healthy: http://127.0.0.1:{port}/healthz"
        assert time.monotonic() - started < 30  # the process start dominates
    finally:
        for sock in hostile:
            sock.close()
