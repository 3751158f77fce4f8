"""The nemesis's network: cuts drop exactly the packets they name, in one nft call per
namespace, and heal restores every path (root, iproute2 and nftables needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from paxos_commit.chaos import network
from paxos_commit.chaos.network import Network, network_available

pytestmark = pytest.mark.skipif(network_available() is not None, reason=str(network_available()))


@pytest.fixture
def net() -> Iterator[Network]:
    n = Network(prefix=f"pct{os.getpid() % 10000}n", subnet=200 + os.getpid() % 50)
    n.setup()
    try:
        for name in ("a", "b", "c"):
            n.add(name)
        yield n
    finally:
        n.teardown()


def _udp_gets_through(net: Network, src: str, dst: str) -> bool:
    """A datagram from ``src`` reaches a listener at ``dst`` (one direction only)."""
    listen = (
        "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
        f"s.bind(('{net.nodes[dst]}',9999)); s.settimeout(1); print('ready',flush=True)\n"
        "try:\n print(s.recv(10).decode(),flush=True)\nexcept OSError: print('none',flush=True)"
    )
    rx = subprocess.Popen(
        [*net.exec_prefix(dst), sys.executable, "-c", listen], stdout=subprocess.PIPE, text=True
    )
    assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
    send = (
        "import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
        f"[s.sendto(b'hi',('{net.nodes[dst]}',9999)) for _ in range(3)]"
    )
    # A drop in the sender's output chain fails its sendto (EPERM): also "not through".
    subprocess.run([*net.exec_prefix(src), sys.executable, "-c", send], check=False, capture_output=True)
    out, _ = rx.communicate(timeout=5)
    return out.strip() == "hi"


def _paths(net: Network) -> set[tuple[str, str]]:
    """The (src, dst) pairs whose datagrams get through."""
    return {(a, b) for a in net.nodes for b in net.nodes if a != b and _udp_gets_through(net, a, b)}


def test_isolating_a_node_is_one_nft_call_and_heal_restores_every_path(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = {(a, b) for a in "abc" for b in "abc" if a != b}
    assert _paths(net) == everything
    calls: list[str] = []
    real = network._nft_script
    monkeypatch.setattr(network, "_nft_script", lambda ns, lines: (calls.append(ns), real(ns, lines)))
    others = ["b", "c"]
    net.cut_many([("a", o) for o in others] + [(o, "a") for o in others])
    assert len(calls) == 1, calls  # every rule in a's own chains
    assert _paths(net) == {("b", "c"), ("c", "b")}
    net.heal()
    assert net.cuts == set()
    assert _paths(net) == everything


def test_a_one_way_cut_drops_one_direction_only(net: Network) -> None:
    net.cut("b", "c")
    assert not _udp_gets_through(net, "b", "c")
    assert _udp_gets_through(net, "c", "b")
    assert _udp_gets_through(net, "a", "c")
    net.heal()
    assert _udp_gets_through(net, "b", "c")
