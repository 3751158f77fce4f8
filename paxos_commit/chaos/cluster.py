"""The cluster under test: every acceptor, coordinator, resource manager and client is a
real process in a network namespace of its own (:mod:`.network`), started through the
``paxos-commit`` CLI (or a launcher with the same arguments, see ``launchers``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .network import Network

__all__ = ["ChaosCluster", "Node", "Timeouts"]

ACCEPTOR_PORT = 7000
COORDINATOR_PORT = 7100
RM_PORT = 7200
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@dataclass(frozen=True)
class Timeouts:
    """Coordinator and RM timeouts, short so that faults resolve within a run."""

    vote: float = 2.0
    recovery: float = 4.0
    recovery_interval: float = 0.5
    txn: float = 8.0
    owner: float = 4.0
    rm_recovery: float = 5.0


@dataclass
class Node:
    """One process of the cluster: what it runs, and whether the nemesis holds it down."""

    name: str
    role: str  # acceptor | coordinator | rm | client
    argv: list[str]
    log_file: Path
    port_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    #: True while the nemesis keeps it killed (the supervisor must not restart it).
    down: bool = False
    paused: bool = False
    starts: int = 0
    #: Exits the nemesis did not cause (a crash the supervisor restarted).
    crashes: int = 0
    finished: bool = False  # a client that ran all its transactions

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class ChaosCluster:
    """``f``: acceptors are 2F+1. ``launchers`` maps a role to the argv prefix that runs
    ``paxos-commit``-style arguments (a test swaps in a buggy launcher)."""

    root: Path
    network: Network
    f: int = 1
    n_coordinators: int = 2
    n_rms: int = 3
    n_clients: int = 2
    transactions: int = 100
    concurrency: int = 4
    seed: int = 0
    timeouts: Timeouts = field(default_factory=Timeouts)
    launchers: dict[str, list[str]] = field(default_factory=dict)
    disk_mb: int = 0  # >0: each acceptor's data dir is a tmpfs of this size (disk-full faults)
    faketime: bool = False  # coordinators and RMs see a clock the nemesis can jump
    nodes: dict[str, Node] = field(default_factory=dict)
    _mounts: list[Path] = field(default_factory=list)

    def _cli(self, role: str) -> list[str]:
        return self.launchers.get(role, [sys.executable, "-m", "paxos_commit"])

    def clock_file(self, name: str) -> Path:
        return self.root / "clock" / name

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    @property
    def acceptors(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.role == "acceptor"]

    def by_role(self, role: str) -> list[str]:
        return [n for n, node in self.nodes.items() if node.role == role]

    def addr(self, name: str, port: int) -> str:
        return f"{self.network.nodes[name]}:{port}"

    def build(self) -> None:
        """Namespaces, data dirs and the command line of every process."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        (self.root / "history").mkdir(exist_ok=True)
        (self.root / "clock").mkdir(exist_ok=True)
        acc = [f"acceptor-{i}" for i in range(2 * self.f + 1)]
        coords = [f"coord-{i}" for i in range(self.n_coordinators)]
        rms = [f"rm-{i}" for i in range(self.n_rms)]
        clients = [f"client-{i}" for i in range(self.n_clients)]
        for name in [*acc, *coords, *rms, *clients]:
            self.network.add(name)
        acc_addrs = ",".join(self.addr(a, ACCEPTOR_PORT) for a in acc)
        coord_addrs = ",".join(self.addr(c, COORDINATOR_PORT) for c in coords)
        t = self.timeouts
        for i, name in enumerate(acc):
            d = self.data_dir(name)
            d.mkdir(parents=True, exist_ok=True)
            if self.disk_mb:
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m", "tmpfs", str(d)], check=True
                )
                self._mounts.append(d)
            argv = [
                *self._cli("acceptor"), "acceptor", "--id", str(i), "--data-dir", str(d),
                "--listen", f"0.0.0.0:{ACCEPTOR_PORT}",
                # The nemesis tests crash faults, not attackers: plain text keeps its schedules comparable.
                "--insecure",
            ]  # fmt: skip
            self._add(name, "acceptor", argv)
        for name in coords:
            argv = [
                *self._cli("coordinator"), "coordinator", "--acceptors", acc_addrs,
                "--listen", f"0.0.0.0:{COORDINATOR_PORT}", "--advertise-host", self.network.nodes[name],
                "--name", name, "--vote-timeout", str(t.vote), "--recovery-timeout", str(t.recovery),
                "--recovery-interval", str(t.recovery_interval), "--txn-timeout", str(t.txn),
                "--insecure",
            ]  # fmt: skip
            self._add(name, "coordinator", argv, clock=True)
        for name in rms:
            argv = [
                *self.launchers.get("rm", [sys.executable, "-m", "paxos_commit.chaos.rm_process"]),
                "--id", name, "--db", str(self.data_dir(name) / "rm.db"),
                "--listen", f"0.0.0.0:{RM_PORT}", "--coordinators", coord_addrs, "--acceptors", acc_addrs,
                "--owner-timeout", str(t.owner), "--recovery-timeout", str(t.rm_recovery),
            ]  # fmt: skip
            self.data_dir(name).mkdir(parents=True, exist_ok=True)
            self._add(name, "rm", argv, clock=True)
        rm_map = ",".join(f"{r}={self.addr(r, RM_PORT)}" for r in rms)
        per_client = -(-self.transactions // max(1, self.n_clients))
        for k, name in enumerate(clients):
            n = min(per_client, self.transactions - k * per_client)
            argv = [
                sys.executable, "-m", "paxos_commit.chaos.workload", "--id", name,
                "--log", str(self.root / "history" / f"{name}.ndjson"), "--coordinators", coord_addrs,
                "--rms", rm_map, "--transactions", str(max(0, n)), "--concurrency", str(self.concurrency),
                "--seed", str(self.seed), "--stop-file", str(self.root / "stop"),
            ]  # fmt: skip
            self._add(name, "client", argv, ready=False)

    def _add(self, name: str, role: str, argv: list[str], *, ready: bool = True, clock: bool = False) -> None:
        env = {"PYTHONPATH": os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)}
        if clock and self.faketime:
            self.clock_file(name).write_text("+0\n")
            env |= {
                "LD_PRELOAD": FAKETIME_LIB,
                "FAKETIME_TIMESTAMP_FILE": str(self.clock_file(name)),
                "FAKETIME_CACHE_DURATION": "1",
            }
        port_file = self.root / "logs" / f"{name}.port" if ready else None
        if port_file is not None:
            argv = [*argv, "--port-file", str(port_file)]
        self.nodes[name] = Node(name, role, argv, self.root / "logs" / f"{name}.log", port_file, env)

    def start(self, name: str, *, init: bool = False) -> None:
        node = self.nodes[name]
        argv = list(node.argv)
        if init:
            argv.append("--init")
        if node.port_file is not None:
            node.port_file.unlink(missing_ok=True)
        with node.log_file.open("ab") as log:
            node.popen = subprocess.Popen(
                [*self.network.exec_prefix(name), *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **node.env},
            )
        node.starts += 1
        node.paused = False

    def wait_ready(self, names: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            node = self.nodes[name]
            while node.port_file is not None and not node.port_file.exists():
                if not node.alive():
                    tail = node.log_file.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited before serving:\n{tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not serving after {timeout}s")
                time.sleep(0.05)

    def start_all(self) -> None:
        for a in self.acceptors:
            self.start(a, init=True)
        self.wait_ready(self.acceptors)
        for role in ("coordinator", "rm"):
            for n in self.by_role(role):
                self.start(n)
            self.wait_ready(self.by_role(role))
        for n in self.by_role("client"):
            self.start(n)

    def signal(self, name: str, sig: signal.Signals) -> None:
        node = self.nodes[name]
        if node.alive():
            assert node.popen is not None
            node.popen.send_signal(sig)

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        node.down = True
        if node.alive():
            assert node.popen is not None
            node.popen.send_signal(signal.SIGKILL)
            node.popen.wait()

    def revive(self, name: str) -> None:
        node = self.nodes[name]
        node.down = False
        if not node.alive() and not node.finished:
            self.start(name)

    def serving(self, name: str) -> bool:
        """True once ``name`` runs and (if it serves) has written its port file."""
        node = self.nodes[name]
        if node.finished:
            return True
        return node.alive() and (node.port_file is None or node.port_file.exists())

    def pause(self, name: str) -> None:
        self.nodes[name].paused = True
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.nodes[name].paused = False
        self.signal(name, signal.SIGCONT)

    def supervise(self) -> list[str]:
        """Restart every process that exited without the nemesis asking (a crash); a
        client that exited 0 is done. Returns the names restarted."""
        restarted = []
        for name, node in self.nodes.items():
            if node.down or node.finished or node.popen is None or node.alive():
                continue
            if node.role == "client" and node.popen.returncode == 0:
                node.finished = True
                continue
            node.crashes += 1
            self.start(name)
            restarted.append(name)
        return restarted

    def clients_done(self) -> bool:
        self.supervise()
        return all(self.nodes[c].finished for c in self.by_role("client"))

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.alive():
                assert node.popen is not None
                node.popen.send_signal(signal.SIGCONT)
                node.popen.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            if node.popen is not None:
                try:
                    node.popen.wait(10)
                except subprocess.TimeoutExpired:
                    node.popen.kill()
                    node.popen.wait()

    def teardown(self) -> None:
        for node in self.nodes.values():
            if node.alive():
                assert node.popen is not None
                node.popen.kill()
                node.popen.wait()
        for d in self._mounts:
            # Keep what the checker may want to read: copy the acceptor's files out first.
            keep = d.with_name(d.name + ".kept")
            shutil.copytree(d, keep, dirs_exist_ok=True)
            subprocess.run(["umount", "-l", str(d)], check=False)
        self._mounts.clear()
        self.network.teardown()

    def describe(self) -> dict[str, object]:
        return {
            "acceptors": len(self.acceptors),
            "f": self.f,
            "coordinators": len(self.by_role("coordinator")),
            "rms": len(self.by_role("rm")),
            "clients": len(self.by_role("client")),
            "addresses": dict(self.network.nodes),
        }


def read_port_file(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data
