"""SunSpec discovery: find the map, walk its model chain, and make the device's profile.

The job: on a Modbus client (the project's own, over Trio), look for the ``SunS`` marker at the
base addresses SunSpec allows (40000, 0, 50000, in that order), walk the chain of
``(ID, L)`` headers to the end marker (``ID`` 0xFFFF), read what the generator needs (the common
model's manufacturer and model, model 124's ``WChaMax`` and ``InOutWRte_SF``) and hand the chain
to :func:`bessai.sunspec.generate.generate`.

Invariants (hostile devices included):

* The walk is bounded: at most ``MAX_MODELS`` headers, never past register 65535, and a model
  whose last register does not answer ends the chain there (``truncated``); the profile's block
  then ends at the last model that answered, so the gateway never polls missing registers.
* An unknown model is listed and skipped, never fatal.
* Only exception replies (the address does not exist) move discovery on; a dead connection or
  a timeout propagates as the device error it is.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from bessai.device.errors import ModbusExceptionResponse
from bessai.sunspec.generate import (
    STORAGE_MODEL,
    DispatchScale,
    GenerateError,
    ModelInstance,
    generate,
)
from bessai.sunspec.models import COMMON_MODEL_ID, END_MODEL_ID, MARKER, model_def

BASE_ADDRESSES = (40000, 0, 50000)
MAX_MODELS = 64
_NOT_IMPLEMENTED_SF = 0x8000


class DiscoveryError(RuntimeError):
    """No SunSpec map, or one the gateway cannot use; the message says what to check."""


class RegisterReader(Protocol):
    async def read_holding_registers(self, address: int, count: int) -> list[int]: ...


@attrs.frozen
class Discovery:
    """What discovery found, and the profile document made from it."""

    base: int
    chain: tuple[ModelInstance, ...]
    unknown: tuple[int, ...]
    truncated: bool
    profile: dict[str, Any]


async def _try_read(client: RegisterReader, address: int, count: int) -> list[int] | None:
    if address < 0 or address + count - 1 > 0xFFFF:
        return None
    try:
        return await client.read_holding_registers(address, count)
    except ModbusExceptionResponse:
        return None


async def find_base(client: RegisterReader) -> int:
    """The first base address holding the ``SunS`` marker."""
    for base in BASE_ADDRESSES:
        words = await _try_read(client, base, 2)
        if words is not None and len(words) == 2 and (words[0] << 16 | words[1]) == MARKER:
            return base
    raise DiscoveryError("no SunSpec marker 'SunS' at 40000, 0 or 50000: the device does not "
                         "publish SunSpec on this unit id (check --unit-id and the device's "
                         "Modbus/SunSpec setting)")


async def walk_chain(client: RegisterReader, base: int
                     ) -> tuple[list[ModelInstance], int, bool]:
    """The models after the marker, the last register of the map, and whether it was cut."""
    chain: list[ModelInstance] = []
    address = base + 2
    for _ in range(MAX_MODELS):
        header = await _try_read(client, address, 2)
        if header is None or len(header) != 2:
            return chain, address - 1, True
        model_id, length = header
        if model_id == END_MODEL_ID:
            return chain, address + 1, False
        end = address + 2 + length
        last = await _try_read(client, end - 1, 1) if length else header
        if last is None or end - 1 > 0xFFFF:
            return chain, address - 1, True
        chain.append(ModelInstance(model_id, address, length))
        address = end
    return chain, address - 1, True


def _string(words: list[int]) -> str:
    data = b"".join(w.to_bytes(2, "big") for w in words)
    return data.decode("utf-8", errors="replace").strip("\x00 ")[:64]


async def _point(client: RegisterReader, inst: ModelInstance, name: str) -> list[int] | None:
    p = model_def(inst.model_id).point(name)
    if p is None or p.offset + p.size > inst.length + 2:
        return None
    return await _try_read(client, inst.address + p.offset, p.size)


async def _dispatch_scale(client: RegisterReader, chain: list[ModelInstance]
                          ) -> DispatchScale | None:
    inst = next((m for m in chain if m.model_id == STORAGE_MODEL), None)
    if inst is None:
        return None
    wchamax = await _point(client, inst, "WChaMax")
    wchamax_sf = await _point(client, inst, "WChaMax_SF")
    rate_sf = await _point(client, inst, "InOutWRte_SF")
    if wchamax is None or wchamax_sf is None or wchamax[0] == 0xFFFF \
            or wchamax_sf[0] == _NOT_IMPLEMENTED_SF:
        return None
    sf = _signed(wchamax_sf[0])
    rate = 0 if rate_sf is None or rate_sf[0] == _NOT_IMPLEMENTED_SF else _signed(rate_sf[0])
    return DispatchScale(wchamax_w=wchamax[0] * 10.0 ** sf, inoutwrte_sf=rate)


def _signed(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


async def discover(client: RegisterReader, *, port: int = 502, unit_id: int = 1) -> Discovery:
    """Discover the SunSpec device behind ``client`` (raises DiscoveryError)."""
    base = await find_base(client)
    chain, end, truncated = await walk_chain(client, base)
    if not chain:
        raise DiscoveryError(f"SunSpec marker at {base} but no model answered after it")
    manufacturer = model = ""
    common = next((m for m in chain if m.model_id == COMMON_MODEL_ID), None)
    if common is not None:
        mn, md = await _point(client, common, "Mn"), await _point(client, common, "Md")
        manufacturer = _string(mn) if mn else ""
        model = _string(md) if md else ""
    scale = await _dispatch_scale(client, chain)
    try:
        doc, unknown = generate(chain, base=base, end=end, port=port, unit_id=unit_id,
                                manufacturer=manufacturer, model=model, dispatch=scale)
    except GenerateError as exc:
        found = ", ".join(str(m.model_id) for m in chain)
        raise DiscoveryError(f"{exc} (models found at base {base}: {found})") from exc
    return Discovery(base=base, chain=tuple(chain), unknown=tuple(unknown),
                     truncated=truncated, profile=doc)
