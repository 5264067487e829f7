import attrs
import pytest
import trio

from bessai import Action, Command, Snapshot, TagReading, trio_wall_clock


def test_snapshot_value_hides_invalid_readings():
    snap = Snapshot(
        site_id="s1",
        device_id="d1",
        ts=1.0,
        taken_at=0.0,
        readings={"soc": TagReading(None, valid=False, reason="invalid_sentinel"),
                  "battery_power": TagReading(1200)},
    )
    assert snap.value("soc") is None
    assert snap.value("battery_power") == 1200
    assert snap.value("missing") is None
    assert snap.values() == {"soc": None, "battery_power": 1200}


def test_snapshot_is_frozen():
    snap = Snapshot("s", "d", 0.0, 0.0, {})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        snap.ts = 2.0  # type: ignore[misc]


def test_command_action_is_parsed_and_bad_action_rejected():
    assert Command("c", "s", "d", "charge").action is Action.CHARGE
    with pytest.raises(ValueError, match="explode"):
        Command("c", "s", "d", "explode")


async def test_trio_wall_clock_follows_virtual_time(autojump_clock):
    now = trio_wall_clock(epoch_at_zero=1000.0)
    start = now()
    await trio.sleep(3 * 24 * 3600)
    assert now() - start == pytest.approx(3 * 24 * 3600)
