"""``bessai health`` against a real HTTP server answering like the gateway's status endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.cli_harness import run_bessai


class _Status(BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"ok\n")

    def do_GET(self) -> None:
        code, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    server.answer = (200, b"ok\n")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_health_finds_the_endpoint_from_status_bind_and_exits_0(status_server):
    port = status_server.server_address[1]
    result = run_bessai("health", STATUS_BIND=f"0.0.0.0:{port}")  # wildcard bind → loopback
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"healthy: http://127.0.0.1:{port}/healthz"


def test_unhealthy_gateway_exits_1_with_its_reasons(status_server):
    status_server.answer = (503, b"device inv1: link down\n")
    port = status_server.server_address[1]
    result = run_bessai("health", "--url", f"http://127.0.0.1:{port}/healthz")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: the gateway is unhealthy (http://127.0.0.1:{port}")
    assert "device inv1: link down" in result.stderr
    # It answered: the hint acts on its reasons, it does not ask whether it runs.
    assert "\nhint: the gateway is running and answered" in result.stderr
    assert "is the gateway running" not in result.stderr


def test_no_gateway_listening_exits_4_no_answer_not_unhealthy(status_server):
    port = status_server.server_address[1]
    status_server.shutdown()
    status_server.server_close()
    result = run_bessai("health", "--timeout-s", "2", STATUS_BIND=f"127.0.0.1:{port}")
    assert result.returncode == 4
    assert "error: no answer from the gateway" in result.stderr
    assert "unhealthy" not in result.stderr
    assert "hint: " in result.stderr


@pytest.mark.parametrize(("code", "body"), [(503, b"too many connections\n"),
                                            (404, b"not found\n"), (500, b"oops\n")])
def test_an_answer_that_is_not_a_health_verdict_exits_4(status_server, code, body):
    status_server.answer = (code, body)
    port = status_server.server_address[1]
    result = run_bessai("health", "--url", f"http://127.0.0.1:{port}/healthz")
    assert result.returncode == 4, result.stderr
    assert f"answered HTTP {code}" in result.stderr
    assert "is unhealthy" not in result.stderr
