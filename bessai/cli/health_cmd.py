"""``bessai health``: ask the running gateway's status endpoint whether it is healthy.

Used by Docker's HEALTHCHECK and by operators. Exits 0 when ``/healthz`` says healthy, 1 when the
gateway answers that it is unhealthy (with its reasons), 4 when no answer could be had (nothing
listens, a timeout, an overloaded or foreign endpoint). The URL comes from ``--url`` or
STATUS_BIND (a wildcard bind such as 0.0.0.0 is reached on loopback); it reads STATUS_BIND alone,
so a health check still works when another setting is wrong.
"""

from __future__ import annotations

import argparse
import inspect
import io
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from bessai.cli._lazy import load
from bessai.errors import EXIT_NO_ANSWER, ConfigError, NoAnswerError, OperationFailedError
from bessai.settings import DEFAULT_ENV_FILE, load_env, parse_bind

_HINT = (
    "is the gateway running? (`docker compose ps` / `systemctl status bessai-gateway`); "
    "read its last log lines (ops/RUNBOOK.md §4)"
)
_ANSWERED_HINT = (
    "the gateway is running and answered: act on the reasons above (ops/RUNBOOK.md §6; a "
    "device link down: §6.2)"
)

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "health",
        parents=[common],
        help="check the running gateway's /healthz (exit 0 healthy, 1 unhealthy, 4 no answer); "
        "names what is degraded (safety blocks, stale data, cloud link)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--url", help="health URL (default http://<STATUS_BIND>/healthz)")
    parser.add_argument("--timeout-s", type=float, default=3.0,
                        help="seconds to wait for an answer, > 0 (default 3)")
    parser.set_defaults(func=run)


def health_url(env_file: str | None) -> str:
    """``http://HOST:PORT/healthz`` from STATUS_BIND (default 127.0.0.1:8080)."""
    raw, _ = load_env(env_file=env_file or DEFAULT_ENV_FILE)
    text = raw.get("STATUS_BIND", "127.0.0.1:8080")
    try:
        bind = parse_bind(text)
    except ValueError as exc:
        raise ConfigError(f"STATUS_BIND={text!r} {exc}",
                          hint="fix it in config/.env or pass --url") from None
    return f"{bind.url}/healthz"


def _verdict(result: Any, printed: str) -> tuple[bool, str]:
    """(healthy, detail) from what ``check_health`` returned and printed.

    It returns an exit code (0 healthy) and prints why; a bool or an object with ``ok`` is
    accepted too.
    """
    if isinstance(result, bool):
        return result, printed
    if isinstance(result, int):
        return result == 0, printed
    ok = getattr(result, "ok", getattr(result, "healthy", None))
    detail = printed or str(getattr(result, "detail", "") or "")
    return (bool(result) if ok is None else bool(ok)), detail


def run(args: argparse.Namespace) -> int:
    url = args.url or health_url(args.env_file)
    check_health = load("bessai.observe.health", "check_health", command="health")
    buffer = io.StringIO()
    kwargs = {"out": buffer} if "out" in inspect.signature(check_health).parameters else {}
    try:
        if inspect.iscoroutinefunction(check_health):
            result = trio.run(partial(check_health, url, args.timeout_s, **kwargs))
        else:
            result = check_health(url, args.timeout_s, **kwargs)
    except OSError as exc:
        raise NoAnswerError(
            f"the gateway's status endpoint at {url} does not answer: {exc}",
            hint=_HINT,
        ) from exc
    ok, detail = _verdict(result, buffer.getvalue().strip())
    if result == EXIT_NO_ANSWER and not isinstance(result, bool):
        raise NoAnswerError(
            f"no answer from the gateway ({url}); its health is unknown"
            + (":\n  " + detail.replace("\n", "\n  ") if detail else ""),
            hint=_HINT,
        )
    status_url = url.replace("/healthz", "/status")
    if not ok:
        answered = detail.startswith("unhealthy (HTTP")  # the gateway runs and said why
        raise OperationFailedError(
            f"the gateway is unhealthy ({url})"
            + (":\n  " + detail.replace("\n", "\n  ") if detail else ""),
            hint=(_ANSWERED_HINT if answered else _HINT) + "; `curl -s " + status_url
            + "` shows which part is down",
        )
    print(health_text(url, detail))
    return 0


def health_text(url: str, body: str) -> str:
    """``healthy: URL``, or ``healthy, degraded: URL`` and one line per named condition."""
    conditions = [line.removeprefix("warning: ") for line in body.splitlines()
                  if line.strip() and line.strip() != "ok"]
    if not conditions:
        return f"healthy: {url}"
    return "\n".join([f"healthy, degraded ({len(conditions)}): {url}",
                      *(f"  {line}" for line in conditions)])
