"""Safety rules and their hysteresis, as pure logic: snapshot in, safety state out.

The job: decide, from the latest snapshot and the previous decision, which directions of battery
power are blocked and why. Nothing here does I/O, reads a clock or keeps hidden state, so every
promise below is tested without a device, a loop or a clock.

Invariants:

* **Missing, invalid or stale data is unsafe.** No snapshot, a snapshot older than
  ``stale_after_s``, or a safety tag that is absent, invalid or physically implausible blocks
  *both* directions. It is never skipped.
* **SOC low blocks discharge, SOC high blocks charge, over-temperature blocks both.** A rule trips
  when the reading crosses the limit (``soc < soc_min_pct``, ``soc > soc_max_pct``,
  ``temp > temp_max_c``; the runbook's wording) and clears only once the reading is back past the
  limit by the hysteresis (``soc >= soc_min_pct + soc_hysteresis_pct`` ...), in the style of
  OpenEMS's ``LimitUsableCapacity``. A value oscillating inside the band never chatters.
* **Data rules clear with a time hysteresis**: stale or invalid data clears only after the
  data has been fresh and valid for ``data_hold_s`` (a slow device must not chatter).
* **A rule's memory survives a data gap.** While the SOC is unreadable, ``soc_min`` stays as it
  was; when a valid reading returns inside the hysteresis band, the rule is still active.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs

from bessai.model import Snapshot
from bessai.settings import setting_default, soc_band_problem

# Rule names, as they appear in SAFETY_BLOCK lines, events and the blocks{rule} metric.
SOC_MIN = "soc_min"
SOC_MAX = "soc_max"
TEMP_MAX = "temp_max"
NO_DATA = "no_data"
STALE_DATA = "stale_data"
INVALID_DATA = "invalid_data"

# Physically plausible ranges: a reading outside them is a broken sensor or a decoding fault,
# and is treated as invalid (unsafe), not as a very low or very high value.
_SOC_RANGE = (0.0, 100.0)
_TEMP_RANGE_C = (-50.0, 150.0)


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name}={value!r} must be a positive number")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name}={value!r} must be zero or a positive number")


@attrs.frozen
class Limits:
    """A site's safety limits. Defaults are the runbook's, stated once on `bessai.settings.Settings`
    (SOC_MIN_PCT ...); every field can be overridden per site.

    ``stale_after_s`` is how old the last snapshot may be before the data counts as stale; the
    site supervisor sets it to a few poll periods (``stale_after(poll_interval_s, polls)``).
    ``data_clear_hold_s`` (default: ``stale_after_s``) is the data rules' hysteresis: stale or
    invalid data clears only once the data has been good that long.
    """

    soc_min_pct: float = attrs.field(default=setting_default("soc_min_pct"),
                                     validator=_non_negative)
    soc_max_pct: float = attrs.field(default=setting_default("soc_max_pct"), validator=_positive)
    temp_max_c: float = attrs.field(default=setting_default("temp_max_c"))
    soc_hysteresis_pct: float = attrs.field(default=setting_default("soc_hysteresis_pct"),
                                            validator=_non_negative)
    temp_hysteresis_c: float = attrs.field(default=setting_default("temp_hysteresis_c"),
                                           validator=_non_negative)
    stale_after_s: float = attrs.field(default=3.0, validator=_positive)
    data_clear_hold_s: float | None = None
    soc_tag: str = "soc"
    temp_tags: tuple[str, ...] = attrs.field(default=("battery_temp",), converter=tuple)

    @property
    def data_hold_s(self) -> float:
        """How long data must stay fresh and valid before a data rule clears (default: as long
        as it takes to go stale) — the data rules' hysteresis."""
        return self.stale_after_s if self.data_clear_hold_s is None else self.data_clear_hold_s

    def __attrs_post_init__(self) -> None:
        if soc_band_problem(self.soc_min_pct, self.soc_max_pct, self.soc_hysteresis_pct):
            raise ValueError(
                f"SOC limits overlap: soc_min_pct={self.soc_min_pct} + hysteresis "
                f"{self.soc_hysteresis_pct} must stay below soc_max_pct={self.soc_max_pct} - "
                f"hysteresis — lower the minimum, raise the maximum or shrink the hysteresis")
        if not self.temp_tags:
            raise ValueError("temp_tags is empty — name at least one battery temperature tag, "
                             "e.g. ('battery_temp',)")


def stale_after(poll_interval_s: float, polls: int = 3) -> float:
    """The staleness threshold for a poll rate: ``polls`` missed polls make the data stale."""
    return poll_interval_s * polls


@attrs.frozen
class RuleHit:
    """One active rule: what it blocks, the reading that tripped (or holds) it, and its limit.

    ``value`` is the latest reading the rule saw (None when there is none: missing data);
    ``tag`` names the reading; ``reason`` explains data rules in words.
    """

    rule: str
    value: float | None
    limit: float | None
    blocks_charge: bool
    blocks_discharge: bool
    tag: str | None = None
    reason: str | None = None
    ok_since: float | None = None  # data rules: when the data became good again (clearing)


def _hits(active: Mapping[str, RuleHit]) -> dict[str, RuleHit]:
    return dict(active)


@attrs.frozen
class SafetyState:
    """The guard's decision: blocked directions and the rules behind them.

    ``active`` is keyed by rule name (one entry per rule; data rules carry the first offending
    tag). ``UNKNOWN`` — nothing read yet — blocks everything.
    """

    active: Mapping[str, RuleHit] = attrs.field(factory=dict, converter=_hits)

    @property
    def blocked_charge(self) -> bool:
        return any(hit.blocks_charge for hit in self.active.values())

    @property
    def blocked_discharge(self) -> bool:
        return any(hit.blocks_discharge for hit in self.active.values())

    @property
    def ok(self) -> bool:
        return not self.active

    def rules(self) -> tuple[str, ...]:
        return tuple(sorted(self.active))

    def reasons(self, *, charge: bool | None = None) -> str:
        """A one-line reason naming the rules that block ``charge`` (True), discharge (False)
        or anything (None), e.g. ``soc_min (soc=4.2 < 5.0)``."""
        hits = [h for h in self.active.values()
                if charge is None or (h.blocks_charge if charge else h.blocks_discharge)]
        return ", ".join(describe(h) for h in sorted(hits, key=lambda h: h.rule))


UNKNOWN = SafetyState({NO_DATA: RuleHit(NO_DATA, None, None, True, True,
                                        reason="no snapshot read yet")})


def describe(hit: RuleHit) -> str:
    """Human words for one hit, for reasons and log lines."""
    if hit.rule == SOC_MIN:
        return f"{SOC_MIN} ({hit.tag}={hit.value} < {hit.limit})"
    if hit.rule in (SOC_MAX, TEMP_MAX):
        return f"{hit.rule} ({hit.tag}={hit.value} > {hit.limit})"
    return f"{hit.rule} ({hit.reason})"


def _number(snapshot: Snapshot, tag: str, lo: float, hi: float) -> tuple[float | None, str | None]:
    """The tag's numeric value, or None and the reason it cannot be trusted."""
    reading = snapshot.readings.get(tag)
    if reading is None:
        return None, f"{tag} missing from the snapshot"
    if not reading.valid:
        return None, f"{tag} invalid: {reading.reason or 'device sentinel'}"
    value = reading.value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{tag} is not a number: {value!r}"
    if not lo <= value <= hi:
        return None, f"{tag}={value} outside the plausible range {lo}..{hi}"
    return float(value), None


def _hysteresis_high(rule: str, tag: str, value: float | None, limit: float, hysteresis: float,
                     was_active: RuleHit | None, blocks: tuple[bool, bool]) -> RuleHit | None:
    """A rule that trips above ``limit`` and clears at or below ``limit - hysteresis``.

    With no value (data gap), the rule keeps its previous state.
    """
    if value is None:
        return was_active
    if value > limit or (was_active is not None and value > limit - hysteresis):
        return RuleHit(rule, value, limit, blocks[0], blocks[1], tag=tag)
    return None


def _hysteresis_low(rule: str, tag: str, value: float | None, limit: float, hysteresis: float,
                    was_active: RuleHit | None, blocks: tuple[bool, bool]) -> RuleHit | None:
    """A rule that trips below ``limit`` and clears at or above ``limit + hysteresis``."""
    if value is None:
        return was_active
    if value < limit or (was_active is not None and value < limit + hysteresis):
        return RuleHit(rule, value, limit, blocks[0], blocks[1], tag=tag)
    return None


def evaluate(snapshot: Snapshot | None, now: float, state: SafetyState = UNKNOWN,
             limits: Limits = Limits()) -> SafetyState:
    """The safety state after seeing ``snapshot`` at Trio time ``now``, given the previous state.

    Call it on every new snapshot *and* on a timer: with no new snapshot, time alone makes the
    data stale.
    """
    active: dict[str, RuleHit] = {}
    if snapshot is None:
        return UNKNOWN
    age = now - snapshot.taken_at
    if age > limits.stale_after_s:
        active[STALE_DATA] = RuleHit(
            STALE_DATA, round(age, 3), limits.stale_after_s, True, True,
            reason=f"last snapshot is {age:.1f} s old (limit {limits.stale_after_s:g} s)")

    soc, soc_problem = _number(snapshot, limits.soc_tag, *_SOC_RANGE)
    temps: list[tuple[str, float]] = []
    problems: list[tuple[str, str]] = []
    if soc_problem:
        problems.append((limits.soc_tag, soc_problem))
    for tag in limits.temp_tags:
        temp, problem = _number(snapshot, tag, *_TEMP_RANGE_C)
        if temp is None:
            problems.append((tag, problem or f"{tag} unreadable"))
        else:
            temps.append((tag, temp))
    if problems:
        tag, reason = problems[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        active[INVALID_DATA] = RuleHit(INVALID_DATA, None, None, True, True, tag=tag,
                                       reason=reason + more)

    prev = state.active
    for rule in (STALE_DATA, INVALID_DATA):
        held = _hold_data_rule(prev.get(rule), now, limits.data_hold_s)
        if rule not in active and held is not None:
            active[rule] = held
    for hit in (
        _hysteresis_low(SOC_MIN, limits.soc_tag, soc, limits.soc_min_pct,
                        limits.soc_hysteresis_pct, prev.get(SOC_MIN), (False, True)),
        _hysteresis_high(SOC_MAX, limits.soc_tag, soc, limits.soc_max_pct,
                         limits.soc_hysteresis_pct, prev.get(SOC_MAX), (True, False)),
        _temp_rule(temps, len(temps) < len(limits.temp_tags), limits, prev.get(TEMP_MAX)),
    ):
        if hit is not None:
            active[hit.rule] = hit
    return SafetyState(active)


def _hold_data_rule(was: RuleHit | None, now: float, hold_s: float) -> RuleHit | None:
    """A data rule whose condition just went away stays active until the data has been good
    for ``hold_s``: a device whose polls take longer than the staleness limit would otherwise
    block and clear on every poll."""
    if was is None:
        return None
    ok_since = was.ok_since if was.ok_since is not None else now
    if now - ok_since > hold_s or hold_s == 0:
        return None
    return attrs.evolve(was, ok_since=ok_since)


def _temp_rule(temps: list[tuple[str, float]], some_unreadable: bool, limits: Limits,
               was_active: RuleHit | None) -> RuleHit | None:
    """Over-temperature on the hottest readable sensor; holds its state if a sensor is unreadable
    and the readable ones would clear it (the unreadable one might be the hot one)."""
    if not temps:
        return was_active
    tag, hottest = max(temps, key=lambda t: t[1])
    hit = _hysteresis_high(TEMP_MAX, tag, hottest, limits.temp_max_c, limits.temp_hysteresis_c,
                           was_active, (True, True))
    if hit is None and some_unreadable:
        return was_active
    return hit


@attrs.frozen
class Transition:
    """What changed between two states: rules that newly block, and rules that cleared."""

    blocked: tuple[RuleHit, ...]
    cleared: tuple[RuleHit, ...]


def transitions(old: SafetyState, new: SafetyState) -> Transition:
    """Rules that became active (SAFETY_BLOCK) and rules that cleared (SAFETY_CLEAR)."""
    blocked = tuple(new.active[r] for r in sorted(new.active) if r not in old.active)
    cleared = tuple(old.active[r] for r in sorted(old.active) if r not in new.active)
    return Transition(blocked, cleared)


def limits_from(overrides: Mapping[str, object] | None = None, *,
                temp_tags: Iterable[str] | None = None, soc_tag: str | None = None,
                poll_interval_s: float | None = None, stale_polls: int = 3) -> Limits:
    """Build a site's Limits from settings overrides and the profile's safety tags.

    Unknown override keys are an error that names the accepted ones, so a typo in a site's
    configuration cannot silently fall back to a default.
    """
    fields = {f.name for f in attrs.fields(Limits)}
    kwargs: dict[str, object] = dict(overrides or {})
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"unknown safety limit(s) {unknown} — use any of {sorted(fields)}")
    if temp_tags is not None:
        kwargs.setdefault("temp_tags", tuple(temp_tags))
    if soc_tag is not None:
        kwargs.setdefault("soc_tag", soc_tag)
    if poll_interval_s is not None:
        kwargs.setdefault("stale_after_s", stale_after(poll_interval_s, stale_polls))
    # the keys were checked against Limits' fields above; their values Limits validates itself
    return Limits(**kwargs)  # type: ignore[arg-type]
