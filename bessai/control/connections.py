"""One `ModbusConnection` per physical endpoint, shared by every device (unit id) behind it.

``DEVICES=inv1@192.168.1.50:502/1,inv2@192.168.1.50:502/2`` is two units behind ONE endpoint (an
SDongle or SmartLogger keeps only its newest client): they must share one connection, not open
two that evict each other. `connections_for` groups the devices by endpoint and builds one
connection each; the gateway runs each as its own actor, ahead of the sites, and hands it to the
units' drivers.

The connection's timing is the strictest of its devices' profiles: the longest post-connect
delay and cooldown, the shortest reconnect cap (from the shortest comm-loss timeout). Each unit
keeps its own request timeout.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bessai.device.connection import (
    ModbusConnection,
    StreamFactory,
    reconnect_cap_s,
    tcp_stream_factory,
)
from bessai.device.framing import Framing, MbapFraming, RtuFraming
from bessai.device.serial_port import SerialSettings, serial_stream_factory
from bessai.observe.sink import NULL_SINK, MetricSink


def endpoint_key(device: Any) -> str:
    """The physical endpoint a settings device entry talks to: ``host:port`` (Modbus TCP),
    ``rtu-over-tcp:host:port``, ``serial:/dev/ttyUSB0``."""
    transport = getattr(device, "transport", "tcp")
    if transport == "serial":
        return f"serial:{device.host}"
    host = device.host
    where = f"[{host}]:{device.port}" if ":" in host else f"{host}:{device.port}"
    return where if transport == "tcp" else f"{transport}:{where}"


def _wire(device: Any) -> tuple[StreamFactory, Framing]:
    """The stream factory and framing of a device entry's transport."""
    transport = getattr(device, "transport", "tcp")
    if transport == "serial":
        settings = SerialSettings(device.host, device.baudrate, device.parity, device.stopbits)
        return serial_stream_factory(settings), RtuFraming(device.baudrate)
    factory = tcp_stream_factory(device.host, device.port)
    return factory, (RtuFraming() if transport == "rtu-over-tcp" else MbapFraming())


def connections_for(devices: Iterable[Any], profile_of: Callable[[Any], Any], *,
                    site_id: str, stream_factories: Mapping[str, StreamFactory] | None = None,
                    rng: random.Random | None = None,
                    metrics: MetricSink = NULL_SINK) -> dict[str, ModbusConnection]:
    """Device id → its endpoint's connection (devices on one endpoint get the same object).

    ``stream_factories`` (device id → factory) replace TCP for tests and the demo; the first
    device of an endpoint that has one decides for the endpoint."""
    factories = stream_factories or {}
    groups: dict[str, list[Any]] = {}
    for device in devices:
        groups.setdefault(endpoint_key(device), []).append(device)
    by_device: dict[str, ModbusConnection] = {}
    for key, group in groups.items():
        profiles = [profile_of(d) for d in group]
        factory, framing = _wire(group[0])
        factory = next((factories[d.id] for d in group if d.id in factories), factory)
        caps = [c for p in profiles if p.watchdog is not None
                and (c := reconnect_cap_s(p.watchdog.device_timeout_s)) is not None]
        connection = ModbusConnection(
            factory, peer=key, framing=framing,
            timeout_s=max(p.connection.timeout_s for p in profiles),
            post_connect_delay_s=max(p.connection.post_connect_delay_s for p in profiles),
            cooldown_s=max(p.connection.cooldown_s for p in profiles),
            reconnect_cap_s=min(caps) if caps else None,
            rng=rng or random.Random(), site_id=site_id, metrics=metrics)
        for device in group:
            connection.register(device.unit_id, device.id)
            by_device[device.id] = connection
    return by_device


def distinct(connections: Mapping[str, ModbusConnection]) -> list[ModbusConnection]:
    """Each connection once, in first-device order."""
    seen: dict[int, ModbusConnection] = {}
    for connection in connections.values():
        seen.setdefault(id(connection), connection)
    return list(seen.values())
