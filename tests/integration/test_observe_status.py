"""The status endpoint over real sockets: health answers while the device is down, the cloud is
down and all is up; malformed, slow and oversized requests are refused and the server keeps
serving; ``bessai health`` turns the answer into an exit code."""

from __future__ import annotations

import copy
import io
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from bessai.observe.health import check_health
from bessai.observe.status import StatusServer

ALL_UP: dict[str, Any] = {
    "tree_running": True,
    "actors": {"telemetry": {"state": "running", "restarts": 0},
               "spool": {"state": "running", "restarts": 0},
               "uplink": {"state": "running", "restarts": 2},
               "site:plant-1": {"state": "running", "restarts": 0}},
    "links": {"device:plant-1/inv1": {"state": "up", "since_s": 12.0},
              "uplink": {"state": "up"}},
    "spool": {"depth": 3, "bytes": 4096, "oldest_pending_age_s": 0.4},
    "last_snapshot_age_s": {"plant-1/inv1": 0.8},
    "safety": {"state": "ok", "active_blocks": []},
}


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


class Harness:
    def __init__(self) -> None:
        self.status = copy.deepcopy(ALL_UP)
        self.server = StatusServer(lambda: self.status, port=0, request_timeout_s=5.0,
                                   max_request_bytes=8192, max_connections=4)

    @property
    def port(self) -> int:
        assert self.server.bound_port is not None
        return self.server.bound_port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def raw(self, data: bytes, *, read: bool = True) -> tuple[int, dict[str, str], bytes]:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with stream:
            await stream.send_all(data)
            reply = b""
            while read:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                reply += chunk
        return parse(reply)

    async def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return await self.raw(f"{method} {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())


def parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture
async def harness(clock: trio.testing.MockClock) -> AsyncIterator[Harness]:
    h = Harness()
    async with trio.open_nursery() as nursery:
        await nursery.start(h.server.run)
        yield h
        nursery.cancel_scope.cancel()


async def test_healthz_is_ok_when_all_is_up(harness: Harness) -> None:
    status, headers, body = await harness.get("/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["connection"] == "close"


async def test_healthz_is_503_with_the_reason_while_the_device_is_down(harness: Harness) -> None:
    harness.status["links"]["device:plant-1/inv1"] = {"state": "down",
                                                     "reason": "timeout after 10 s"}
    status, _, body = await harness.get("/healthz")
    assert status == 503
    assert body == b"device:plant-1/inv1 link is down: timeout after 10 s\n"


async def test_healthz_stays_ok_with_a_warning_while_the_cloud_is_down(harness: Harness) -> None:
    harness.status["links"]["uplink"] = {"state": "down", "reason": "DNS failure"}
    harness.status["spool"] = {"depth": 5400, "oldest_pending_age_s": 1800.0}
    status, _, body = await harness.get("/healthz")
    assert status == 200
    assert body.decode().splitlines() == [
        "ok", "warning: uplink link is down: DNS failure",
        "warning: spool holds 5400 rows, oldest pending 1800.0 s"]


async def test_healthz_is_503_while_an_actor_restarts(harness: Harness) -> None:
    harness.status["actors"]["uplink"]["state"] = "backoff"
    status, _, body = await harness.get("/healthz")
    assert (status, body) == (503, b"actor uplink is backoff\n")


async def test_status_serves_the_providers_document_as_json(harness: Harness) -> None:
    status, headers, body = await harness.get("/status?verbose=1")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == ALL_UP


async def test_head_has_headers_and_no_body(harness: Harness) -> None:
    status, headers, body = await harness.get("/healthz", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == "3"


async def test_unknown_path_is_404_and_wrong_method_is_405(harness: Harness) -> None:
    assert (await harness.get("/metrics"))[0] == 404
    status, headers, _ = await harness.raw(
        b"POST /healthz HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",  # TLS hello
    b"GARBAGE\r\n\r\n",
    b"GET /healthz\r\n\r\n",                       # HTTP/0.9-style request line
    b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
])
async def test_malformed_requests_get_400_and_the_server_keeps_serving(
        harness: Harness, garbage: bytes) -> None:
    status, _, body = await harness.raw(garbage)
    assert status == 400, body
    assert (await harness.get("/healthz"))[0] == 200


async def test_slow_loris_gets_408_and_never_delays_other_clients(harness: Harness) -> None:
    slow = await trio.open_tcp_stream("127.0.0.1", harness.port)
    await slow.send_all(b"GET /healthz HTTP/1.1\r\nHost: g")
    started = trio.current_time()
    assert (await harness.get("/healthz"))[0] == 200  # served while the slow one dangles
    assert trio.current_time() - started < 1.0
    reply = b""
    while chunk := await slow.receive_some(4096):
        reply += chunk
    await slow.aclose()
    assert parse(reply)[0] == 408
    assert trio.current_time() - started >= 5.0


async def test_a_full_budget_of_idle_connections_sheds_the_oldest_not_the_newcomer(
        harness: Harness) -> None:
    idle = [await trio.open_tcp_stream("127.0.0.1", harness.port) for _ in range(4)]
    await trio.sleep(0.01)
    status, _, body = await harness.get("/healthz")  # every slot is held by an idle client
    assert (status, body) == (200, b"ok\n")
    assert harness.server.evicted == 1
    reply = b""
    while chunk := await idle[0].receive_some(4096):  # the oldest idle one was dropped
        reply += chunk
    assert parse(reply)[0] == 408
    for stream in idle:
        await stream.aclose()
    await trio.sleep(0.01)
    assert (await harness.get("/healthz"))[0] == 200


async def test_a_failing_provider_is_a_503_or_500_never_a_crash(harness: Harness) -> None:
    def broken() -> dict:
        raise KeyError("links")

    harness.server.status_provider = broken
    status, _, body = await harness.get("/healthz")
    assert (status, body) == (503, b"health check failed: KeyError\n")
    assert (await harness.get("/status"))[0] == 500
    harness.server.status_provider = lambda: harness.status
    assert (await harness.get("/healthz"))[0] == 200


async def test_check_health_exit_code_and_reasons(harness: Harness) -> None:
    out = io.StringIO()
    code = await trio.to_thread.run_sync(check_health, harness.url("/healthz"), 2.0, out)
    assert (code, out.getvalue()) == (0, "ok\n")

    harness.status["links"]["device:plant-1/inv1"] = {"state": "down", "reason": "refused"}
    out = io.StringIO()
    code = await trio.to_thread.run_sync(check_health, harness.url("/healthz"), 2.0, out)
    assert code == 1
    assert out.getvalue() == ("unhealthy (HTTP 503):\n"
                              "  device:plant-1/inv1 link is down: refused\n")


def test_check_health_fails_with_advice_when_nothing_listens() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    out = io.StringIO()
    assert check_health(f"http://127.0.0.1:{port}/healthz", 1.0, out) == 4  # no answer
    assert "is the gateway running" in out.getvalue()


async def test_a_port_in_use_fails_with_what_to_do(clock: trio.testing.MockClock) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    server = StatusServer(dict, port=holder.getsockname()[1])
    with pytest.raises(OSError, match="set STATUS_BIND to a free HOST:PORT"):
        await server.run()
    holder.close()
