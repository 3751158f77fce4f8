"""A network of namespaces for the nemesis: each node of the cluster gets a network
namespace of its own with one address on a shared bridge (which lives in a hub
namespace, so the host's own network is never touched). Cuts are nftables drops in the
sending node's namespace: silent losses, the kind that exercises the timeout paths, and
one-way when asked (``cut(a, b)`` drops only what ``a`` sends to ``b``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

__all__ = ["Network", "NetworkUnavailable", "network_available"]


class NetworkUnavailable(RuntimeError):
    pass


def network_available() -> str | None:
    """None if namespaces and nftables can be used here, else why not."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y iproute2 nftables)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise NetworkUnavailable(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


@dataclass
class Network:
    """Nodes by name; ``prefix`` keeps concurrent runs (and engineers) apart."""

    prefix: str
    subnet: int  # the third octet of 10.233.<subnet>.0/24
    nodes: dict[str, str] = field(default_factory=dict)  # name -> address
    _ns: dict[str, str] = field(default_factory=dict)  # name -> namespace
    _cuts: set[tuple[str, str]] = field(default_factory=set)
    #: Nodes whose chains hold cut rules (what heal flushes).
    _ruled: set[str] = field(default_factory=set)

    @property
    def hub(self) -> str:
        return f"{self.prefix}hub"

    def setup(self) -> None:
        why = network_available()
        if why:
            raise NetworkUnavailable(why)
        _run("ip", "netns", "add", self.hub)
        _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.hub, "link", "set", "br0", "up")
        _run("ip", "-n", self.hub, "link", "set", "lo", "up")

    def add(self, name: str) -> str:
        """A namespace for ``name``, linked to the bridge; returns its address."""
        k = len(self.nodes) + 2
        ns = f"{self.prefix}{k}"
        addr = f"10.233.{self.subnet}.{k}"
        _run("ip", "netns", "add", ns)
        # Made inside the node's namespace, the far end moved straight into the hub's.
        _run(
            "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{k}", "netns", self.hub
        )
        _run("ip", "-n", self.hub, "link", "set", f"p{k}", "master", "br0")
        _run("ip", "-n", self.hub, "link", "set", f"p{k}", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _nft_script(
            ns,
            [
                "add table inet chaos",
                "add chain inet chaos out { type filter hook output priority 0 ; policy accept ; }",
                "add chain inet chaos in { type filter hook input priority 0 ; policy accept ; }",
            ],
        )
        self.nodes[name] = addr
        self._ns[name] = ns
        return addr

    def exec_prefix(self, name: str) -> list[str]:
        """The argv prefix that runs a command inside ``name``'s namespace."""
        return ["ip", "netns", "exec", self._ns[name]]

    def cut(self, src: str, dst: str) -> None:
        """Drop every packet ``src`` sends to ``dst`` (one way)."""
        self.cut_many([(src, dst)])

    def cut_many(self, pairs: list[tuple[str, str]]) -> None:
        """Drop every packet each ``src`` sends to its ``dst``, all at once: each cut is a
        rule either in the sender's output chain or in the receiver's input chain, placed
        where most of the cuts meet, so isolating a node is one nft call, not 2N."""
        new = [p for p in dict.fromkeys(pairs) if p not in self._cuts]
        if not new:
            return
        weight: dict[str, int] = {}
        for a, b in new:
            weight[a] = weight.get(a, 0) + 1
            weight[b] = weight.get(b, 0) + 1
        rules: dict[str, list[str]] = {}
        for a, b in new:
            if weight[a] >= weight[b]:
                rules.setdefault(a, []).append(f"add rule inet chaos out ip daddr {self.nodes[b]} drop")
            else:
                rules.setdefault(b, []).append(f"add rule inet chaos in ip saddr {self.nodes[a]} drop")
        for name, lines in rules.items():
            _nft_script(self._ns[name], lines)
            self._ruled.add(name)
        self._cuts.update(new)

    def heal(self) -> None:
        """Remove every cut."""
        for name in self._ruled:
            _nft_script(self._ns[name], ["flush chain inet chaos out", "flush chain inet chaos in"])
        self._ruled.clear()
        self._cuts.clear()

    @property
    def cuts(self) -> set[tuple[str, str]]:
        return set(self._cuts)

    def teardown(self) -> None:
        for ns in [*self._ns.values(), self.hub]:
            _run("ip", "netns", "pids", ns, check=False)
            _run("ip", "netns", "delete", ns, check=False)
        self._ns.clear()
        self.nodes.clear()


def _nft_script(ns: str, lines: list[str]) -> None:
    """Run nft commands in ``ns`` as one script: one process, applied atomically."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise NetworkUnavailable(f"nft in {ns}: {r.stderr.strip()}")
