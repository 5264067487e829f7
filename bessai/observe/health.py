"""``bessai health``: ask the status endpoint and turn the answer into an exit code.

Used by the Docker HEALTHCHECK and by operators. Three outcomes, always printed with why:

* 0 healthy: ``/healthz`` answered 200;
* 1 unhealthy: the gateway answered ``/healthz`` with 503 and its reasons — it is up and says
  a part of it is not;
* 4 no answer: nothing listens, the connection timed out, the endpoint was overloaded (its own
  503 ``too many connections``) or the answer is not the gateway's (another status, another
  service on the port). Nothing is known about the gateway's health then; Docker counts it as a
  failed check like 1, an operator or monitor can tell the two apart.

Runs in a separate short-lived process, so it uses httpx's synchronous client.
"""

from __future__ import annotations

import sys
from typing import TextIO

import httpx

from bessai.bounds import clip
from bessai.errors import EXIT_FAILED, EXIT_NO_ANSWER

DEFAULT_URL = "http://127.0.0.1:8080/healthz"
HEALTHY = 0
UNHEALTHY = EXIT_FAILED
NO_ANSWER = EXIT_NO_ANSWER
OVERLOAD_TEXT = "too many connections"
"""The status endpoint's own body when it sheds a connection (see bessai.observe.status)."""


def check_health(url: str = DEFAULT_URL, timeout_s: float = 3.0,
                 out: TextIO | None = None) -> int:
    """Print the gateway's health and return the exit code: 0 healthy, 1 unhealthy, 4 no
    answer."""
    out = out if out is not None else sys.stdout
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.get(url)
    except httpx.TimeoutException:
        print(f"no answer: {url} did not answer within {timeout_s} s — the gateway may be "
              "stalled or overloaded; check `docker logs` for the last events", file=out)
        return NO_ANSWER
    except httpx.HTTPError as error:
        print(f"no answer: cannot reach {url} ({type(error).__name__}: {clip(error, 160)}) — is "
              "the gateway running, and is STATUS_BIND the same for both?", file=out)
        return NO_ANSWER
    body = response.text.strip()
    if response.status_code == 200:
        print(clip(body, 4000) or "ok", file=out)
        return HEALTHY
    if response.status_code == 503 and not body.startswith(OVERLOAD_TEXT):
        print(f"unhealthy (HTTP {response.status_code}):", file=out)
        for line in clip(body, 4000).splitlines() or ["(no reason given)"]:
            print(f"  {line}", file=out)
        return UNHEALTHY
    print(f"no answer: {url} answered HTTP {response.status_code} "
          f"({clip(body.splitlines()[0] if body else 'no body', 120)}), not a health verdict — "
          + ("the status endpoint is overloaded; try again" if body.startswith(OVERLOAD_TEXT)
             else "is this the gateway's status endpoint (STATUS_BIND, --url)?"), file=out)
    return NO_ANSWER
