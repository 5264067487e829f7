"""A simulated SunSpec device: the battery model behind a SunSpec map (``bessai-sim --sunspec``).

The job: lay out the requested models (e.g. ``1,103,124,802``) from pysunspec2's definitions
after the ``SunS`` marker, end them with the end marker, and serve them from the same simulated
inverter as the Huawei map. The register map is the profile that
:func:`bessai.sunspec.generate.generate` makes for that chain — the generator discovery uses —
turned into a serving profile: the header registers (marker, each model's ``ID`` and ``L``, the
end marker) become constant tags, and every scale-factored point is encoded with a fixed scale
factor (``SIM_SCALE_FACTORS``) that its ``*_SF`` register reports.

Invariants:

* Model 124 is the control: ``StorCtl_Mod`` bit 0 charges at ``InWRte``, bit 1 discharges at
  ``OutWRte`` (percent of ``WChaMax``), and ``InOutWRte_RvrtTms`` is honoured — forcing ends by
  itself when the revert timer runs out after the last write of the mode or the timer.
* 802 ``CtrlHb`` is the controller heartbeat: without a write for the profile's
  ``device_timeout_s`` the device drops forcing (comm loss).
* A point the simulation has no value for reads as its "not implemented" sentinel.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from bessai.device.profile import Profile, parse_profile
from bessai.sim.model import SiteParams
from bessai.sim.simulator import Simulator
from bessai.sunspec.generate import DispatchScale, ModelInstance, generate
from bessai.sunspec.models import COMMON_MODEL_ID, END_MODEL_ID, MARKER, model_def

DEFAULT_BASE = 40000
# exponents the simulated device reports in its *_SF registers (by SF point name, lower case)
SIM_SCALE_FACTORS = {"hz_sf": -2, "soc_sf": -1, "chastate_sf": -1, "tmp_sf": -1,
                     "modtmp_sf": -1, "v_sf": -1, "a_sf": -2, "pf_sf": -2, "inoutwrte_sf": -1}
# SunSpec 10x operating states (model 103 St): MPPT when running, FAULT on a device fault
ST_MPPT = 4
ST_FAULT = 7


def parse_models(text: str) -> tuple[int, ...]:
    """``1,103,124,802`` -> model ids (each known to pysunspec2, none repeated)."""
    try:
        ids = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--sunspec {text!r}: give model ids separated by commas, e.g. "
                         "1,103,124,802") from None
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"--sunspec {text!r}: give each model once, e.g. 1,103,124,802")
    for mid in ids:
        model_def(mid)  # raises UnknownModel
    return ids


def layout(model_ids: Sequence[int], base: int = DEFAULT_BASE) -> tuple[list[ModelInstance], int]:
    """The chain's models at their addresses, and the end marker's address."""
    chain = []
    address = base + 2
    for mid in model_ids:
        length = model_def(mid).fixed_length - 2
        chain.append(ModelInstance(mid, address, length))
        address += 2 + length
    return chain, address


def serving_profile(model_ids: Sequence[int], *, base: int = DEFAULT_BASE,
                    params: SiteParams | None = None, unit_id: int = 1
                    ) -> tuple[Profile, dict[str, float | int | str]]:
    """The profile the simulator serves, and the constant values of its header and SF tags."""
    params = params or SiteParams()
    chain, end_marker = layout(model_ids, base)
    scale = DispatchScale(wchamax_w=params.max_charge_power_w,
                          inoutwrte_sf=SIM_SCALE_FACTORS["inoutwrte_sf"])
    doc, _ = generate(chain, base=base, end=end_marker + 1, unit_id=unit_id,
                      manufacturer="BESSAI", model="simulated SunSpec device", dispatch=scale)
    tags: dict[str, Any] = doc["tags"]
    constants: dict[str, float | int | str] = {}
    for name in tags:
        if name.endswith("_sf"):  # every *_SF register reports its exponent
            constants[name] = SIM_SCALE_FACTORS.get(name.split("_", 1)[1], 0)
    for tag in tags.values():
        sf_tag = tag.pop("scale_factor", None)
        if sf_tag is not None:
            exponent = SIM_SCALE_FACTORS.get(sf_tag.split("_", 1)[1], 0)
            tag["gain"] = 10.0 ** -exponent
    tags["sunspec_marker"] = {"address": base, "type": "u32", "access": "r"}
    constants["sunspec_marker"] = MARKER
    for inst in chain:
        tags[f"{inst.model_id}_id"] = {"address": inst.address, "type": "u16", "access": "r"}
        tags[f"{inst.model_id}_l"] = {"address": inst.address + 1, "type": "u16", "access": "r"}
        constants[f"{inst.model_id}_id"] = inst.model_id
        constants[f"{inst.model_id}_l"] = inst.length
    tags["end_id"] = {"address": end_marker, "type": "u16", "access": "r"}
    tags["end_l"] = {"address": end_marker + 1, "type": "u16", "access": "r"}
    constants.update(end_id=END_MODEL_ID, end_l=0)
    # the dispatch tags (124's mode, rates and revert timer) start at rest as the profile's
    # dispatch section says (bessai.sim.inverter.default_settings), not here
    identity: dict[str, float | int | str] = {
        "1_mn": "BESSAI", "1_md": "simulated SunSpec device", "1_sn": "SIM0001", "1_vr": "1.0",
        "124_wchamax": params.max_charge_power_w, "802_whrtg": params.rated_capacity_wh,
        "802_wchartemax": params.max_charge_power_w,
        "802_wdischartemax": params.max_discharge_power_w,
    }
    for name, value in identity.items():
        if name in tags:
            constants[name] = value
    if COMMON_MODEL_ID not in model_ids:
        raise ValueError("--sunspec needs the common model 1 first, e.g. 1,103,124,802")
    profile = parse_profile(json.dumps(doc), file=f"<sunspec {','.join(map(str, model_ids))}>")
    return profile, constants


def _aliases(has: set[str]) -> Callable[[dict[str, float | int | str | None]], None]:
    """The SunSpec names of the simulation's values."""

    def derive(out: dict[str, float | int | str | None]) -> None:
        if "124_chastate" in has:
            out["124_chastate"] = out.get("soc")
        if "802_soc" in has:
            out["802_soc"] = out.get("soc")
        out["device_status"] = ST_FAULT if out.get("device_status") == 0x0300 else ST_MPPT
        if "802_w" in has:
            out["802_w"] = out.get("battery_power")
    return derive


def configure(sim: Simulator, constants: dict[str, float | int | str]) -> Simulator:
    """Put the map's constants and aliases on a simulator built from `serving_profile`."""
    for one in sim.each_unit():
        one.inverter.settings.update(constants)
        one.inverter.derive = _aliases(set(sim.profile.tags))
    return sim


def sunspec_simulator(model_ids: Sequence[int], *, base: int = DEFAULT_BASE,
                      **kwargs: Any) -> Simulator:
    """A Simulator serving ``model_ids`` as a SunSpec map (``kwargs`` go to Simulator)."""
    params = kwargs.get("params") or SiteParams()
    profile, constants = serving_profile(model_ids, base=base, params=params,
                                         unit_id=kwargs.get("unit_id") or 1)
    return configure(Simulator(profile, **kwargs), constants)
