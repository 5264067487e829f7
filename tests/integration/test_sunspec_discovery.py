"""SunSpec discovery against an independent register image: pysunspec2 encodes the models
(tests/peers/sunspec_image.py), pymodbus's own server serves them in a subprocess, and the
gateway discovers the map, writes a profile, and reads it through its own driver. The expected
values are pysunspec2's ``cvalue`` (its own scale-factor arithmetic)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import trio
import trio.testing

from bessai.clock import trio_wall_clock
from bessai.control.limits import INVALID_DATA, Limits, evaluate
from bessai.device import ModbusClient, UniversalDriver, tcp_stream_factory
from bessai.device.profile import parse_profile
from bessai.sunspec.discover import DiscoveryError, discover
from tests.peers import sunspec_image
from tests.peers.pymodbus_server import PymodbusPeer

CHAIN = (1, 103, 124, 802, 803)
# core tag -> (model, point) in the image above
CORE = {
    "soc": (802, "SoC"),
    "active_power": (103, "W"),
    "grid_frequency": (103, "Hz"),
    "battery_power": (802, "W"),
    "battery_temp": (803, "ModTmpMax"),
    "inverter_temp": (103, "TmpCab"),
    "device_status": (103, "St"),
}


@pytest.fixture
def socket_clock():
    return trio.testing.MockClock(autojump_threshold=0.2)


def serve(words: list[int], base: int = 40000, *, extra: list | None = None) -> PymodbusPeer:
    holding = [[base, words], *(extra or [])]
    return PymodbusPeer({"unit_id": 1, "holding": holding}).start()


async def discover_on(port: int, base_unit: int = 1):
    client = ModbusClient(tcp_stream_factory("127.0.0.1", port), unit_id=base_unit,
                          timeout_s=5, post_connect_delay_s=0, cooldown_s=0)
    async with client:
        return await discover(client, port=port, unit_id=base_unit)


async def read_through(profile_doc: dict, port: int, driver_out: list | None = None):
    profile = parse_profile(json.dumps(profile_doc))
    driver = UniversalDriver(profile, "127.0.0.1", port, site_id="s1",
                             wall_clock=trio_wall_clock(), post_connect_delay_s=0, timeout_s=5)
    async with driver:
        return await driver.read_all()


async def discover_and_read(words: Any) -> tuple[Any, Any]:
    """Serve ``words`` with pymodbus's server, discover the map and read one snapshot through
    the discovered profile; the server is stopped whatever happens."""
    peer = serve(words)
    try:
        found = await discover_on(peer.port)
        return found, await read_through(found.profile, peer.port)
    finally:
        peer.kill()


async def test_every_core_tag_reads_as_pysunspec2_computes_it_with_its_scale_factor(
        socket_clock):
    words, models = sunspec_image.build(CHAIN)
    found, snapshot = await discover_and_read(words)
    assert found.base == 40000
    assert [m.model_id for m in found.chain] == list(CHAIN)
    assert not found.truncated
    assert not found.unknown
    for tag, (mid, point) in CORE.items():
        expected = getattr(models[mid], point).cvalue
        assert snapshot.value(tag) == pytest.approx(expected), tag
    # every other point by <model>_<point>, e.g. phase voltage A of model 103
    assert snapshot.value("103_phvpha") == pytest.approx(models[103].PhVphA.cvalue)
    assert snapshot.value("124_chastate") == pytest.approx(models[124].ChaState.cvalue)
    assert found.profile["device"]["manufacturer"] == "Acme Storage"
    # dispatch goes through model 124 with its revert timer as the lease
    assert found.profile["dispatch"]["lease"]["tag"] == "124_inoutwrte_rvrttms"


async def test_unknown_model_is_listed_and_skipped_and_the_rest_still_reads(socket_clock):
    words, models = sunspec_image.build((1, 103, 124, 802), unknown=[(64900, 12)])
    found, snapshot = await discover_and_read(words)
    assert found.unknown == (64900,)
    assert 64900 in [m.model_id for m in found.chain]
    assert not any(name.startswith("64900") for name in found.profile["tags"])
    assert snapshot.value("soc") == pytest.approx(models[802].SoC.cvalue)
    # 802 has no temperature: the safety guard falls back to the inverter cabinet
    assert found.profile["safety"]["temperature_tags"] == ["inverter_temp"]


async def test_truncated_chain_ends_at_the_last_model_that_answers(socket_clock):
    words, models = sunspec_image.build((1, 103, 124, 802), end_marker=False)
    cut = len(words) - 20  # the device's registers stop inside model 802
    peer = serve(words[:cut])
    try:
        found = await discover_on(peer.port)
        snapshot = await read_through(found.profile, peer.port)
    finally:
        peer.kill()
    assert found.truncated
    assert [m.model_id for m in found.chain] == [1, 103, 124]
    assert found.profile["blocks"][0]["end"] < 40000 + cut
    # 802 was cut: soc falls back to 124 ChaState, and every request in the plan is answered
    assert snapshot.value("soc") == pytest.approx(models[124].ChaState.cvalue)
    assert all(r.valid or "sentinel" in (r.reason or "") or "scale_factor" in (r.reason or "")
               for r in snapshot.readings.values()), {
        k: r.reason for k, r in snapshot.readings.items() if not r.valid}


@pytest.mark.parametrize("base", [0, 50000])
async def test_device_at_other_base_addresses_is_found(socket_clock, base):
    words, models = sunspec_image.build((1, 103, 124, 802))
    peer = serve(words, base=base)
    try:
        found = await discover_on(peer.port)
        snapshot = await read_through(found.profile, peer.port)
    finally:
        peer.kill()
    assert found.base == base
    assert snapshot.value("active_power") == pytest.approx(models[103].W.cvalue)


async def test_no_marker_is_a_discovery_error_that_says_what_to_check(socket_clock):
    peer = serve([0] * 10)
    try:
        with pytest.raises(DiscoveryError, match="no SunSpec marker"):
            await discover_on(peer.port)
    finally:
        peer.kill()


async def test_soc_at_the_not_implemented_sentinel_is_invalid_and_blocks_safety(socket_clock):
    words, _ = sunspec_image.build((1, 103, 124, 802, 803), overrides={802: {"SoC": None}})
    _, snapshot = await discover_and_read(words)
    reading = snapshot.readings["soc"]
    assert not reading.valid
    assert reading.value is None
    assert "0xFFFF" in reading.reason
    state = evaluate(snapshot, snapshot.taken_at, limits=Limits(temp_tags=("battery_temp",)))
    assert INVALID_DATA in state.rules()
    assert state.blocked_charge
    assert state.blocked_discharge


async def test_a_scale_factor_that_changes_between_polls_changes_the_value(socket_clock):
    words, models = sunspec_image.build(CHAIN)
    peer = serve(words)
    try:
        found = await discover_on(peer.port)
        profile = parse_profile(json.dumps(found.profile))
        sf_address = profile.tags["802_soc_sf"].address
        driver = UniversalDriver(profile, "127.0.0.1", peer.port, site_id="s1",
                                 wall_clock=trio_wall_clock(), post_connect_delay_s=0,
                                 timeout_s=5)
        async with driver:
            first = await driver.read_all()
            await driver.client.write_register(sf_address, (-2) & 0xFFFF)
            second = await driver.read_all()
            await driver.client.write_register(sf_address, 0x8000)  # not implemented
            third = await driver.read_all()
    finally:
        peer.kill()
    raw = models[802].SoC.value
    assert first.value("soc") == pytest.approx(raw / 10)
    assert second.value("soc") == pytest.approx(raw / 100)
    assert third.value("soc") is None
    assert "scale_factor" in third.readings["soc"].reason


def test_cli_discover_writes_a_profile_that_validates_and_lists_unknown_models(tmp_path):
    words, _ = sunspec_image.build(CHAIN, unknown=[(64900, 4)])
    out = tmp_path / "device.json"
    bessai = [sys.executable, "-m", "bessai.cli.main"]
    peer = serve(words)
    try:
        done = subprocess.run([*bessai, "profile", "discover", "--host", "127.0.0.1",
                               "--port", str(peer.port), "--out", str(out)],
                              capture_output=True, text=True, timeout=60)
    finally:
        peer.kill()
    assert done.returncode == 0, done.stderr
    assert "SunSpec map at base 40000: models 1, 103, 124, 802, 803, 64900" in done.stdout
    assert "unknown models skipped: 64900" in done.stdout
    checked = subprocess.run([*bessai, "profile", "validate", str(out)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_cli_discover_without_a_sunspec_map_fails_with_a_hint(tmp_path):
    out = tmp_path / "device.json"
    peer = serve([0] * 4)
    try:
        done = subprocess.run([sys.executable, "-m", "bessai.cli.main", "profile", "discover",
                               "--host", "127.0.0.1", "--port", str(peer.port), "--out",
                               str(out)], capture_output=True, text=True, timeout=60)
    finally:
        peer.kill()
    assert done.returncode == 1
    assert "no SunSpec marker" in done.stderr
    assert not out.exists()


async def test_a_model_length_pointing_past_the_address_space_ends_the_chain(socket_clock):
    words, models = sunspec_image.build((1, 103, 124, 802), end_marker=False)
    words += [64900, 60000]  # a vendor model claiming 60000 registers from ~40280
    found, snapshot = await discover_and_read(words)
    assert found.truncated
    assert [m.model_id for m in found.chain] == [1, 103, 124, 802]
    assert snapshot.value("soc") == pytest.approx(models[802].SoC.cvalue)
