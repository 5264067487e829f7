"""The status endpoint: ``GET /healthz`` and ``GET /status`` over HTTP/1.1, on Trio with h11.

Decoupled from the gateway: it serves whatever two callables return.

* ``status_provider() -> dict``: the status document (schema in docs/telemetry.md);
* ``health_provider() -> (ok, reasons)``: 200 ``ok`` (reasons, if any, follow as warnings)
  or 503 with one reason per line. Defaults to `health_from_status` over the status document.

Invariants, whatever a client sends:

* binds 127.0.0.1 by default; one request per connection (``Connection: close``);
* a request head larger than ``max_request_bytes``, or not HTTP, gets 400; an unknown path 404;
  a method other than GET/HEAD 405; a client that does not finish its request head within
  ``request_timeout_s`` (2 s: idle or slow loris) gets 408;
* idle and slow clients cannot starve a real one: up to ``max_connections`` (256) are served at
  once, and when all are taken the OLDEST connection still sending its request head is dropped
  (408) to make room, so a newcomer that sends its request at once is answered; only when every
  slot holds a request being answered does a newcomer get 503 ``too many connections`` (with
  ``Retry-After``), which `bessai health` reports as "no answer", not "unhealthy";
* every per-connection error stays in that connection's handler: the server keeps serving;
* a provider that raises yields 500 (status) or 503 (health), logged, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import h11
import structlog
import trio

from bessai.observe.health import health_from_status
from bessai.observe.redact import redact_value

log = structlog.get_logger("bessai.observe.status")

StatusProvider = Callable[[], dict[str, Any]]
HealthProvider = Callable[[], tuple[bool, list[str]]]

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            408: b"Request Timeout", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


def _response(status: int, body: bytes, content_type: str,
              extra: list[tuple[bytes, bytes]] | None = None) -> tuple[h11.Response, bytes]:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"),
               (b"connection", b"close"), *(extra or [])]
    return h11.Response(status_code=status, headers=headers,
                        reason=_REASONS.get(status, b"")), body


def _raw_response(status: int, text: str, *, retry_after_s: int | None = None) -> bytes:
    body = (text + "\n").encode()
    retry = b"retry-after: %d\r\n" % retry_after_s if retry_after_s is not None else b""
    return (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n%s\r\n"
            % (status, _REASONS.get(status, b""), len(body), retry)) + body


async def _close_gracefully(stream: trio.SocketStream) -> None:
    """Half-close, then drain a little of what the client still sends, then close.

    Closing with unread bytes makes the kernel send a reset, which can destroy the response
    before the client reads it; the drain is bounded in time and bytes.
    """
    with trio.move_on_after(0.5) as cleanup:
        cleanup.shield = True
        try:
            await stream.send_eof()
            drained = 0
            while drained < 65536:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                drained += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await trio.aclose_forcefully(stream)


class _BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@attrs.define
class StatusServer:
    """Serves ``/healthz`` and ``/status`` until cancelled; an actor of the gateway tree."""

    status_provider: StatusProvider
    health_provider: HealthProvider | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    request_timeout_s: float = 2.0
    max_request_bytes: int = 8192
    max_connections: int = 256
    bound_port: int | None = attrs.field(default=None, init=False)
    served: int = attrs.field(default=0, init=False)
    rejected: int = attrs.field(default=0, init=False)
    evicted: int = attrs.field(default=0, init=False)
    """Connections dropped while still sending their request head, to make room for a new one."""
    _reading: dict[int, trio.CancelScope] = attrs.field(factory=dict, init=False, repr=False)
    """Connections still receiving their request head, oldest first (insertion order)."""

    async def run(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as error:
            raise OSError(
                error.errno,
                f"status endpoint cannot listen on {self.host}:{self.port} ({error.strerror}) "
                "— set STATUS_BIND to a free HOST:PORT, or stop what holds this one",
            ) from error
        self.bound_port = listeners[0].socket.getsockname()[1]
        log.info("STATUS_ENDPOINT_LISTENING", host=self.host, port=self.bound_port)
        limiter = trio.CapacityLimiter(self.max_connections)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, partial(self._connection, limiter),
                                        listeners))
            task_status.started(self.bound_port)

    # --- one connection ---------------------------------------------------------------

    async def _admit(self, limiter: trio.CapacityLimiter) -> bool:
        """Take a connection slot; when all are taken, evict the oldest one still reading its
        request head (an idle or slow-loris client) and wait briefly for its slot."""
        try:
            limiter.acquire_nowait()
            return True
        except trio.WouldBlock:
            pass
        if self._reading:
            oldest = next(iter(self._reading))
            self._reading.pop(oldest).cancel()
            self.evicted += 1
        with trio.move_on_after(min(1.0, self.request_timeout_s)):
            await limiter.acquire()
            return True
        return False

    async def _connection(self, limiter: trio.CapacityLimiter, stream: trio.SocketStream) -> None:
        try:
            if not await self._admit(limiter):
                self.rejected += 1
                with trio.move_on_after(self.request_timeout_s):
                    await stream.send_all(_raw_response(503, "too many connections",
                                                        retry_after_s=1))
                return
            try:
                await self._serve_one(stream)
            finally:
                limiter.release()
        except Exception as error:  # a broken client never takes the server down
            log.debug("status_connection_error", error=type(error).__name__)
        finally:
            await _close_gracefully(stream)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_request_bytes)
        request: h11.Request | None = None
        error: _BadRequest | None = None
        with trio.move_on_after(self.request_timeout_s) as timer:
            key = id(timer)
            self._reading[key] = timer
            try:
                request = await self._read_head(stream, conn)
            except _BadRequest as bad:
                error = bad
            finally:
                self._reading.pop(key, None)
        if timer.cancelled_caught:
            error = _BadRequest(408, f"request not received within {self.request_timeout_s} s")
        with trio.move_on_after(self.request_timeout_s):
            if error is not None:
                self.rejected += 1
                await stream.send_all(_raw_response(error.status, error.text))
                return
            if request is None:  # client closed before sending anything
                return
            response, body = self._route(request)
            payload = conn.send(response) or b""
            if request.method != b"HEAD":
                payload += conn.send(h11.Data(data=body)) or b""
            payload += conn.send(h11.EndOfMessage()) or b""
            self.served += 1
            await stream.send_all(payload)

    async def _read_head(self, stream: trio.SocketStream,
                         conn: h11.Connection) -> h11.Request | None:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as problem:
                if problem.error_status_hint == 431:
                    raise _BadRequest(400, "request head too large (limit "
                                      f"{self.max_request_bytes} bytes)") from None
                log.debug("status_bad_request", problem=str(problem)[:120])
                raise _BadRequest(400, "malformed HTTP request — send e.g. "
                                  "'GET /healthz HTTP/1.1'") from None
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is h11.NEED_DATA:
                data = await stream.receive_some(4096)
                conn.receive_data(data)
                continue
            raise _BadRequest(400, "unexpected HTTP event")

    def _route(self, request: h11.Request) -> tuple[h11.Response, bytes]:
        path = request.target.split(b"?", 1)[0]
        if path not in (b"/healthz", b"/status"):
            return _response(404, b"not found: try /healthz or /status\n", "text/plain")
        if request.method not in (b"GET", b"HEAD"):
            return _response(405, b"method not allowed: use GET\n", "text/plain",
                             [(b"allow", b"GET, HEAD")])
        if path == b"/healthz":
            return self._health()
        return self._status()

    def _health(self) -> tuple[h11.Response, bytes]:
        try:
            if self.health_provider is not None:
                ok, reasons = self.health_provider()
            else:
                ok, reasons = health_from_status(self.status_provider())
        except Exception as error:
            log.error("STATUS_PROVIDER_FAILED", provider="health", error=repr(error))
            ok, reasons = False, [f"health check failed: {type(error).__name__}"]
        lines = ["ok"] if ok else []
        lines += [("warning: " if ok else "") + str(reason) for reason in reasons]
        if not ok and not reasons:
            lines = ["unhealthy"]
        return _response(200 if ok else 503, ("\n".join(lines) + "\n").encode(),
                         "text/plain; charset=utf-8")

    def _status(self) -> tuple[h11.Response, bytes]:
        try:
            document = redact_value(self.status_provider())
            body = (json.dumps(document, default=str, indent=2) + "\n").encode()
        except Exception as error:
            log.error("STATUS_PROVIDER_FAILED", provider="status", error=repr(error))
            return _response(500, b'{"error": "status unavailable, see the gateway log"}\n',
                             "application/json")
        return _response(200, body, "application/json")
