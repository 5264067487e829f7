"""``bessai health``: ask the status endpoint and turn the answer into an exit code.

Used by the Docker HEALTHCHECK and by operators. Exit 0 when ``/healthz`` answers 200, 1 for
anything else (503 with reasons, refused connection, timeout), and always print why. Runs in a
separate short-lived process, so it uses httpx's synchronous client.
"""

from __future__ import annotations

import sys
from typing import TextIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def check_health(url: str = DEFAULT_URL, timeout_s: float = 3.0,
                 out: TextIO | None = None) -> int:
    """Print the gateway's health and return the process exit code (0 healthy, 1 not)."""
    out = out if out is not None else sys.stdout
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.get(url)
    except httpx.TimeoutException:
        print(f"unhealthy: {url} did not answer within {timeout_s} s — the gateway may be "
              "stalled; check `docker logs` for the last events", file=out)
        return 1
    except httpx.HTTPError as error:
        print(f"unhealthy: cannot reach {url} ({type(error).__name__}: {error}) — is the "
              "gateway running, and is STATUS_BIND the same for both?", file=out)
        return 1
    body = response.text.strip()
    if response.status_code == 200:
        print(body or "ok", file=out)
        return 0
    print(f"unhealthy (HTTP {response.status_code}):", file=out)
    for line in body.splitlines() or ["(no reason given)"]:
        print(f"  {line}", file=out)
    return 1
