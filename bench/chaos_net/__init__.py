"""Chaos on the real network stack: `python -m bench.chaos_net` (`make chaos-net`).

See `bench.chaos_net.scenarios` for what runs and what is measured, `bench.chaos_net.netns` for
the namespaces and the cuts.
"""

MARKER = ("<!-- chaos-net: the section below is written by `make chaos-net`; "
          "`make chaos` keeps it -->")
"""Where bench/CHAOS.md's chaos-net section starts (`make chaos` rewrites only what is above)."""
