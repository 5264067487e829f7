"""An independent SunSpec register image, built with pysunspec2's own model classes.

The gateway's discovery and profile generator are checked against registers that pysunspec2
encodes (``sunspec2.device.Model(...).get_mb()``: its sizes, its byte order, its "not
implemented" fill for every point left unset), and the expected engineering values are
pysunspec2's own ``cvalue`` (raw value with its scale factor applied) — nothing here re-uses
the gateway's codec.

:func:`build` returns the words to serve at the base address (for ``tests.peers.pymodbus_server``)
and the pysunspec2 models, to read the expected values from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sunspec2.device import Model, get_model_def
from sunspec2.mb import point_type_info

MARKER_WORDS = [0x5375, 0x6E53]  # "SunS"

# Device data for the models the tests serve (raw register values, as a device holds them).
DEVICE_DATA: dict[int, dict[str, Any]] = {
    1: {"Mn": "Acme Storage", "Md": "AS-5000", "SN": "SN12345", "Vr": "1.2.3", "DA": 1},
    103: {"A": 2170, "AphA": 723, "AphB": 724, "AphC": 723, "A_SF": -2, "PhVphA": 2301,
          "PhVphB": 2299, "PhVphC": 2302, "V_SF": -1, "W": 4987, "W_SF": 0, "Hz": 5002,
          "Hz_SF": -2, "WH": 123456, "WH_SF": 0, "TmpCab": 412, "Tmp_SF": -1, "St": 4,
          "Evt1": 0, "Evt2": 0},
    124: {"WChaMax": 500, "WChaMax_SF": 1, "WChaGra": 100, "WDisChaGra": 100,
          "WChaDisChaGra_SF": 0, "StorCtl_Mod": 0, "ChaState": 612, "ChaState_SF": -1,
          "InWRte": 0, "OutWRte": 0, "InOutWRte_SF": -1, "InOutWRte_RvrtTms": 0,
          "InOutWRte_WinTms": 0, "InOutWRte_RmpTms": 0, "ChaGriSet": 1},
    802: {"AHRtg": 100, "AHRtg_SF": 0, "WHRtg": 1000, "WHRtg_SF": 1, "WChaRteMax": 500,
          "WDisChaRteMax": 500, "WChaDisChaMax_SF": 1, "SoC": 617, "SoC_SF": -1,
          "LocRemCtl": 1, "Typ": 4, "State": 3, "Evt1": 0, "Evt2": 0, "EvtVnd1": 0,
          "EvtVnd2": 0, "V": 4801, "V_SF": -1, "CellV_SF": -3, "A": -253, "A_SF": -1,
          "AMax_SF": 0, "W": -1215, "W_SF": 0, "SetOp": 1, "SetInvState": 1},
    803: {"NStr": 1, "NStrCon": 1, "ModTmpMax": 312, "ModTmp_SF": -1, "CellV_SF": -3,
          "A_SF": 0, "SoH_SF": 0, "SoC_SF": 0, "V_SF": 0},
}


def model_length(model_id: int) -> int:
    """L of a model without repeating groups (the fixed points after ID and L)."""
    gdef = get_model_def(model_id)["group"]
    size = sum(int(p.get("size") or point_type_info[p["type"]].len) for p in gdef["points"])
    return size - 2


def make_model(model_id: int, data: Mapping[str, Any] | None = None) -> Model:
    length = model_length(model_id)
    values = {"ID": model_id, "L": length, **(DEVICE_DATA.get(model_id, {}) if data is None
                                              else data)}
    return Model(model_id=model_id, model_len=length, data=values)


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def build(model_ids: Sequence[int], *, overrides: Mapping[int, Mapping[str, Any]] | None = None,
          unknown: Sequence[tuple[int, int]] = (), end_marker: bool = True
          ) -> tuple[list[int], dict[int, Model]]:
    """Words from the base address on, and the models by id.

    ``unknown``: (model id, length) of vendor models (zero-filled) appended after the known
    ones; ``end_marker=False`` leaves the chain without its 0xFFFF end (a truncated chain).
    """
    words = list(MARKER_WORDS)
    models: dict[int, Model] = {}
    for mid in model_ids:
        data = dict(DEVICE_DATA.get(mid, {}))
        data.update((overrides or {}).get(mid, {}))
        model = make_model(mid, data)
        models[mid] = model
        words += _words(model.get_mb())
    for mid, length in unknown:
        words += [mid, length] + [0] * length
    if end_marker:
        words += [0xFFFF, 0]
    return words, models
