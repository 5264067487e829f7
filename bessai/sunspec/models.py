"""SunSpec model definitions, as the SunSpec Alliance publishes them (pysunspec2's model JSON).

The job: turn one model id into the register layout the profile generator needs — each fixed
point's offset from the model's first register (its ``ID``), its size, its Modbus type in the
project's terms, its scale factor (the name of a ``*_SF`` point, or a constant exponent) and
its "not implemented" bit pattern. Nothing here is transcribed by hand: definitions, sizes and
sentinels all come from ``sunspec2`` (``sunspec2.device.get_model_def``,
``sunspec2.mb.point_type_info`` and ``sunspec2.mb.create_unimpl_value``).

Invariants:

* Offsets count every fixed point of the model's top-level group in order, pads included, so
  they match the device's registers exactly; repeating groups (MPPT modules, curve points,
  battery strings) come after the fixed points and are not mapped (``repeating`` names them).
* An unknown model id is :class:`UnknownModel`, never another exception.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
from sunspec2 import mb, mdef
from sunspec2.device import get_model_def

from bessai.device.profile import RegisterType

END_MODEL_ID = 0xFFFF
MARKER = 0x53756E53  # "SunS", the two registers at the base address
COMMON_MODEL_ID = 1

# SunSpec point type -> the project's register type (pad and addresses are not mapped).
_TYPES: dict[str, RegisterType] = {
    mdef.TYPE_INT16: RegisterType.I16,
    mdef.TYPE_UINT16: RegisterType.U16,
    mdef.TYPE_COUNT: RegisterType.U16,
    mdef.TYPE_ACC16: RegisterType.U16,
    mdef.TYPE_ENUM16: RegisterType.U16,
    mdef.TYPE_BITFIELD16: RegisterType.BITFIELD,
    mdef.TYPE_SUNSSF: RegisterType.I16,
    mdef.TYPE_INT32: RegisterType.I32,
    mdef.TYPE_UINT32: RegisterType.U32,
    mdef.TYPE_ACC32: RegisterType.U32,
    mdef.TYPE_ENUM32: RegisterType.U32,
    mdef.TYPE_BITFIELD32: RegisterType.BITFIELD,
    mdef.TYPE_IPADDR: RegisterType.U32,
    mdef.TYPE_INT64: RegisterType.I64,
    mdef.TYPE_UINT64: RegisterType.U64,
    mdef.TYPE_ACC64: RegisterType.U64,
    mdef.TYPE_FLOAT32: RegisterType.F32,
    mdef.TYPE_FLOAT64: RegisterType.F64,
    mdef.TYPE_STRING: RegisterType.STRING,
}


class UnknownModel(LookupError):
    """pysunspec2 has no definition for this model id (vendor or newer model)."""

    def __init__(self, model_id: int) -> None:
        super().__init__(f"no SunSpec definition for model {model_id}")
        self.model_id = model_id


@attrs.frozen
class PointDef:
    """One fixed point of a model. ``offset`` counts from the model's ``ID`` register."""

    name: str
    offset: int
    size: int
    sunspec_type: str
    type: RegisterType | None  # None: not mapped (pad, ipv6addr, eui48)
    sf: str | int | None
    units: str | None
    writable: bool
    unimpl: int | None  # the "not implemented" raw value (None: strings, floats)
    label: str = ""
    symbols: tuple[tuple[int, str], ...] = ()


@attrs.frozen
class ModelDef:
    id: int
    name: str
    fixed_length: int  # registers of ID + L + the fixed points
    points: tuple[PointDef, ...]
    repeating: tuple[str, ...]

    def point(self, name: str) -> PointDef | None:
        for p in self.points:
            if p.name == name:
                return p
        return None


def _unimpl(sunspec_type: str, size: int) -> int | None:
    if sunspec_type in (mdef.TYPE_STRING, mdef.TYPE_FLOAT32, mdef.TYPE_FLOAT64,
                        mdef.TYPE_PAD, mdef.TYPE_IPV6ADDR, mdef.TYPE_EUI48):
        return None  # strings decode as text; NaN floats are invalid in the codec already
    data = mb.create_unimpl_value(sunspec_type, len=2 * size)
    return int.from_bytes(data, "big")


@functools.cache
def model_def(model_id: int) -> ModelDef:
    """The layout of ``model_id`` from pysunspec2's definitions (raises UnknownModel)."""
    try:
        raw: dict[str, Any] = get_model_def(model_id)
    except mdef.ModelDefinitionError as exc:
        raise UnknownModel(model_id) from exc
    group = raw[mdef.GROUP]
    points: list[PointDef] = []
    offset = 0
    for p in group.get(mdef.POINTS, ()):
        sunspec_type = p[mdef.TYPE]
        size = int(p.get(mdef.SIZE) or mb.point_type_info[sunspec_type].len)
        symbols = tuple((int(s[mdef.VALUE]), str(s[mdef.NAME]))
                        for s in p.get(mdef.SYMBOLS, ()) if isinstance(s.get(mdef.VALUE), int))
        points.append(PointDef(
            name=p[mdef.NAME], offset=offset, size=size, sunspec_type=sunspec_type,
            type=_TYPES.get(sunspec_type), sf=p.get(mdef.SF), units=p.get(mdef.UNITS),
            writable=p.get(mdef.ACCESS) == mdef.ACCESS_RW,
            unimpl=_unimpl(sunspec_type, size), label=str(p.get(mdef.LABEL) or ""),
            symbols=symbols))
        offset += size
    repeating = tuple(g[mdef.NAME] for g in group.get(mdef.GROUPS, ()))
    return ModelDef(id=model_id, name=group[mdef.NAME], fixed_length=offset,
                    points=tuple(points), repeating=repeating)


def is_known(model_id: int) -> bool:
    try:
        model_def(model_id)
    except UnknownModel:
        return False
    return True
