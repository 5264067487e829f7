"""``bessai profile discover``: point at a SunSpec device, get a checked profile file.

Connects once (its own connection: run it before the gateway polls the device, or with the
gateway stopped — a device that keeps one client would drop the gateway's), discovers the map,
checks the generated profile with the same schema and semantic checks as every profile, and
writes it only if it passes. Prints the base address, the models found, the unknown models
skipped and whether the chain was cut short.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from bessai.bounds import clip
from bessai.device import ModbusClient, tcp_stream_factory
from bessai.device.errors import ModbusError, ProfileError
from bessai.device.framing import MbapFraming, RtuFraming
from bessai.device.profile import parse_profile
from bessai.errors import ConfigError, OperationFailedError
from bessai.sunspec.discover import Discovery, DiscoveryError, discover
from bessai.sunspec.generate import read_only_reason


async def _discover(host: str, port: int, unit_id: int, transport: str,
                    timeout_s: float) -> Discovery:
    framing = RtuFraming() if transport == "rtu-over-tcp" else MbapFraming()
    client = ModbusClient(tcp_stream_factory(host, port), unit_id=unit_id, timeout_s=timeout_s,
                          post_connect_delay_s=0, cooldown_s=0, framing=framing)
    async with client:
        with trio.fail_after(max(timeout_s * 20, 30.0)):
            return await discover(client, port=port, unit_id=unit_id)


def run_discover(host: str, port: int, unit_id: int, out: Path, *, transport: str = "tcp",
                 timeout_s: float = 5.0) -> int:
    where = f"{clip(host, 100)}:{port} unit {unit_id}"
    try:
        found = trio.run(_discover, host, port, unit_id, transport, timeout_s)
    except DiscoveryError as exc:
        raise OperationFailedError(f"SunSpec discovery on {where}: {exc}",
                                   hint="check the address, --unit-id and that SunSpec is "
                                   "enabled on the device") from exc
    except (ModbusError, OSError, trio.TooSlowError) as exc:
        raise OperationFailedError(f"SunSpec discovery on {where} failed: "
                                   f"{clip(str(exc) or type(exc).__name__, 300)}",
                                   hint="run `bessai probe --host ...` to check the "
                                   "connection first") from exc
    text = json.dumps(found.profile, indent=2) + "\n"
    try:
        parse_profile(text, file=str(out))
    except ProfileError as exc:  # a generator bug, never written
        raise OperationFailedError(f"the generated profile does not validate: {exc}",
                                   hint="report this with the list of models above") from exc
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}",
                          hint="choose a writable --out path") from exc
    models = [m.model_id for m in found.chain]
    _print_summary(found, out, models)
    return 0


def _print_summary(found: Discovery, out: Path, models: list[int]) -> None:
    doc: dict[str, Any] = found.profile
    print(f"SunSpec map at base {found.base}: models {', '.join(map(str, models))}")
    if found.unknown:
        print(f"unknown models skipped: {', '.join(map(str, found.unknown))}")
    if found.truncated:
        print("the model chain ends without its end marker: mapped up to the last model that "
              "answered")
    if "dispatch" in doc:
        print(f"dispatch: model 124 (lease {doc['dispatch']['lease']['tag']}, "
              f"{doc['dispatch']['lease']['period']} s)")
    else:
        print(f"dispatch: none — read-only profile ({read_only_reason(doc)}); the gateway "
              "reads this device and rejects every command for it")
    print(f"safety: soc={doc['safety']['soc_tag']} "
          f"temperature={','.join(doc['safety']['temperature_tags'])}")
    print(f"profile written: {out} ({len(doc['tags'])} tags)")
