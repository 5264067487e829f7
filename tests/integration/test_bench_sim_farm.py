"""The load bench's peers: `bench.sim_farm` serves N independent simulated inverters on N
loopback ports from one process, reports the ports on one line, and exits 0 on SIGTERM. Also the
bench's parser of Pub/Sub publish times. Real process, real clock."""

import pytest
import trio

from bench.load import Proc, _parse_rfc3339, start_sim_farm
from bessai.device import UniversalDriver, load_profile

pytestmark = pytest.mark.e2e


def test_publish_times_parse_with_any_number_of_fraction_digits():
    assert _parse_rfc3339("2026-01-01T00:00:00Z") == 1767225600.0
    assert _parse_rfc3339("2026-01-01T00:00:00.25Z") == pytest.approx(1767225600.25)
    assert _parse_rfc3339("2026-01-01T00:00:00.123456789Z") == pytest.approx(
        1767225600.123456789, abs=1e-6)


def test_sim_farm_serves_independent_devices_on_separate_ports_and_stops_on_sigterm(tmp_path):
    proc: Proc
    proc, ports = start_sim_farm(3, tmp_path / "farm.log")
    try:
        assert len(set(ports)) == 3
        profile = load_profile("profiles/huawei_sun2000.json")

        async def read_all() -> list[float]:
            socs = []
            for port in ports:  # one client per device at once (each accepts one, as Huawei)
                async with UniversalDriver(profile, "127.0.0.1", port, post_connect_delay_s=0,
                                           timeout_s=5) as driver:
                    socs.append(await driver.read_tag("soc"))
            return socs

        socs = trio.run(read_all)
        assert all(soc == pytest.approx(50.0, abs=1.0) for soc in socs)
    finally:
        proc.stop(timeout_s=10)  # SIGTERM; a farm still running after 10 s is killed (-9)
    assert proc.popen.returncode == 0  # it ended by itself, on the signal
