"""Command trust in pieces: operator keys, the signature wire form, the replay store on a real
SQLite file, the clock skew tracker and the gate's use of them (issue 14).

The whole path against the emulator and the simulator is in
tests/integration/test_trust_emulator.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bessai.control.command import InvalidCommand, parse_command
from bessai.control.gate import CommandGate, Decision
from bessai.control.limits import SafetyState
from bessai.model import Action, Command
from bessai.trust import (
    KEY_ID_ATTR,
    SIGNATURE_ATTR,
    CommandTrust,
    KeyFileError,
    ReplayStore,
    SignatureFault,
    SkewTracker,
    VerifyKeys,
    generate_key_pair,
    load_private_key,
    parse_http_date,
    parse_rfc3339,
    sign_data,
    verify_command,
)

NOW = 1_767_225_600.0


def body(**overrides) -> bytes:
    fields = {"id": "c-1", "site_id": "site1", "device_id": "inv1", "action": "charge",
              "power_w": 3000, "issued_at": NOW, "expires_at": NOW + 300}
    fields.update(overrides)
    return json.dumps(fields, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    generate_key_pair(out, "alice")
    generate_key_pair(out, "bob")
    return out


@pytest.fixture(scope="module")
def alice(keydir):
    return load_private_key(keydir / "alice.key")


@pytest.fixture(scope="module")
def bob(keydir):
    return load_private_key(keydir / "bob.key")


@pytest.fixture
def only_alice(keydir, tmp_path) -> VerifyKeys:
    (tmp_path / "alice.pub").write_bytes((keydir / "alice.pub").read_bytes())
    return VerifyKeys.load(tmp_path)


# ---- keys ------------------------------------------------------------------------------------


def test_generated_private_key_is_0600_and_the_public_key_sits_beside_it(tmp_path):
    os.umask(0o022)
    pair = generate_key_pair(tmp_path / "out", "ops")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.public_path == tmp_path / "out" / "ops.pub"
    assert b"PUBLIC KEY" in pair.public_path.read_bytes()
    keys = VerifyKeys.load(pair.public_path)
    assert list(keys.keys) == [pair.key_id]
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_pair(tmp_path / "out", "ops")


def test_a_private_key_in_the_verify_set_is_refused_without_echoing_it(keydir, tmp_path):
    (tmp_path / "oops.pub").write_bytes((keydir / "alice.key").read_bytes())
    with pytest.raises(KeyFileError) as info:
        VerifyKeys.load(tmp_path)
    assert "PRIVATE key" in str(info.value)
    secret = (keydir / "alice.key").read_text().splitlines()[1]
    assert secret not in str(info.value)
    assert secret not in (info.value.hint or "")


def test_a_private_key_file_in_the_verify_directory_is_refused(keydir, tmp_path):
    (tmp_path / "alice.pub").write_bytes((keydir / "alice.pub").read_bytes())
    (tmp_path / "alice.key").write_bytes((keydir / "alice.key").read_bytes())
    with pytest.raises(KeyFileError, match=r"private key file\(s\) alice.key"):
        VerifyKeys.load(tmp_path)


def test_reload_swaps_the_whole_set_or_keeps_the_old_one(keydir, tmp_path, alice, bob):
    for name in ("alice", "bob"):
        (tmp_path / f"{name}.pub").write_bytes((keydir / f"{name}.pub").read_bytes())
    keys = VerifyKeys.load(tmp_path)
    assert len(keys.keys) == 2
    (tmp_path / "bob.pub").unlink()
    (tmp_path / "broken.pub").write_text("not a key")
    with capture_logs() as logs:
        assert keys.reload() is False
    assert len(keys.keys) == 2  # a bad file keeps the previous set, whole
    assert [e["event"] for e in logs] == ["COMMAND_KEYS_RELOAD_FAILED"]
    (tmp_path / "broken.pub").unlink()
    with capture_logs() as logs:
        assert keys.reload() is True
    assert list(keys.keys) == [sign_data(b"x", alice)[KEY_ID_ATTR]]
    assert logs[0]["event"] == "COMMAND_KEYS_RELOADED"
    assert logs[0]["removed"] == sign_data(b"x", bob)[KEY_ID_ATTR]


def test_a_whole_configuration_reload_can_switch_the_key_source_or_drop_it_loudly(
        keydir, tmp_path):
    from bessai.settings import DeviceSpec, Settings

    trust = CommandTrust(keys=VerifyKeys(None), clock=SkewTracker())
    settings = Settings(site_id="s1", devices=(DeviceSpec("inv1", "127.0.0.1"),),
                        command_verify_keys=keydir / "alice.pub", clock_skew_max_s=45.0)
    trust.reconfigure(settings)
    assert trust.authenticated
    assert trust.clock.max_skew_s == 45.0
    broken = tmp_path / "broken.pub"
    broken.write_text("junk")
    with capture_logs() as logs:
        trust.reconfigure(attrs_evolve_settings(settings, command_verify_keys=broken))
        assert trust.keys.source == keydir / "alice.pub"  # a bad new source keeps the old
        trust.reconfigure(attrs_evolve_settings(settings, command_verify_keys=None))
    assert not trust.authenticated
    assert [e["event"] for e in logs] == ["COMMAND_KEYS_RELOAD_FAILED",
                                          "COMMANDS_UNAUTHENTICATED"]


def attrs_evolve_settings(settings, **changes):
    import attrs

    return attrs.evolve(settings, **changes)


# ---- the wire form -----------------------------------------------------------------------------


def test_a_valid_signature_verifies(only_alice, alice):
    data = body()
    assert verify_command(data, sign_data(data, alice), only_alice,
                          site_id="site1", device_id="inv1") is None


@pytest.mark.parametrize(("case", "fault"), [
    ("missing", SignatureFault.MISSING),
    ("no_key_id", SignatureFault.MISSING),
    ("unknown_key", SignatureFault.UNKNOWN_KEY),
    ("tampered_power", SignatureFault.INVALID),
    ("garbage_signature", SignatureFault.INVALID),
    ("routing_only_in_attributes", SignatureFault.SCOPE),
])
def test_each_bad_signature_is_refused_with_its_reason(only_alice, alice, bob, case, fault):
    data = body()
    attrs = sign_data(data, alice)
    site, device = "site1", "inv1"
    if case == "missing":
        attrs = {}
    elif case == "no_key_id":
        del attrs[KEY_ID_ATTR]
    elif case == "unknown_key":
        attrs = sign_data(data, bob)
    elif case == "tampered_power":
        data = body(power_w=30000)
    elif case == "garbage_signature":
        attrs[SIGNATURE_ATTR] = "!!" * 44
    elif case == "routing_only_in_attributes":
        unrouted = json.loads(data)
        del unrouted["site_id"]
        data = json.dumps(unrouted).encode()
        attrs = sign_data(data, alice)
    rejection = verify_command(data, attrs, only_alice, site_id=site, device_id=device)
    assert rejection is not None
    assert rejection.fault is fault
    assert rejection.reason.startswith(fault.value + ": ")


def _flip(blob: bytes, bit: int) -> bytes:
    out = bytearray(blob)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(where=st.sampled_from(["data", "signature", "key_id"]), bit=st.integers(0, 10_000),
       power_w=st.integers(1, 10**6), action=st.sampled_from([a.value for a in Action]),
       cid=st.text("abcdef0123456789-", min_size=1, max_size=36))
def test_any_single_bit_change_to_a_signed_command_is_rejected(only_alice, alice, where, bit,
                                                                power_w, action, cid):
    """Through the gate's own pipeline: parse, then verify. A flipped bit anywhere in the data
    or the signature attributes of any command never yields a command that passes."""
    data = body(id=cid, power_w=power_w, action=action)
    attrs = sign_data(data, alice)
    if where == "data":
        data = _flip(data, bit % (len(data) * 8))
    else:
        name = SIGNATURE_ATTR if where == "signature" else KEY_ID_ATTR
        raw = attrs[name].encode()
        attrs[name] = _flip(raw, bit % (len(raw) * 8)).decode("latin-1")
    trust = CommandTrust(keys=only_alice, clock=SkewTracker())
    try:
        command = parse_command(data, attrs)
    except InvalidCommand:
        return  # rejected by the parser
    assert trust.verify(data, attrs, command) is not None


def test_every_single_bit_change_of_one_signed_command_is_rejected(only_alice, alice):
    """Exhaustive for one command: each bit of the data, the signature and the key id (the
    sampled property above rarely lands on base64's padding bits; this covers all of them)."""
    data = body()
    attrs = sign_data(data, alice)
    trust = CommandTrust(keys=only_alice, clock=SkewTracker())
    passed = []
    variants: list[tuple[bytes, dict[str, str]]] = [
        (_flip(data, bit), attrs) for bit in range(len(data) * 8)]
    for name in (SIGNATURE_ATTR, KEY_ID_ATTR):
        raw = attrs[name].encode()
        variants += [(data, {**attrs, name: _flip(raw, bit).decode("latin-1")})
                     for bit in range(len(raw) * 8)]
    for changed, changed_attrs in variants:
        try:
            command = parse_command(changed, changed_attrs)
        except InvalidCommand:
            continue
        if trust.verify(changed, changed_attrs, command) is None:
            passed.append((changed, changed_attrs))
    assert passed == []


# ---- the replay store --------------------------------------------------------------------------


async def test_a_claimed_id_is_refused_after_the_store_is_reopened(tmp_path):
    path = tmp_path / "outbox.commands.sqlite"
    first = ReplayStore(path)
    assert await first.claim("c-1", NOW + 300, NOW, NOW) is True
    assert await first.claim("c-1", NOW + 300, NOW, NOW) is False
    first.close()
    again = ReplayStore(path)  # a new gateway process
    assert await again.claim("c-1", NOW + 300, NOW + 10, NOW + 10) is False
    assert await again.claim("c-2", NOW + 300, NOW + 10, NOW + 10) is True


async def test_ids_are_purged_after_expiry_plus_margin_and_only_with_a_trusted_clock(tmp_path):
    store = ReplayStore(tmp_path / "r.sqlite", margin_s=100)
    await store.claim("old", NOW + 10, NOW, NOW)
    later = NOW + 10 + 101
    await store.claim("new", later + 300, later, None)  # untrusted clock: nothing purged
    assert await store.contains("old")
    await store.claim("newer", later + 300, later, later)
    assert not await store.contains("old")
    assert await store.contains("new")


async def test_a_store_that_cannot_be_opened_holds_ids_in_memory_and_writes_them_on_recovery(
        tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    store = ReplayStore(blocker / "r.sqlite")
    trust = CommandTrust(keys=VerifyKeys(None), clock=SkewTracker(), replay=store,
                         wall_clock=lambda: NOW)
    charge = Command("c-1", "site1", "inv1", Action.CHARGE, 1000, NOW, NOW + 300)
    stop = Command("c-2", "site1", "inv1", Action.STOP, 0, NOW, NOW + 300)
    with capture_logs() as logs:
        assert await trust.admit(charge) is None  # dispatch goes on through a disk fault
        assert await trust.admit(stop) is None
        assert (await trust.admit(charge) or "").startswith("replay: ")  # held in memory
        blocker.unlink()
        assert await trust.admit(attrs_evolve(charge, "c-4")) is None
    assert [e["event"] for e in logs] == ["REPLAY_STORE_FAILED", "REPLAY_STORE_RECOVERED"]
    assert trust.held == {}
    assert await store.contains("c-1")  # written on recovery
    assert await store.contains("c-2")
    store.close()
    again = CommandTrust(keys=VerifyKeys(None), clock=SkewTracker(),
                         replay=ReplayStore(blocker / "r.sqlite"), wall_clock=lambda: NOW)
    assert (await again.admit(charge) or "").startswith("replay: ")  # after a restart too


async def test_past_the_in_memory_bound_forcing_is_refused_but_stop_goes_through(
        tmp_path, monkeypatch):
    from bessai.trust import command_trust

    monkeypatch.setattr(command_trust, "HELD_IDS_MAX", 2)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    trust = CommandTrust(keys=VerifyKeys(None), clock=SkewTracker(),
                         replay=ReplayStore(blocker / "r.sqlite"), wall_clock=lambda: NOW)
    charge = Command("c-1", "site1", "inv1", Action.CHARGE, 1000, NOW, NOW + 300)
    assert await trust.admit(charge) is None
    assert await trust.admit(attrs_evolve(charge, "c-2")) is None
    assert (await trust.admit(attrs_evolve(charge, "c-3")) or "").startswith(
        "replay_store_unavailable: ")
    stop = Command("c-9", "site1", "inv1", Action.STOP, 0, NOW, NOW + 300)
    assert await trust.admit(stop) is None


async def test_on_a_full_disk_an_id_already_on_disk_is_still_a_replay(tmp_path):
    """A real full filesystem: INSERT fails with SQLITE_FULL, but the stored ids are still
    read, so a copy of a command handled before the disk filled is rejected."""
    from tests.disk_faults import DiskFiller, require_root, small_tmpfs

    require_root()

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        store = ReplayStore(disk / "outbox.commands.sqlite")
        trust = CommandTrust(keys=VerifyKeys(None), clock=SkewTracker(), replay=store,
                             wall_clock=lambda: NOW)
        before = Command("c-old", "site1", "inv1", Action.CHARGE, 1000, NOW, NOW + 300)
        assert await trust.admit(before) is None
        filler = DiskFiller(disk)
        filler.fill()
        try:
            with capture_logs() as logs:
                assert (await trust.admit(before) or "").startswith("replay: ")
                assert await trust.admit(attrs_evolve(before, "c-new")) is None
            assert "REPLAY_STORE_FAILED" in [e["event"] for e in logs]
        finally:
            filler.free()
        assert await trust.admit(attrs_evolve(before, "c-next")) is None
        assert await store.contains("c-new")
        store.close()


def attrs_evolve(command: Command, new_id: str) -> Command:
    import attrs

    return attrs.evolve(command, id=new_id)


# ---- clock skew --------------------------------------------------------------------------------


def test_publish_time_and_http_date_parse_with_nanoseconds_and_reject_garbage():
    assert parse_rfc3339("2026-01-01T00:00:00.123456789Z") == pytest.approx(NOW + 0.123456789)
    assert parse_rfc3339("2026-01-01T00:00:00Z") == NOW
    assert parse_rfc3339("yesterday") is None
    assert parse_rfc3339("2026-01-01T00:00:00Z" * 50) is None
    assert parse_http_date("Thu, 01 Jan 2026 00:00:00 GMT") == NOW
    assert parse_http_date("soon") is None


def test_skew_enters_and_leaves_the_untrusted_state_once_each():
    local = [NOW]
    tracker = SkewTracker(30.0, wall_clock=lambda: local[0])
    with capture_logs() as logs:
        tracker.observe(publish_times=[NOW + 2 * 86400])  # local clock 2 days behind
        tracker.observe(publish_times=[NOW + 2 * 86400 + 1])
        assert tracker.untrusted
        assert tracker.server_now(NOW) == pytest.approx(NOW + 2 * 86400 + 1)
        tracker.observe(publish_times=[NOW + 27])  # 27 s: inside the limit, not below 80 %
        assert tracker.untrusted
        tracker.observe(publish_times=[NOW + 5])
        assert tracker.trusted
        assert tracker.server_now(NOW) == NOW
    assert [e["event"] for e in logs] == ["CLOCK_SKEW", "CLOCK_SKEW_CLEARED"]
    assert logs[0]["local_clock"] == "behind"


def test_an_old_message_alone_never_makes_the_clock_look_ahead():
    tracker = SkewTracker(30.0, wall_clock=lambda: NOW)
    tracker.observe(publish_times=[NOW - 3 * 86400])  # waited out a 3-day outage
    assert tracker.trusted
    assert tracker.skew_s == 0.0
    tracker.observe(date=NOW - 3600)  # but the server's Date says the clock IS an hour ahead
    assert tracker.untrusted
    assert tracker.skew_s == pytest.approx(-3600 + 0.5)


def test_observe_response_reads_date_and_publish_time_and_ignores_junk():
    tracker = SkewTracker(30.0, wall_clock=lambda: NOW)
    tracker.observe_response({"date": "Thu, 01 Jan 2026 00:10:00 GMT"},
                             [{"message": {"publishTime": "2026-01-01T00:09:59.5Z"}},
                              {"message": "junk"}, 7, {"message": {"publishTime": 5}}])
    assert tracker.source == "date"
    assert tracker.skew_s == pytest.approx(600.5)


# ---- the gate with trust -----------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.applied: list[Command] = []

    async def apply(self, command: Command, power_w: float | None) -> None:
        self.applied.append(command)


def gate_with(trust: CommandTrust, wall: float) -> tuple[CommandGate, Recorder, list]:
    applier, events = Recorder(), []
    gate = CommandGate("site1", "inv1", applier, safety=SafetyState, emit=events.append,
                       wall_clock=lambda: wall, trust=trust)
    return gate, applier, events


async def test_with_the_clock_two_days_behind_charge_is_refused_and_stop_goes_through(tmp_path):
    local = NOW - 2 * 86400
    tracker = SkewTracker(30.0, wall_clock=lambda: local)
    tracker.observe(publish_times=[NOW])
    trust = CommandTrust(keys=VerifyKeys(None), clock=tracker,
                         replay=ReplayStore(tmp_path / "r.sqlite"), wall_clock=lambda: local)
    gate, applier, _ = gate_with(trust, local)
    charge = await gate.handle_command_message(body())
    assert charge.decision is Decision.REJECTED
    assert charge.reason.startswith("clock_untrusted: ")
    # an hour-old command looks fresh to the local clock but is judged on server time
    stale = await gate.handle_command_message(
        body(id="c-old", action="stop", issued_at=NOW - 3900, expires_at=NOW - 3600))
    assert stale.decision is Decision.REJECTED
    assert "expired" in stale.reason
    stop = await gate.handle_command_message(body(id="c-stop", action="stop"))
    assert stop.decision is Decision.ACCEPTED
    assert [c.id for c in applier.applied] == ["c-stop"]


async def test_a_forged_copy_does_not_burn_the_id_of_the_genuine_command(only_alice, alice,
                                                                          tmp_path):
    trust = CommandTrust(keys=only_alice, clock=SkewTracker(wall_clock=lambda: NOW),
                         replay=ReplayStore(tmp_path / "r.sqlite"), wall_clock=lambda: NOW)
    gate, applier, events = gate_with(trust, NOW)
    genuine = body()
    forged = body(power_w=9999)
    attrs = sign_data(genuine, alice)
    first = await gate.handle_command_message(forged, attrs)
    assert first.reason.startswith("signature_invalid: ")
    second = await gate.handle_command_message(genuine, attrs)
    assert second.decision is Decision.ACCEPTED
    assert [c.power_w for c in applier.applied] == [3000]
    assert [e.name for e in events] == ["COMMAND_REJECTED", "COMMAND_ACCEPTED"]


async def test_a_replayed_id_is_refused_by_a_new_gate_on_the_same_store(tmp_path):
    def trust() -> CommandTrust:
        return CommandTrust(keys=VerifyKeys(None), clock=SkewTracker(wall_clock=lambda: NOW),
                            replay=ReplayStore(tmp_path / "r.sqlite"), wall_clock=lambda: NOW)

    gate, applier, _ = gate_with(trust(), NOW)
    assert (await gate.handle_command_message(body())).decision is Decision.ACCEPTED
    again = await gate.handle_command_message(body())  # same process: the first outcome
    assert again.decision is Decision.ACCEPTED
    assert len(applier.applied) == 1
    restarted, applier2, events = gate_with(trust(), NOW + 5)
    replay = await restarted.handle_command_message(body())
    assert replay.decision is Decision.REJECTED
    assert replay.reason.startswith("replay: ")
    assert applier2.applied == []
    assert [e.name for e in events] == ["COMMAND_REJECTED"]


def test_the_signature_attribute_is_canonical_base64_of_64_bytes(alice):
    sig = sign_data(b"x", alice)[SIGNATURE_ATTR]
    assert len(base64.b64decode(sig)) == 64
    assert sig.endswith("==")


async def test_status_shows_key_ids_and_never_key_material(only_alice, keydir):
    trust = CommandTrust(keys=only_alice, clock=SkewTracker(wall_clock=lambda: NOW))
    text = json.dumps(trust.status())
    assert trust.status()["authenticated"] is True
    private = (keydir / "alice.key").read_text().splitlines()[1]
    public = (keydir / "alice.pub").read_text().splitlines()[1]
    assert private not in text
    assert public not in text
    assert next(iter(only_alice.keys)) in text
    await trio.lowlevel.checkpoint()
