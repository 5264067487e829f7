"""Fault controls for the simulator: the ways a real inverter misbehaves on the wire.

The job: hold the switches that tests and the ``bessai-sim`` CLI flip, and that the Modbus
session consults before answering each request. Invariants: a fault affects only the answer
to requests that arrive (or are pending) while it is set; clearing it restores normal answers
without a restart; ``drop`` closes connections, it never stops the listener.
"""

from __future__ import annotations

import attrs


@attrs.define
class Faults:
    """Switches consulted per request (mutable; flip them any time).

    * ``busy``: answer every request with exception 0x06 (server device busy), as Huawei does
      while it is starting up or overloaded.
    * ``delay_s``: wait this long (Trio clock) before answering; Huawei replies can take seconds.
    * ``silent``: read requests but never answer them (the client must time out).
    * ``drop_on_request``: close the connection when the next request arrives, without answer.
    * ``device_fault``: the inverter reports fault shutdown (0x0300) and the battery fault (3).
    * ``busy_after_connect_s``: answer 0x06 to requests that arrive sooner than this after
      their connection opened (Huawei wants about 1 s of quiet after connect).
    * ``pinned``: tag name → value the registers report instead of the model's (a sensor that
      lies: ``{"battery_temp": 46.0}``). The physics carry on underneath.
    * ``invalid_tags``: tags that read as their invalid sentinel (0xFFFF, 0x7FFFFFFF...).
    """

    busy: bool = False
    delay_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    silent: bool = False
    drop_on_request: bool = False
    device_fault: bool = False
    busy_after_connect_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    pinned: dict[str, float | int] = attrs.field(factory=dict)
    invalid_tags: set[str] = attrs.field(factory=set)

    def clear(self) -> None:
        """Back to a healthy device."""
        self.busy = self.silent = self.drop_on_request = self.device_fault = False
        self.delay_s = self.busy_after_connect_s = 0.0
        self.pinned.clear()
        self.invalid_tags.clear()
