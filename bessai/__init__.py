"""BESSAI Edge Gateway: the BESS edge gateway built on the `actors` runtime.

The public API is listed in ``__all__``; every other module is an implementation detail.
"""

from bessai.clock import WallClock, system_wall_clock, trio_wall_clock
from bessai.model import Action, Command, Event, RecordKind, Snapshot, TagReading
from bessai.version import __version__ as __version__  # from the package metadata, one place

__all__ = [
    "Action",
    "Command",
    "Event",
    "RecordKind",
    "Snapshot",
    "TagReading",
    "WallClock",
    "system_wall_clock",
    "trio_wall_clock",
]
