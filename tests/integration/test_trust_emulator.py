"""Signed dispatch, durable replay protection and clock trust, end to end in virtual time.

The whole gateway (`bessai.gateway.Gateway`, every actor) drives the in-process simulator and
pulls commands from Google's Pub/Sub emulator; command results come back through the uplink to
the telemetry topic, as the cloud would see them. Operator keys are real Ed25519 key files made
by `bessai.trust.generate_key_pair`; commands are published signed (or forged) to the emulator.
Nothing inside the gateway is patched: its wall clock is the injected seam (anchored at real
time, or two days behind it), and SIGHUP is a real signal.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import MockClock

from bench.chaos.rig import ChaosTransport
from bessai.clock import WallClock
from bessai.gateway import Gateway
from bessai.settings import BindAddress, DeviceSpec, Settings
from bessai.sim import Simulator
from bessai.sim.pubsub_emulator import EmulatorAdmin
from bessai.trust import generate_key_pair, load_private_key, sign_message
from bessai.uplink.credentials import Endpoint
from bessai.uplink.publisher import publish_json
from bessai.uplink.pull import command_message
from tests.pubsub_faults import FaultyTransport, FreezingLimiter, frozen_virtual_time

pytestmark = pytest.mark.emulator

PROJECT = "bessai-trust"
SITE = "trust-site"
DEVICE = "inv1"
TWO_DAYS_S = 2 * 86400.0


@pytest.fixture
def clock() -> MockClock:
    """Virtual time; real I/O (emulator requests, SQLite threads) freezes it while in flight."""
    return MockClock(autojump_threshold=0)


def anchored_wall(offset_s: float = 0.0) -> WallClock:
    """The gateway's wall clock: real time now (plus ``offset_s``), then following Trio's."""
    epoch = time.time() + offset_s - trio.current_time()  # wall-clock: the emulator's time base

    def now() -> float:
        return epoch + trio.current_time()

    return now


@attrs.define(eq=False)
class TrustBench:
    """One site: the simulator, telemetry and command topics, operator keys, gateways."""

    emulator_host: str
    workdir: Path
    sim: Simulator = attrs.field(factory=Simulator)
    tag: str = attrs.field(factory=lambda: uuid.uuid4().hex[:8])
    results: list[dict[str, Any]] = attrs.field(factory=list)
    transport: httpx.AsyncBaseTransport = attrs.field(
        factory=lambda: ChaosTransport(FaultyTransport(httpx.AsyncHTTPTransport())))

    @property
    def admin(self) -> EmulatorAdmin:
        return EmulatorAdmin(f"http://{self.emulator_host}", PROJECT)

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "verify-keys"

    async def emulator(self, fn: Any, *args: Any) -> Any:
        with frozen_virtual_time():
            return await trio.to_thread.run_sync(fn, *args)

    async def setup(self, nursery: trio.Nursery, *key_names: str) -> dict[str, Any]:
        for topic in (f"tel-{self.tag}", f"cmd-{self.tag}"):
            await self.emulator(self.admin.create_topic, topic)
            await self.emulator(self.admin.create_subscription, f"{topic}-sub", topic)
        await nursery.start(self.sim.run)
        keys = {}
        for name in key_names:
            pair = generate_key_pair(self.workdir / "operator", name)
            self.keys_dir.mkdir(exist_ok=True)
            (self.keys_dir / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
            keys[name] = load_private_key(pair.private_path)
        return keys

    def settings(self, **overrides: Any) -> Settings:
        fields: dict[str, Any] = {
            "site_id": SITE, "devices": (DeviceSpec(DEVICE, "127.0.0.1"),),
            "gcp_project_id": PROJECT, "pubsub_topic": f"tel-{self.tag}",
            "pubsub_commands_subscription": f"cmd-{self.tag}-sub",
            "pubsub_commands_topic": f"cmd-{self.tag}",
            "pubsub_emulator_host": self.emulator_host,
            "spool_path": self.workdir / "spool" / "outbox.sqlite",
            "status_bind": BindAddress("127.0.0.1", 0), "shutdown_deadline_s": 5.0,
            "command_verify_keys": self.keys_dir if self.keys_dir.exists() else None,
        }
        fields.update(overrides)
        return Settings(**fields)

    async def start_gateway(self, nursery: trio.Nursery, wall: WallClock,
                            **kwargs: Any) -> Gateway:
        settings = self.settings()
        # A SIGHUP reloads the whole configuration: here its source is this Settings object.
        gw = Gateway(settings, wall_clock=wall,
                     stream_factories={DEVICE: self.sim.stream_factory()},
                     http_transport=self.transport, status_server=False, env_file=None,
                     settings_loader=lambda: settings, **kwargs)
        gw.spool.limiter = FreezingLimiter()
        assert gw.command_trust.replay is not None
        gw.command_trust.replay.limiter = FreezingLimiter()
        await nursery.start(gw.run)
        with trio.fail_after(30):
            while gw.status()["links"]["device:inv1"]["state"] != "up":
                await trio.sleep(0.5)
        return gw

    async def stop_gateway(self, gw: Gateway) -> None:
        gw.request_stop()
        with trio.fail_after(60):
            await gw.supervisor_done.wait()

    def command(self, action: str = "charge", power_w: float = 3000.0, *, now: float,
                ttl_s: float = 600.0, cid: str | None = None) -> dict[str, Any]:
        """A PubsubMessage for a command, unsigned (``sign`` adds the signature)."""
        return command_message({"id": cid or f"cmd-{uuid.uuid4().hex[:12]}", "site_id": SITE,
                                "device_id": DEVICE, "action": action, "power_w": power_w,
                                "issued_at": now, "expires_at": now + ttl_s})

    async def publish(self, *messages: dict[str, Any]) -> None:
        async with httpx.AsyncClient() as client:
            with frozen_virtual_time():
                await publish_json(client, Endpoint.for_emulator(self.emulator_host),
                                   f"projects/{PROJECT}/topics/cmd-{self.tag}", list(messages))

    async def wait_results(self, count: int, timeout_s: float = 600) -> list[dict[str, Any]]:
        """The first ``count`` command_result messages the uplink delivered, in order."""
        with trio.fail_after(timeout_s):
            while len(self.results) < count:
                got = await self.emulator(self.admin.pull, f"tel-{self.tag}-sub")
                self.results += [json.loads(m["data"]) for m in got
                                 if m["attributes"].get("kind") == "command_result"]
                await trio.sleep(1)
        return self.results[:count]

    def non_heartbeat_writes(self, since: float = 0.0) -> list[tuple[str, float]]:
        heartbeat = self.sim.profile.watchdog.heartbeat_tag
        return [(w.tag, w.value) for w in self.sim.write_log
                if w.tag != heartbeat and w.at >= since]

    async def wait_forced_mode(self, mode: int, timeout_s: float = 300) -> None:
        with trio.fail_after(timeout_s):
            while self.sim.state().forced_mode != mode:
                await trio.sleep(0.5)


@attrs.define
class DateStamping(httpx.AsyncBaseTransport):
    """Adds the HTTP ``Date`` header Google's front ends send (the emulator sends none), from
    the real clock: the seam through which the gateway can see a clock that is AHEAD."""

    inner: httpx.AsyncBaseTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        response.headers["date"] = email.utils.formatdate(time.time(), usegmt=True)  # wall-clock
        return response

    async def aclose(self) -> None:
        """Shared by the uplink and commands clients, like the transport it wraps."""


def tampered(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The message with body fields changed after signing (the attributes kept as signed)."""
    body = json.loads(base64.b64decode(message["data"]))
    body.update(fields)
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return {**message, "data": base64.b64encode(data).decode()}


def reason_of(result: dict[str, Any]) -> str:
    return str(result["body"]["reason"])


@pytest.fixture
def bench(pubsub_emulator, tmp_path) -> TrustBench:
    return TrustBench(pubsub_emulator.host, tmp_path)


async def test_a_valid_signed_command_moves_the_forcible_mode_register(bench):
    async with trio.open_nursery() as nursery:
        keys = await bench.setup(nursery, "alice")
        wall = anchored_wall()
        gw = await bench.start_gateway(nursery, wall)
        assert gw.status()["commands_trust"]["authenticated"] is True
        await bench.publish(sign_message(bench.command(now=wall()), keys["alice"]))
        await bench.wait_forced_mode(1)
        [result] = await bench.wait_results(1)
        assert result["name"] == "COMMAND_ACCEPTED"
        assert bench.sim.values()["forcible_charge_power"] == 3000
        await bench.stop_gateway(gw)
        nursery.cancel_scope.cancel()


async def test_forged_unknown_key_and_unsigned_commands_are_rejected_and_nothing_moves(bench):
    async with trio.open_nursery() as nursery:
        keys = await bench.setup(nursery, "alice")
        mallory = load_private_key(generate_key_pair(bench.workdir / "mallory", "m").private_path)
        wall = anchored_wall()
        gw = await bench.start_gateway(nursery, wall)
        genuine = sign_message(bench.command(now=wall(), cid="c-power"), keys["alice"])
        with capture_logs() as logs:
            await bench.publish(
                tampered(genuine, power_w=30000),                                  # body changed
                sign_message(bench.command(now=wall(), cid="c-unknown"), mallory),  # unknown key
                bench.command(now=wall(), cid="c-unsigned"))                       # no signature
            results = await bench.wait_results(3)
        reasons = {r["body"]["command_id"]: reason_of(r) for r in results}
        assert all(r["name"] == "COMMAND_REJECTED" for r in results)
        assert reasons["c-power"].startswith("signature_invalid: ")
        assert reasons["c-unknown"].startswith("signature_unknown_key: ")
        assert reasons["c-unsigned"].startswith("signature_missing: ")
        rejected = [e for e in logs if e["event"] == "COMMAND_REJECTED"]
        assert sorted(e["reason"].split(":")[0] for e in rejected) == [
            "signature_invalid", "signature_missing", "signature_unknown_key"]
        assert bench.non_heartbeat_writes() == []
        assert bench.sim.state().forced_mode == 0
        await bench.stop_gateway(gw)
        nursery.cancel_scope.cancel()


async def test_a_command_id_replayed_after_a_gateway_restart_is_rejected(bench):
    async with trio.open_nursery() as nursery:
        keys = await bench.setup(nursery, "alice")
        wall = anchored_wall()
        first = await bench.start_gateway(nursery, wall)
        charge = sign_message(bench.command(now=wall(), cid="c-once"), keys["alice"])
        await bench.publish(charge)
        await bench.wait_forced_mode(1)
        await bench.publish(sign_message(bench.command("stop", now=wall()), keys["alice"]))
        await bench.wait_forced_mode(0)
        await bench.wait_results(2)
        await bench.stop_gateway(first)

        restarted_at = trio.current_time()
        second = await bench.start_gateway(nursery, wall)
        await bench.publish(charge)  # the captured message, byte for byte
        results = await bench.wait_results(3)
        assert results[2]["name"] == "COMMAND_REJECTED"
        assert results[2]["body"]["command_id"] == "c-once"
        assert reason_of(results[2]).startswith("replay: ")
        assert bench.non_heartbeat_writes(since=restarted_at) == []
        assert bench.sim.state().forced_mode == 0
        await bench.stop_gateway(second)
        nursery.cancel_scope.cancel()


async def test_a_command_is_refused_while_the_gateway_clock_is_two_days_behind(bench):
    async with trio.open_nursery() as nursery:
        keys = await bench.setup(nursery, "alice")
        behind = anchored_wall(-TWO_DAYS_S)
        with capture_logs() as logs:
            gw = await bench.start_gateway(nursery, behind)
            operator_now = time.time()  # wall-clock: the operator's clock is right
            await bench.publish(
                sign_message(bench.command(now=operator_now, cid="c-charge"), keys["alice"]),
                # an hour past its expiry: fresh to the gateway's clock, stale on server time
                sign_message(bench.command("stop", now=operator_now - 7200, ttl_s=3600,
                                           cid="c-stale"), keys["alice"]),
                sign_message(bench.command("stop", now=operator_now, cid="c-stop"),
                             keys["alice"]))
            results = await bench.wait_results(3)
        by_id = {r["body"]["command_id"]: r for r in results}
        assert by_id["c-charge"]["name"] == "COMMAND_REJECTED"
        assert reason_of(by_id["c-charge"]).startswith("clock_untrusted: ")
        assert by_id["c-stale"]["name"] == "COMMAND_REJECTED"
        assert "expired" in reason_of(by_id["c-stale"])
        assert by_id["c-stop"]["name"] == "COMMAND_ACCEPTED"  # stop still works
        mode_tag = bench.sim.profile.dispatch.mode_tag
        assert {tag for tag, _ in bench.non_heartbeat_writes()} <= {mode_tag}
        assert all(value == 0 for _, value in bench.non_heartbeat_writes())
        assert bench.sim.state().forced_mode == 0
        skew = [e for e in logs if e["event"] == "CLOCK_SKEW"]
        assert len(skew) == 1
        assert skew[0]["local_clock"] == "behind"
        clock_view = gw.status()["commands_trust"]["clock"]
        assert clock_view["trusted"] is False
        assert clock_view["skew_s"] == pytest.approx(TWO_DAYS_S, abs=600)
        await bench.stop_gateway(gw)
        nursery.cancel_scope.cancel()


async def test_a_clock_an_hour_ahead_is_seen_from_the_date_header_and_fresh_commands_work(
        pubsub_emulator, tmp_path):
    """Only ``Date`` shows a clock that is ahead (publishTime is a lower bound). Fresh commands
    would all look expired to that clock; judged on server time they are not."""
    bench = TrustBench(pubsub_emulator.host, tmp_path, transport=DateStamping(
        ChaosTransport(FaultyTransport(httpx.AsyncHTTPTransport()))))
    async with trio.open_nursery() as nursery:
        keys = await bench.setup(nursery, "alice")
        ahead = anchored_wall(+3600)
        with capture_logs() as logs:
            gw = await bench.start_gateway(nursery, ahead)
            with trio.fail_after(60):
                while gw.command_trust.clock.trusted:
                    await trio.sleep(1)
            operator_now = time.time()  # wall-clock: the operator's clock is right
            await bench.publish(
                sign_message(bench.command(now=operator_now, cid="c-charge"), keys["alice"]),
                sign_message(bench.command("stop", now=operator_now, cid="c-stop"),
                             keys["alice"]))
            results = await bench.wait_results(2)
        by_id = {r["body"]["command_id"]: r for r in results}
        assert reason_of(by_id["c-charge"]).startswith("clock_untrusted: ")
        assert by_id["c-stop"]["name"] == "COMMAND_ACCEPTED"  # not "expired 3000 s ago"
        skew = [e for e in logs if e["event"] == "CLOCK_SKEW"]
        assert len(skew) == 1
        assert skew[0]["local_clock"] == "ahead"
        assert skew[0]["source"] == "date"
        assert gw.status()["commands_trust"]["clock"]["skew_s"] == pytest.approx(-3600, abs=120)
        assert bench.sim.state().forced_mode == 0
        await bench.stop_gateway(gw)
        nursery.cancel_scope.cancel()


async def test_a_key_removed_by_sighup_is_rejected_from_then_on(bench):
    async with trio.open_nursery() as nursery:
        keys = await bench.setup(nursery, "alice", "bob")
        wall = anchored_wall()
        gw = await bench.start_gateway(nursery, wall, handle_sighup=True)
        await bench.publish(sign_message(bench.command("stop", now=wall(), cid="c-bob-1"),
                                         keys["bob"]))
        assert (await bench.wait_results(1))[0]["name"] == "COMMAND_ACCEPTED"

        (bench.keys_dir / "bob.pub").unlink()
        with capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            with trio.fail_after(30):
                while len(gw.command_trust.keys.keys) != 1:
                    await trio.sleep(0.1)
        assert any(e["event"] == "COMMAND_KEYS_RELOADED" for e in logs)

        await bench.publish(
            sign_message(bench.command(now=wall(), cid="c-bob-2"), keys["bob"]),
            sign_message(bench.command(now=wall(), cid="c-alice"), keys["alice"]))
        results = await bench.wait_results(3)
        by_id = {r["body"]["command_id"]: r for r in results}
        assert reason_of(by_id["c-bob-2"]).startswith("signature_unknown_key: ")
        assert by_id["c-alice"]["name"] == "COMMAND_ACCEPTED"
        await bench.wait_forced_mode(1)
        await bench.stop_gateway(gw)
        nursery.cancel_scope.cancel()


async def test_a_tampered_copy_sent_first_does_not_stop_the_genuine_command(bench):
    async with trio.open_nursery() as nursery:
        keys = await bench.setup(nursery, "alice")
        wall = anchored_wall()
        gw = await bench.start_gateway(nursery, wall)
        genuine = sign_message(bench.command(power_w=2500, now=wall(), cid="c-1"),
                               keys["alice"])
        await bench.publish(tampered(genuine, power_w=9000), genuine)
        first, second = await bench.wait_results(2)
        assert reason_of(first).startswith("signature_invalid: ")
        assert second["name"] == "COMMAND_ACCEPTED"
        assert second["body"]["command_id"] == "c-1"
        await bench.wait_forced_mode(1)
        assert bench.sim.values()["forcible_charge_power"] == 2500
        await bench.stop_gateway(gw)
        nursery.cancel_scope.cancel()


async def test_without_verify_keys_the_gateway_runs_and_says_commands_are_unauthenticated(
        bench):
    async with trio.open_nursery() as nursery:
        await bench.setup(nursery)  # no keys
        wall = anchored_wall()
        with capture_logs() as logs:
            gw = await bench.start_gateway(nursery, wall)
        warnings = [e for e in logs if e["event"] == "COMMANDS_UNAUTHENTICATED"]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert gw.status()["commands_trust"]["authenticated"] is False
        await bench.publish(bench.command(now=wall(), cid="c-open"))
        await bench.wait_forced_mode(1)  # still works, as before (and loudly flagged)
        await bench.stop_gateway(gw)
        nursery.cancel_scope.cancel()
