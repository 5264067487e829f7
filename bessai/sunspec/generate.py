"""A discovered SunSpec model chain -> a device profile in the project's format.

The job: name every fixed point of every known model, carry its scale factor, its
"not implemented" sentinel and its enum labels, and fill the watchdog, dispatch and safety
sections from the models present. The result is a plain JSON document; callers check it with
:func:`bessai.device.profile.parse_profile` (schema and semantic checks) before writing it.

Names (docs/sunspec.md keeps the table): core tags where a model has them — ``soc`` (802
``SoC``, else 124 ``ChaState``), ``active_power`` (701 ``W``, else 10x ``W``),
``grid_frequency`` (701 ``Hz``, else 10x ``Hz``), ``battery_power`` (802 ``W``, + = charging),
``battery_temp`` (803/804 ``ModTmpMax``, else 805 ``CellTmpMax``), ``inverter_temp`` (10x
``TmpCab``, else 701), ``device_status`` (10x ``St``, else 701); every other point
``<model id>_<point name>`` in lower case (``103_phvpha``), and ``<model id>_<n>_<point>`` for
the n-th repeat of a model.

Invariants:

* Only the dispatch tags of model 124 are writable (with limits); every other point is
  read-only whatever its SunSpec access, so nothing else on the device can be written.
* A point with a ``*_SF`` scale factor names that factor's tag in ``scale_factor`` (read in the
  same poll, invalid when the factor is); a constant exponent becomes a ``gain``.
* Model 124's rates (``InWRte``/``OutWRte``, percent of ``WChaMax``) are written in watts: their
  ``gain`` folds ``100 / (WChaMax * 10^InOutWRte_SF)`` read at discovery, so the dispatcher's
  watts land as the right percentage. A device whose ``WChaMax`` or ``InOutWRte_SF`` changes
  needs a new discovery (the runbook says so).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import attrs

from bessai.sunspec.models import ModelDef, PointDef, UnknownModel, model_def

INVERTER_MODELS = (101, 102, 103, 111, 112, 113)
DER_MODEL = 701
STORAGE_MODEL = 124
BATTERY_MODEL = 802
LEASE_PERIOD_S = 30
LEASE_RENEW_S = 10.0
LEASE_MAX_S = 3600
HEARTBEAT_INTERVAL_S = 10.0
DEVICE_TIMEOUT_S = 60.0


class GenerateError(ValueError):
    """The chain cannot make a usable profile (e.g. no model reports a state of charge)."""


@attrs.frozen
class ModelInstance:
    """One model found on the device: ``address`` is its ``ID`` register; ``length`` its L."""

    model_id: int
    address: int
    length: int

    @property
    def end(self) -> int:
        """One past the model's last register."""
        return self.address + 2 + self.length


@attrs.frozen
class DispatchScale:
    """Readings of model 124 at discovery that turn watts into its percentage rates."""

    wchamax_w: float
    inoutwrte_sf: int


# (model ids in order of preference, point) for each core tag
_CORE: dict[str, tuple[tuple[tuple[int, ...], str], ...]] = {
    "soc": (((BATTERY_MODEL,), "SoC"), ((STORAGE_MODEL,), "ChaState")),
    "active_power": (((DER_MODEL,), "W"), (INVERTER_MODELS, "W")),
    "grid_frequency": (((DER_MODEL,), "Hz"), (INVERTER_MODELS, "Hz")),
    "battery_power": (((BATTERY_MODEL,), "W"),),
    "battery_temp": (((803, 804), "ModTmpMax"), ((805,), "CellTmpMax")),
    "inverter_temp": ((INVERTER_MODELS, "TmpCab"), ((DER_MODEL,), "TmpCab")),
    "device_status": ((INVERTER_MODELS, "St"), ((DER_MODEL,), "St")),
}
FAST_TAGS = frozenset(_CORE)


def core_names(chain: Sequence[ModelInstance]) -> dict[tuple[int, str], str]:
    """(model id, point) -> core tag name, for the first instance of each model present."""
    present = {m.model_id: model_def(m.model_id) for m in chain if _known(m.model_id)}
    out: dict[tuple[int, str], str] = {}
    for core, choices in _CORE.items():
        for model_ids, point in choices:
            found = next((mid for mid in model_ids
                          if mid in present and present[mid].point(point) is not None), None)
            if found is not None:
                out[(found, point)] = core
                break
    return out


def _known(model_id: int) -> bool:
    try:
        model_def(model_id)
    except UnknownModel:
        return False
    return True


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _tag_name(mid: int, repeat: int, point: str) -> str:
    prefix = f"{mid}_" if repeat == 1 else f"{mid}_{repeat}_"
    return prefix + _slug(point)


def _point_tag(p: PointDef, address: int, sf_tag: str | None, fast: bool) -> dict[str, Any]:
    assert p.type is not None
    tag: dict[str, Any] = {"address": address, "type": p.type.value, "access": "r",
                           "poll": "fast" if fast else "slow"}
    if p.type.value in ("string", "bitfield"):
        tag["length"] = p.size
    if p.unimpl is not None:
        tag["invalid"] = [f"0x{p.unimpl:0{4 * p.size}X}"]
    if isinstance(p.sf, int) and p.sf:
        tag["gain"] = 10.0 ** -p.sf
    elif sf_tag is not None:
        tag["scale_factor"] = sf_tag
    if p.units:
        tag["unit"] = p.units
    if p.symbols and p.type.value in ("u16", "u32"):
        tag["enum"] = {str(v): name for v, name in p.symbols}
    tag["description"] = " ".join(x for x in (p.label, f"(SunSpec {p.name})") if x)
    return tag


def generate(chain: Sequence[ModelInstance], *, base: int, end: int, port: int = 502,
             unit_id: int = 1, manufacturer: str = "", model: str = "",
             dispatch: DispatchScale | None = None) -> tuple[dict[str, Any], list[int]]:
    """The profile document and the unknown model ids that were skipped.

    ``end`` is the last register of the map (the end marker's L, or the last register of the
    last model that answered when the chain was cut short)."""
    core = core_names(chain)
    tags: dict[str, dict[str, Any]] = {}
    names: dict[tuple[int, int, str], str] = {}  # (model id, repeat, point) -> tag name
    unknown: list[int] = []
    repeats: dict[int, int] = {}
    for inst in chain:
        try:
            mdef = model_def(inst.model_id)
        except UnknownModel:
            unknown.append(inst.model_id)
            continue
        repeat = repeats[inst.model_id] = repeats.get(inst.model_id, 0) + 1
        for p in _mapped_points(mdef, inst):
            name = core.get((inst.model_id, p.name)) if repeat == 1 else None
            names[(inst.model_id, repeat, p.name)] = name or _tag_name(inst.model_id, repeat,
                                                                      p.name)
        for p in _mapped_points(mdef, inst):
            name = names[(inst.model_id, repeat, p.name)]
            sf_tag = (names.get((inst.model_id, repeat, p.sf)) if isinstance(p.sf, str)
                      else None)
            tags[name] = _point_tag(p, inst.address + p.offset, sf_tag, name in FAST_TAGS)
    if "soc" not in tags:
        raise GenerateError("no model on this device reports a state of charge (802 SoC or "
                            "124 ChaState): the safety guard needs one; is this a battery "
                            "inverter?")
    temperature = "battery_temp" if "battery_temp" in tags else "inverter_temp"
    if temperature not in tags:
        raise GenerateError("no model on this device reports a battery or cabinet temperature "
                            "(803/804/805 or 10x/701 TmpCab): the safety guard needs one")
    controls = _controls(tags, chain, dispatch)
    read_only = isinstance(controls, str)
    ident = _slug(f"sunspec {manufacturer} {model}")[:60] or "sunspec"
    doc: dict[str, Any] = {
        "$schema": "profile.schema.json",
        "schema_version": 1,
        "description": "Generated by `bessai profile discover` from the SunSpec models "
                       f"{', '.join(str(m.model_id) for m in chain)} at base {base} "
                       "(definitions: pysunspec2). Regenerate rather than edit.",
        "device": {"id": ident, "manufacturer": manufacturer or "unknown",
                   "model": model or "SunSpec device",
                   "notes": "; ".join(
                       [f"skipped unknown models: {unknown}" if unknown
                        else "every model in the chain is mapped"]
                       + ([f"read-only: {controls}"] if read_only else []))},
        "connection": {"port": port, "unit_id": unit_id, "timeout_s": 5,
                       "post_connect_delay_s": 0, "max_registers_per_read": 100,
                       "max_gap": 32, "cooldown_s": 0, "word_order": "big"},
        "blocks": [{"name": "sunspec", "table": "holding", "start": base, "end": end}],
        "tags": tags,
        "safety": {"soc_tag": "soc", "temperature_tags": [temperature]},
    }
    if not isinstance(controls, str):
        doc["dispatch"], doc["watchdog"] = controls
    return doc, unknown


def read_only_reason(doc: dict[str, Any]) -> str | None:
    """Why a generated profile has no dispatch section (None: it can be dispatched)."""
    if "dispatch" in doc:
        return None
    notes = str(doc.get("device", {}).get("notes", ""))
    return notes.split("read-only: ", 1)[1] if "read-only: " in notes else "no dispatch"


def _mapped_points(mdef: ModelDef, inst: ModelInstance) -> list[PointDef]:
    """Fixed points with a register type, inside the model's advertised length."""
    return [p for p in mdef.points
            if p.type is not None and p.name not in ("ID", "L")
            and inst.address + p.offset + p.size <= inst.end]


def _controls(tags: dict[str, dict[str, Any]], chain: Sequence[ModelInstance],
              scale: DispatchScale | None) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """Dispatch through model 124 and the watchdog feeding 802's controller heartbeat, or why
    the device is read-only (then no tag is writable and nothing is ever written)."""
    has_124 = any(m.model_id == STORAGE_MODEL for m in chain)
    needed = ("124_storctl_mod", "124_inwrte", "124_outwrte", "124_inoutwrte_rvrttms")
    if not has_124 or scale is None or any(n not in tags for n in needed):
        return ("no writable storage model (124 with StorCtl_Mod, InWRte, OutWRte, "
                "InOutWRte_RvrtTms and a readable WChaMax)")
    if scale.wchamax_w <= 0 or not -10 <= scale.inoutwrte_sf <= 10:
        return (f"model 124 reports WChaMax={scale.wchamax_w:g} W and "
                f"InOutWRte_SF={scale.inoutwrte_sf}: watts cannot be turned into its rates")
    gain = 100.0 / (scale.wchamax_w * 10.0 ** scale.inoutwrte_sf)
    # the rates are int16: at a fine InOutWRte_SF, 100 % may not fit; never allow a write
    # whose raw value would not
    max_w = min(float(scale.wchamax_w), math.floor(0x7FFF / gain))
    for name in ("124_inwrte", "124_outwrte"):
        t = tags[name]
        t.pop("scale_factor", None)
        t.update(access="rw", unit="W", gain=gain, min=0, max=max_w, poll="slow",
                 description=t["description"] + f"; written in W (percent of WChaMax "
                 f"{max_w:g} W at discovery)")
    tags["124_storctl_mod"].update(access="rw", min=0, max=3, poll="fast")
    tags["124_inoutwrte_rvrttms"].update(access="rw", min=0, max=LEASE_MAX_S, unit="s")
    if "802_ctrlhb" in tags:
        tags["802_ctrlhb"].update(access="rw", min=0, max=65535)
        heartbeat = {"tag": "802_ctrlhb", "mode": "counter", "value": 0, "modulo": 65536}
        hb_note = "heartbeat: 802 CtrlHb, a counter (the controller heartbeat SunSpec defines)"
    else:
        heartbeat = {"tag": "124_inoutwrte_rvrttms", "mode": "constant",
                     "value": LEASE_PERIOD_S}
        hb_note = ("no 802 CtrlHb: the heartbeat rewrites the revert timer (harmless when not "
                   "forcing)")
    dispatch = {
        "mode_tag": "124_storctl_mod",
        "modes": {"stop": 0, "charge": 1, "discharge": 2},
        "charge_power_tag": "124_inwrte",
        "discharge_power_tag": "124_outwrte",
        "lease": {"tag": "124_inoutwrte_rvrttms", "unit": "s", "period": LEASE_PERIOD_S,
                  "renew_interval_s": LEASE_RENEW_S},
        "preset": [],
        "auto": [{"tag": "124_storctl_mod", "value": 0}],
        "notes": "SunSpec 124: StorCtl_Mod bit 0 charge, bit 1 discharge; InWRte/OutWRte in W "
                 "(see their gain); InOutWRte_RvrtTms is the device-side lease.",
    }
    watchdog = {
        "heartbeat": heartbeat,
        "interval_s": HEARTBEAT_INTERVAL_S,
        "device_timeout_s": DEVICE_TIMEOUT_S,
        "comm_loss": {"tag": "124_storctl_mod", "value": 0},
        "notes": hb_note + "; SunSpec has no comm-loss status: a device that lost its "
                 "controller leaves forcing (StorCtl_Mod reads 0).",
    }
    return dispatch, watchdog
