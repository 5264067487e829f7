"""Read planner: coalesce tags into the fewest read requests the profile's limits allow.

A request covers consecutive tags of one table inside one register block — one table is one
function code (holding 0x03, input 0x04, coil 0x01, discrete input 0x02), so a request never mixes
function codes. A tag with a ``scale_factor`` brings its scale-factor tag into the same plan.
Limits, from the profile's connection defaults:

- a request spans at most ``max_registers_per_read`` registers;
- between two neighbouring tags in a request at most ``max_gap`` unused registers are read.

Minimality: in address order, an optimal plan only ever groups *consecutive* tags (putting a
tag that lies inside a request's span into that request never breaks a limit), and the limits
are hereditary (any contiguous sub-run of a valid run is valid). So extending each request
greedily as far as the limits allow gives the fewest requests (the classic exchange argument);
``tests/unit/test_device_planner.py`` checks it against a brute-force DP on random profiles.

Requests never cross a block boundary, so the device is never asked for an address outside
the blocks it has (which would be exception 0x02).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from bessai.device.profile import Poll, Profile, Table, Tag


@attrs.frozen
class ReadRequest:
    """One read: ``count`` registers of ``table`` from ``address``, decoding ``tags``."""

    table: Table
    address: int
    count: int
    tags: tuple[str, ...]
    block: str = ""

    @property
    def end(self) -> int:
        """One past the last register read."""
        return self.address + self.count


def select_tags(profile: Profile, tags: Iterable[str] | None = None,
                poll: Poll | str | None = None) -> list[Tag]:
    """The readable tags to read: all of them, the named ones, or one poll class."""
    if tags is None:
        chosen = [t for t in profile.tags.values() if t.readable]
    else:
        chosen = []
        for name in tags:
            tag = profile.tag(name)
            if not tag.readable:
                raise ValueError(f"tag {name!r} is write-only (access {tag.access}); it cannot "
                                 "be read")
            chosen.append(tag)
    if poll is not None:
        poll = Poll(poll)
        chosen = [t for t in chosen if t.poll is poll]
    names = {t.name for t in chosen}
    for tag in list(chosen):  # a scaled value is read with its scale factor, whatever its poll
        if tag.scale_factor is not None and tag.scale_factor not in names:
            names.add(tag.scale_factor)
            chosen.append(profile.tag(tag.scale_factor))
    return chosen


def plan(profile: Profile, tags: Iterable[str] | None = None,
         poll: Poll | str | None = None) -> list[ReadRequest]:
    """The fewest read requests covering ``tags`` (default: every readable tag)."""
    limit = profile.connection.max_registers_per_read
    max_gap = profile.connection.max_gap
    groups: dict[tuple[Table, str], list[Tag]] = {}
    for tag in select_tags(profile, tags, poll):
        block = profile.block_of(tag)
        if block is None:  # load_profile refuses this; guard hand-built profiles
            raise ValueError(f"tag {tag.name!r} is outside every register block")
        if tag.count > limit:
            raise ValueError(f"tag {tag.name!r} spans {tag.count} registers, more than "
                             f"max_registers_per_read={limit}")
        groups.setdefault((tag.table, block.name), []).append(tag)

    requests: list[ReadRequest] = []
    for (table, block_name), members in groups.items():
        members = sorted(set(members), key=lambda t: t.address)
        run: list[Tag] = [members[0]]
        for tag in members[1:]:
            start, prev_end = run[0].address, max(t.end for t in run)
            if tag.end - start <= limit and tag.address - prev_end <= max_gap:
                run.append(tag)
            else:
                requests.append(_request(table, block_name, run))
                run = [tag]
        requests.append(_request(table, block_name, run))
    requests.sort(key=lambda r: (r.table.value, r.address))
    return requests


def _request(table: Table, block: str, run: list[Tag]) -> ReadRequest:
    start = run[0].address
    end = max(t.end for t in run)
    return ReadRequest(table=table, address=start, count=end - start,
                       tags=tuple(t.name for t in run), block=block)


def format_plan(requests: list[ReadRequest], profile: Profile | None = None) -> str:
    """A table an operator can read (what ``bessai profile plan PATH`` prints)."""
    lines = []
    if profile is not None:
        c = profile.connection
        lines.append(f"profile {profile.device.id} ({profile.device.manufacturer} "
                     f"{profile.device.model}): max_registers_per_read={c.max_registers_per_read}"
                     f" max_gap={c.max_gap}")
    width = max([8, *(len(r.table.value) for r in requests)])  # discrete_input is 14
    lines.append(f"{'#':>3}  {'table':<{width}} {'block':<18} {'start':>5}  {'end':>5}  "
                 f"{'regs':>4}  tags")
    for i, r in enumerate(requests, 1):
        lines.append(f"{i:>3}  {r.table.value:<{width}} {r.block:<18} {r.address:>5}  "
                     f"{r.end - 1:>5}  {r.count:>4}  {' '.join(r.tags)}")
    n_tags = sum(len(r.tags) for r in requests)
    n_regs = sum(r.count for r in requests)
    lines.append(f"{len(requests)} requests, {n_regs} registers, {n_tags} tags "
                 f"(one request per tag would be {n_tags})")
    return "\n".join(lines)
