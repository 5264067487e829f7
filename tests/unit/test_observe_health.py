"""The health policy: the process is healthy or not (exit code, 200/503), and what is degraded
is named one condition per line (safety blocks, untrusted data, start-up, the cloud link)."""

from __future__ import annotations

from bessai.cli.health_cmd import health_text
from bessai.observe.health import health_from_status


def doc(**site_safety) -> dict:
    safety = {"blocked_charge": False, "blocked_discharge": False, "rules": [],
              "waiting_for_data": False, **site_safety}
    return {"tree_running": True, "actors": {"spool": {"state": "running"}},
            "links": {"device:inv1": {"state": "up"}, "cloud": {"state": "up"}},
            "sites": {"inv1": {"safety": safety}}, "spool": {"depth": 3}}


def rule(name, value=None, limit=None, tag=None, reason=None):
    return {"rule": name, "value": value, "limit": limit, "tag": tag, "reason": reason}


def test_all_well_is_healthy_with_no_condition():
    assert health_from_status(doc()) == (True, [])


def test_hot_battery_and_invalid_soc_are_named_while_the_process_stays_healthy():
    ok, lines = health_from_status(doc(
        blocked_charge=True, blocked_discharge=True,
        rules=[rule("invalid_data", tag="soc", reason="soc invalid: device sentinel"),
               rule("temp_max", 46.0, 45.0, "battery_temp")]))
    assert ok is True
    assert lines == [
        "invalid_data inv1: soc invalid: device sentinel; charge and discharge blocked",
        "safety_block inv1: charge and discharge blocked — temp_max (battery_temp=46.0 > 45.0)"]


def test_stale_data_and_a_cloud_link_down_are_named():
    status = doc(blocked_charge=True, blocked_discharge=True,
                 rules=[rule("stale_data", 9.0, 3.0, reason="last snapshot is 9.0 s old")])
    status["links"]["cloud"] = {"state": "down", "reason": "connect timeout"}
    ok, lines = health_from_status(status)
    assert ok is True
    assert lines == ["stale_data inv1: last snapshot is 9.0 s old; charge and discharge blocked",
                     "cloud link is down: connect timeout",
                     "spool holds 3 rows, oldest pending ?"]


def test_start_up_is_named_as_waiting_for_data():
    ok, lines = health_from_status(doc(waiting_for_data=True, blocked_charge=True,
                                       blocked_discharge=True, rules=[rule("no_data")]))
    assert ok is True
    assert lines[0].startswith("waiting_for_data inv1:")


def test_a_device_link_down_is_unhealthy_and_comes_first():
    status = doc()
    status["links"]["device:inv1"] = {"state": "down", "reason": "refused"}
    assert health_from_status(status) == (False, ["device:inv1 link is down: refused"])


def test_the_cli_says_degraded_and_lists_each_condition():
    url = "http://127.0.0.1:8080/healthz"
    assert health_text(url, "ok") == f"healthy: {url}"
    assert health_text(url, "ok\nwarning: safety_block inv1: charge blocked — soc_max").split(
        "\n") == [f"healthy, degraded (1): {url}", "  safety_block inv1: charge blocked — soc_max"]
