from bessai.cli.screen import LogTail, render


def _status(**site_overrides):
    site = {"link": {"state": "up"}, "values": {"soc": 4.2, "battery_power": -1500,
                                                "battery_temp": 31.0},
            "safety": {"rules": [{"rule": "soc_min"}]}, "heartbeat": {"beats": 12},
            "forcing": None}
    site.update(site_overrides)
    return {"site": "s1", "tree_running": True, "uplink_mode": "emulator",
            "sites": {"inv1": site}, "links": {"cloud": {"state": "down"}},
            "spool": {"depth": 1800, "oldest_pending_age_s": 1799.5, "dead_letters": 0},
            "actors": {"uplink": {"restarts": 1}, "spool": {"restarts": 0}}}


def test_screen_shows_device_safety_link_and_spool_depth():
    text = render(_status())
    assert "inv1" in text
    assert "4.2" in text
    assert "-1500" in text
    assert "soc_min" in text
    assert "cloud link down" in text
    assert "spool depth 1800" in text
    assert "{'uplink': 1}" in text


def test_screen_shortens_log_lines_and_keeps_the_last_ones():
    tail = LogTail(size=2)
    tail.write("ts=2026-11-27T09:58:55.611Z level=CRITICAL event=SAFETY_BLOCK rule=soc_min\n")
    tail.write("ts=2026-11-27T09:58:56.000Z level=INFO event=A\nts=2026-11-27T09:58:57.000Z ")
    tail.write("level=INFO event=B\n")
    text = render(_status(), list(tail.lines))
    assert "09:58:56 INFO A" in text
    assert "09:58:57 INFO B" in text
    assert "SAFETY_BLOCK" not in text


def test_screen_says_when_commands_are_unauthenticated_or_the_clock_is_untrusted():
    assert "commands" not in render(_status())  # an older status document: no line
    status = _status()
    status["commands_trust"] = {"authenticated": False, "keys": {"key_ids": []},
                                "clock": {"skew_s": 172800.4, "trusted": False}}
    text = render(status)
    assert "commands NOT AUTHENTICATED" in text
    assert "clock skew 172800.4 s" in text
    assert "CLOCK UNTRUSTED" in text
    status["commands_trust"] = {"authenticated": True, "keys": {"key_ids": ["a", "b"]},
                                "clock": {"skew_s": 0.2, "trusted": True}}
    text = render(status)
    assert "commands signed (2 keys)" in text
    assert "UNTRUSTED" not in text
