"""The uplink's link state machine is the gateway's one link state machine, `bessai.link`.

Kept as a module so ``from bessai.uplink.link import Link, LinkState`` goes on working.
"""

from bessai.link import LINK_STATE_VALUES, Link, LinkState

__all__ = ["LINK_STATE_VALUES", "Link", "LinkState"]
