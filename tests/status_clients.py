"""Clients of the status endpoint, real and hostile, for its tests and its benchmark.

`hostile_connections` opens the connections that used to starve a real client: half of them
send nothing, half send a request head that never ends (slow loris); `get_healthz` is the real
client. Both speak plain HTTP/1.1 over Trio sockets on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import trio

ALL_UP: dict[str, Any] = {
    "tree_running": True,
    "actors": {"spool": {"state": "running"}},
    "links": {"device:inv1": {"state": "up"}},
}
"""A status document of a healthy gateway (what the endpoint's provider returns)."""


def partial_head(i: int) -> bytes:
    """The start of a request head that is never finished (a slow-loris client)."""
    return f"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow-{i}: ".encode()


async def hostile_connections(port: int, count: int) -> list[trio.SocketStream]:
    """``count`` open connections to ``port``: the even ones idle, the odd ones slow loris.
    The caller closes them."""
    streams = []
    for i in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if i % 2:
            await stream.send_all(partial_head(i))
        streams.append(stream)
    return streams


async def get_healthz(port: int) -> tuple[int, bytes]:
    """One real ``GET /healthz``, read to the end: (status code, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
