"""The gateway's health: the policy (`health_from_status`) and the client (`check_health`).

Two questions, two answers:

* **Is the process healthy?** (the exit code of ``bessai health``, the 200/503 of ``/healthz``,
  what a container health check acts on). No when the tree or an actor is not running, or a
  device link is not up. Restarting could help, or someone must look.
* **What is degraded?** Named conditions that do not make the process unhealthy but that an
  operator must see, one line each, first word the condition: ``safety_block`` (a direction is
  blocked by a limit: a safe state, not a fault), ``stale_data`` / ``invalid_data`` (the device
  answers but its data cannot be trusted: both directions blocked), ``waiting_for_data`` (start
  up), ``cloud link is down`` / ``commands link is down`` (readings wait in the spool).

`check_health` (``bessai health``, the Docker HEALTHCHECK) has three outcomes, always printed
with why:

* 0 healthy: ``/healthz`` answered 200 (degraded conditions are printed, the code stays 0);
* 1 unhealthy: the gateway answered ``/healthz`` with 503 and its reasons — it is up and says
  a part of it is not;
* 4 no answer: nothing listens, the connection timed out, the endpoint was overloaded (its own
  503 ``too many connections``) or the answer is not the gateway's (another status, another
  service on the port). Nothing is known about the gateway's health then; Docker counts it as a
  failed check like 1, an operator or monitor can tell the two apart.

It runs in a separate short-lived process, so it uses httpx's synchronous client.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import httpx

from bessai.bounds import clip
from bessai.errors import EXIT_FAILED, EXIT_NO_ANSWER

_OK_CHILD_STATES = {"running"}
_DATA_RULES = ("no_data", "stale_data", "invalid_data")


def health_from_status(status: dict[str, Any]) -> tuple[bool, list[str]]:
    """(healthy, lines) from a status document: the reasons when unhealthy, else the degraded
    conditions (empty when all is well). See the module docstring for the policy.

    Unhealthy also when the spool is in a disk fault (the condition is named: disk_full,
    read_only, locked...) or the data branch is degraded (it crash-looped; the sites still
    run): the data path is losing or holding data and an operator must look."""
    reasons: list[str] = []
    if status.get("tree_running") is False:
        reasons.append("supervision tree is not running")
    for child, info in (status.get("actors") or {}).items():
        state = str((info or {}).get("state", "unknown")).lower()
        if state in _OK_CHILD_STATES:
            continue
        if state == "stopped" and str(info.get("restart", "")).lower() in {"transient",
                                                                          "temporary"}:
            continue
        reasons.append(f"actor {child} is {state}")
    links = status.get("links") or {}
    device_links = {name: link for name, link in links.items() if name.startswith("device")}
    if not device_links:
        reasons.append("no device link reported yet")
    warnings: list[str] = []
    for name, link in sorted(links.items()):
        state = str((link or {}).get("state", "unknown")).lower()
        if state == "up":
            continue
        why = (link or {}).get("reason")
        text = f"{name} link is {state}" + (f": {why}" if why else "")
        (reasons if name in device_links else warnings).append(text)
    spool = status.get("spool") or {}
    condition = spool.get("condition")
    if condition not in (None, "ok"):
        # a disk fault: telemetry is being lost and critical events wait in memory
        lasted = spool.get("condition_for_s")
        reasons.append(f"spool disk fault: {condition}"
                       + (f" for {round(lasted)} s" if isinstance(lasted, int | float) else "")
                       + (f" ({spool['condition_detail']})" if spool.get("condition_detail")
                          else "")
                       + f"; {spool.get('held', 0)} critical records held, "
                       + f"{status.get('events_held', 0)} events waiting")
    branch = status.get("data_branch") or {}
    if branch.get("state") == "degraded":
        reasons.append(f"data branch degraded after {branch.get('escalations', 0)} escalations"
                       + (f": {branch['last_escalation']}" if branch.get("last_escalation")
                          else "") + "; the device sites keep running")
    if warnings and spool.get("depth") is not None:
        age = spool.get("oldest_pending_age_s")
        warnings.append(f"spool holds {spool['depth']} rows, oldest pending "
                        + (f"{round(age, 1)} s" if isinstance(age, int | float) else "?"))
    conditions = [line for device, site in sorted((status.get("sites") or {}).items())
                  for line in site_conditions(device, site or {})]
    if reasons:
        return False, reasons + conditions
    return True, conditions + warnings


def site_conditions(device: str, site: dict[str, Any]) -> list[str]:
    """The named conditions of one device's control loop (safety blocks, untrusted data)."""
    safety = site.get("safety") or {}
    rules = [r for r in safety.get("rules") or [] if isinstance(r, dict)]
    if safety.get("waiting_for_data"):
        return [f"waiting_for_data {device}: no reading yet since the start; charge and "
                "discharge blocked until the first one"]
    lines = []
    for rule in rules:
        if rule.get("rule") in _DATA_RULES:
            lines.append(f"{rule['rule']} {device}: {rule.get('reason') or 'data not trusted'}"
                         "; charge and discharge blocked")
    limit_rules = [r for r in rules if r.get("rule") not in _DATA_RULES]
    if limit_rules:
        what = " and ".join(d for d, key in (("charge", "blocked_charge"),
                                              ("discharge", "blocked_discharge"))
                            if safety.get(key))
        why = ", ".join(_describe(r) for r in limit_rules)
        lines.append(f"safety_block {device}: {what or 'nothing'} blocked — {why}")
    return lines


def _describe(rule: dict[str, Any]) -> str:
    op = "<" if rule.get("rule") == "soc_min" else ">"
    return f"{rule.get('rule')} ({rule.get('tag')}={rule.get('value')} {op} {rule.get('limit')})"

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
