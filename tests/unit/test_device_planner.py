"""Read planner: fewest requests within the profile's limits, never across blocks or tables."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bessai.device import load_profile
from bessai.device.planner import format_plan, plan
from bessai.device.profile import (
    Block,
    ConnectionDefaults,
    DeviceIdentity,
    DispatchSpec,
    LeaseSpec,
    Profile,
    SafetyFeeds,
    Tag,
    WatchdogSpec,
)

HUAWEI = Path(__file__).resolve().parents[2] / "profiles" / "huawei_sun2000.json"


@pytest.fixture(scope="module")
def huawei():
    return load_profile(HUAWEI)


def _covers_exactly(profile, requests, names):
    seen = [n for r in requests for n in r.tags]
    assert sorted(seen) == sorted(names)
    for r in requests:
        assert 1 <= r.count <= profile.connection.max_registers_per_read
        block = next(b for b in profile.blocks if b.name == r.block)
        assert block.table == r.table
        assert block.contains(r.address, r.count)
        for name in r.tags:
            tag = profile.tags[name]
            assert r.address <= tag.address
            assert tag.end <= r.end


def test_huawei_full_snapshot_plan_is_coalesced_and_valid(huawei):
    requests = plan(huawei)
    readable = [n for n, t in huawei.tags.items() if t.readable]
    _covers_exactly(huawei, requests, readable)
    assert "heartbeat" not in {n for r in requests for n in r.tags}
    assert len(requests) == _optimum(huawei, readable)
    assert len(requests) == 8
    assert len(readable) == 30


def test_huawei_fast_plan_covers_the_safety_feeds(huawei):
    requests = plan(huawei, poll="fast")
    names = {n for r in requests for n in r.tags}
    assert {"soc", "battery_temp", "battery_power", "forcible_mode"} <= names
    assert all(huawei.tags[n].poll.value == "fast" for n in names)


def test_named_tags_and_write_only_refusal(huawei):
    requests = plan(huawei, tags=["soc", "battery_power", "battery_status"])
    assert [(r.address, r.count, r.tags) for r in requests] == [
        (37760, 7, ("soc", "battery_status", "battery_power"))]
    with pytest.raises(ValueError, match="write-only"):
        plan(huawei, tags=["heartbeat"])
    with pytest.raises(KeyError, match="known tags"):
        plan(huawei, tags=["nope"])


def test_format_plan_lists_every_request_and_the_per_tag_baseline(huawei):
    text = format_plan(plan(huawei), huawei)
    assert "max_registers_per_read=64 max_gap=16" in text
    assert "37752  37766" in text
    assert text.splitlines()[-1] == ("8 requests, 90 registers, 30 tags "
                                     "(one request per tag would be 30)")


# ---- minimality against a brute-force optimum ------------------------------------------------


def _optimum(profile, names):
    """Fewest requests by exact set cover per (table, block): any valid grouping, not only
    greedy ones (a request may cover any subset of tags whose span and gaps fit)."""
    groups = {}
    for name in names:
        tag = profile.tags[name]
        groups.setdefault((tag.table, profile.block_of(tag).name), []).append(tag)
    c = profile.connection
    return sum(_group_optimum(sorted(tags, key=lambda t: t.address), c.max_registers_per_read,
                              c.max_gap) for tags in groups.values())


def _group_optimum(tags, limit, gap):
    n = len(tags)

    def valid(subset):
        ordered = [tags[i] for i in subset]
        if ordered[-1].end - ordered[0].address > limit:
            return False
        return all(b.address - a.end <= gap for a, b in itertools.pairwise(ordered))

    full = (1 << n) - 1
    valid_masks = [m for m in range(1, full + 1) if valid([i for i in range(n) if m >> i & 1])]

    @functools.cache
    def best(remaining):
        if remaining == 0:
            return 0
        low = remaining & -remaining  # the lowest uncovered tag must be in some request
        return 1 + min(best(remaining & ~m) for m in valid_masks
                       if m & low and m & remaining == m)

    return best(full)


@st.composite
def small_profiles(draw):
    limit = draw(st.integers(1, 12))
    max_gap = draw(st.integers(0, 6))
    n_blocks = draw(st.integers(1, 2))
    blocks = []
    tags = {}
    address = 0
    for b in range(n_blocks):
        start = address
        end = start + draw(st.integers(4, 30))
        blocks.append(Block(f"b{b}", "holding", start, end))
        cursor = start
        while len(tags) < 8:
            cursor += draw(st.integers(0, 8))
            kind = draw(st.sampled_from(["u16", "u32", "u64"]))
            size = {"u16": 1, "u32": 2, "u64": 4}[kind]
            if size > limit or cursor + size - 1 > end or not draw(st.booleans()):
                break
            name = f"t{len(tags)}"
            tags[name] = Tag(name, cursor, kind)
            cursor += size
        address = end + 1 + draw(st.integers(0, 3))
    profile = Profile(
        device=DeviceIdentity("x", "x", "x"),
        connection=ConnectionDefaults(max_registers_per_read=limit, max_gap=max_gap),
        tags=tags,
        watchdog=WatchdogSpec("h", "constant", 1, 1, 2, "h", 0),
        dispatch=DispatchSpec("m", 0, 1, 2, "c", "d", LeaseSpec("p", "min", 1, 20)),
        safety=SafetyFeeds("s", ("t",)),
        blocks=tuple(blocks),
    )
    return profile


@settings(max_examples=300, deadline=None)
@given(small_profiles())
def test_planner_reaches_the_brute_force_minimum(profile):
    names = list(profile.tags)
    if not names:
        assert plan(profile) == []
        return
    requests = plan(profile)
    _covers_exactly(profile, requests, names)
    for r in requests:
        members = sorted((profile.tags[n] for n in r.tags), key=lambda t: t.address)
        for a, b in itertools.pairwise(members):
            assert b.address - a.end <= profile.connection.max_gap
    assert len(requests) == _optimum(profile, names)
