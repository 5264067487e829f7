"""``bessai-sim``: a Huawei SUN2000 + LUNA2000 simulator (any profile) speaking Modbus TCP on Trio.

Public API: :class:`Simulator` (in-process, for tests and ``bessai-run --simulator``),
:class:`Faults`, :class:`SimState`, :class:`SiteParams`. The CLI is :mod:`bessai.sim.cli`.
"""

from bessai.sim.faults import Faults
from bessai.sim.model import SiteParams
from bessai.sim.simulator import SimState, Simulator

__all__ = ["Faults", "SimState", "Simulator", "SiteParams"]
