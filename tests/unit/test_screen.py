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
    assert "command trust" not in render(_status())  # an older status document: no line
    status = _status()
    status["commands_trust"] = {"authenticated": False, "keys": {"key_ids": []},
                                "clock": {"skew_s": 172800.4, "trusted": False}}
    text = render(status)
    assert "command trust NOT AUTHENTICATED" in text
    assert "clock skew 172800.4 s" in text
    assert "CLOCK UNTRUSTED" in text
    status["commands_trust"] = {"authenticated": True, "keys": {"key_ids": ["a", "b"]},
                                "clock": {"skew_s": 0.2, "trusted": True}}
    text = render(status)
    assert "command trust signed (2 keys)" in text
    assert "UNTRUSTED" not in text


def test_every_line_fits_80_columns_and_a_long_event_is_wrapped_whole():
    long = ("ts=2026-11-27T09:58:55.611Z level=WARNING event=COMMAND_REJECTED command_id=c-1 "
            'reason="' + "discharge blocked by safety: soc_min (soc=4.2 < 5.0) " * 4 + 'END"')
    status = _status(forcing={"action": "charge", "power_w": 2000.0, "command_id": "c-9",
                              "lease_renewed_s_ago": 1.0})
    status["links"]["commands"] = {"state": "up", "handled": 3}
    text = render(status, [long], width=80, height=40)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "active command: charge 2000 W" in text
    assert "commands link up (handled 3)" in text
    assert 'END"' in text  # the end of the event is on screen: wrapped, not cut


def test_the_pane_scrolls_back_and_says_so():
    lines = [f"ts=2026-11-27T09:58:{i:02d}.000Z level=INFO event=E{i}" for i in range(60)]
    following = render(_status(), lines, width=80, height=24)
    assert "E59" in following
    back = render(_status(), lines, width=80, height=24, scroll=10)
    assert "E59" not in back
    assert "E49" in back
    assert "scrolled back 10 rows" in back


def test_the_log_file_gets_every_line_whole_and_rotates(tmp_path):
    tail = LogTail(size=2, log_file=tmp_path / "gateway.log", max_bytes=200)
    for i in range(10):
        tail.write(f"ts=2026-11-27T09:58:{i:02d}.000Z level=INFO event=E{i} " + "x" * 40 + "\n")
    tail.close()
    current = (tmp_path / "gateway.log").read_text().splitlines()
    rotated = (tmp_path / "gateway.log.1").read_text().splitlines()
    assert current[-1].startswith("ts=2026-11-27T09:58:09.000Z level=INFO event=E9 ")
    assert len(rotated + current) >= 4
    assert all(line.endswith("x" * 40) for line in rotated + current)
