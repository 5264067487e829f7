"""Network namespaces, veth pairs and kernel-level cuts for the chaos-net scenarios.

One *lane* is three namespaces of our own and four veth pairs, all named ``bcn<k>...`` and
addressed in ``10.231.<k>.0/24`` (nothing outside the namespaces we create, nothing routed):

    root  10.231.k.1  ── mgmt ──   10.231.k.2   cloud   (the harness's admin path: never cut)
    gw    10.231.k.5  ── cloud ──  10.231.k.6   cloud   (the gateway's cloud link)
    gw    10.231.k.9  ── inv ──    10.231.k.10  inv     (the gateway's inverter link)
    root  10.231.k.13 ── mgmt ──   10.231.k.14  gw      (/status for the harness: never cut)

Cuts, on one link at a time (both ends):

* **down** — the gateway's end of the link is set down (``ip link set ... down``): the route is
  gone, so a send fails at once (ENETUNREACH) and the peer's packets are not received.
* **black hole** — an nftables rule in *each* namespace drops every packet arriving on the link
  (input hook). The sender's packets leave normally and vanish; nothing errors, nothing answers:
  a dead router or a cable cut behind a switch. (A drop in the *output* hook would not do: the
  kernel reports that to the sender as EPERM at once.) netem (``tc qdisc ... loss 100%``) is the
  other classic way; many kernels (this machine's among them) are built without it.

Every lane holds an exclusive lock (``/run/bessai-chaos-net/lane<k>.lock``) while it exists, so
parallel runs pick different lanes and a lane left behind by a killed run (its lock is free) is
removed by the next run, with any process still inside it. `Lane.close` expects the caller to
have ended its own processes already.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import IO

import attrs

LOCK_DIR = Path("/run/bessai-chaos-net")
PREFIX = "bcn"
MAX_LANES = 32
LINKS = ("cloud", "inv")


class NetnsUnavailable(RuntimeError):
    """This machine (or user) cannot build network namespaces: the scenarios are skipped."""


def _run(*args: str, input_text: str | None = None, check: bool = True) -> str:
    done = subprocess.run(list(args), input=input_text, capture_output=True, text=True,
                          timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[:400]}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why the scenarios cannot run here (None: they can). Probes by creating and deleting a
    namespace of our own."""
    if os.geteuid() != 0:
        return "not root: network namespaces and veth pairs need root (CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "`ip` not found: apt-get install iproute2"
    if shutil.which("nft") is None:
        return "`nft` not found (black-hole cuts are nftables rules): apt-get install nftables"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` is not allowed here: {exc}"
    try:
        _run("ip", "netns", "exec", probe, "nft", "list", "tables")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"nftables does not work inside a namespace here: {exc}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _namespaces() -> set[str]:
    out = _run("ip", "netns", "list", check=False)
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@attrs.define(eq=False)
class Lane:
    """One set of namespaces for one scenario run at a time. Use `Lane.open`."""

    k: int
    _lock: IO[str] | None = None
    _cut: dict[str, str] = attrs.field(factory=dict)

    # ---- names and addresses --------------------------------------------------------------

    def ns(self, role: str) -> str:
        return f"{PREFIX}{self.k}-{role}"

    def addr(self, last: int) -> str:
        return f"10.231.{self.k}.{last}"

    @property
    def gw_cloud_ip(self) -> str:
        return self.addr(5)

    @property
    def cloud_ip(self) -> str:
        """The emulator as the gateway reaches it (over the cloud link)."""
        return self.addr(6)

    @property
    def cloud_admin_ip(self) -> str:
        """The emulator as the harness reaches it (over the management link)."""
        return self.addr(2)

    @property
    def inverter_ip(self) -> str:
        return self.addr(10)

    @property
    def gw_status_ip(self) -> str:
        return self.addr(14)

    def exec_prefix(self, role: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns(role))

    # ---- building and tearing down ----------------------------------------------------------

    @classmethod
    def open(cls) -> Lane:
        """Take the first free lane (removing what a killed run left there) and build it."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for k in range(MAX_LANES):
            lock = open(LOCK_DIR / f"lane{k}.lock", "w")  # noqa: SIM115 - held while open
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            lane = cls(k, lock)
            try:
                lane._remove()  # leftovers of a run that was killed
                lane._build()
            except BaseException:
                lane.close()
                raise
            return lane
        raise NetnsUnavailable(f"all {MAX_LANES} chaos-net lanes are in use")

    def _veth(self, name_a: str, ns_a: str | None, addr_a: str, name_b: str, ns_b: str,
              addr_b: str) -> None:
        a = ["ip", "link", "add", "name", name_a]
        if ns_a is not None:
            a += ["netns", ns_a]
        _run(*a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
        for ns, name, addr in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
            n = ["-n", ns] if ns is not None else []
            _run("ip", *n, "addr", "add", f"{addr}/30", "dev", name)
            _run("ip", *n, "link", "set", name, "up")

    def _build(self) -> None:
        for role in ("gw", "inv", "cloud"):
            _run("ip", "netns", "add", self.ns(role))
            _run("ip", "-n", self.ns(role), "link", "set", "lo", "up")
        gw, inv, cloud = self.ns("gw"), self.ns("inv"), self.ns("cloud")
        self._veth(f"{PREFIX}{self.k}-c", None, self.addr(1), "mgmt0", cloud, self.addr(2))
        self._veth("cloud0", gw, self.addr(5), "gw0", cloud, self.addr(6))
        self._veth("inv0", gw, self.addr(9), "gw0", inv, self.addr(10))
        self._veth(f"{PREFIX}{self.k}-g", None, self.addr(13), "mgmt0", gw, self.addr(14))

    def _remove(self) -> None:
        for role in ("gw", "inv", "cloud"):
            if self.ns(role) in _namespaces():
                # a run killed with SIGKILL leaves its processes in its namespaces (the emulator's
                # JVM above all): only ours can be in there
                for pid in _run("ip", "netns", "pids", self.ns(role), check=False).split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                _run("ip", "netns", "del", self.ns(role), check=False)
        for name in (f"{PREFIX}{self.k}-c", f"{PREFIX}{self.k}-g"):
            _run("ip", "link", "del", name, check=False)  # gone with its peer's namespace

    def close(self) -> None:
        """Delete the namespaces (and with them every veth and nft rule). Idempotent."""
        try:
            self._remove()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    # ---- cuts -------------------------------------------------------------------------------

    def _ends(self, link: str) -> tuple[tuple[str, str], tuple[str, str]]:
        """((namespace, interface) at the gateway, (namespace, interface) at the peer)."""
        if link == "cloud":
            return (self.ns("gw"), "cloud0"), (self.ns("cloud"), "gw0")
        if link == "inv":
            return (self.ns("gw"), "inv0"), (self.ns("inv"), "gw0")
        raise ValueError(f"no link {link!r}; links: {LINKS}")

    def cut(self, link: str, how: str) -> None:
        """``how``: ``down`` (interface down: errors at once) or ``blackhole`` (silent drop)."""
        if link in self._cut:
            raise RuntimeError(f"{link} is already cut ({self._cut[link]})")
        (gw_ns, gw_if), (peer_ns, peer_if) = self._ends(link)
        if how == "down":
            _run("ip", "-n", gw_ns, "link", "set", gw_if, "down")
        elif how == "blackhole":
            for ns, ifname in ((gw_ns, gw_if), (peer_ns, peer_if)):
                _run("ip", "netns", "exec", ns, "nft", "-f", "-", input_text=(
                    f"table inet chaos_{link} {{\n"
                    f"  chain input {{ type filter hook input priority -300; policy accept;\n"
                    f'    iifname "{ifname}" drop\n  }}\n}}\n'))
        else:
            raise ValueError(f"cut how={how!r}: down or blackhole")
        self._cut[link] = how

    def restore(self, link: str) -> None:
        how = self._cut.pop(link, None)
        if how is None:
            return
        (gw_ns, gw_if), (peer_ns, _) = self._ends(link)
        if how == "down":
            _run("ip", "-n", gw_ns, "link", "set", gw_if, "up")
        else:
            for ns in (gw_ns, peer_ns):
                _run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet",
                     f"chaos_{link}")

    def restore_all(self) -> None:
        for link in list(self._cut):
            self.restore(link)

    def cut_state(self) -> dict[str, str]:
        return dict(self._cut)
