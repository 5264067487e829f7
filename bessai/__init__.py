"""BESSAI Edge Gateway: the BESS edge gateway built on the `actors` runtime.

The public API is listed in ``__all__``; every other module is an implementation detail.
"""

from bessai.clock import WallClock, system_wall_clock, trio_wall_clock
from bessai.model import Action, Command, Event, EventKind, Snapshot, TagReading

__all__ = [
    "Action",
    "Command",
    "Event",
    "EventKind",
    "Snapshot",
    "TagReading",
    "WallClock",
    "system_wall_clock",
    "trio_wall_clock",
]
__version__ = "0.4.0.dev0"
