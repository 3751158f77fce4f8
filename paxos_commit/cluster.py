"""A local cluster: acceptors and coordinators as separate processes on loopback.

Used by ``paxos-commit up``, the demo, the benchmark and the integration tests. Each
process writes its address to a port file once it serves; the cluster waits for those.
With ``tls`` (the default) every process serves mTLS with a certificate from a local CA
under ``data_dir/certs`` (made on first start); :meth:`LocalCluster.credentials` gives a
client its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from paxos_commit.certs import TlsFiles

__all__ = ["ClusterError", "LocalCluster", "ServiceProcess"]


class ClusterError(RuntimeError):
    pass


@dataclass
class ServiceProcess:
    """One service process: how to start it and where it listens."""

    name: str
    args: list[str]
    port_file: Path
    log_file: Path
    popen: subprocess.Popen[bytes] | None = None
    address: str = ""
    metrics_port: int | None = None
    #: The pid from the port file, for a process this object did not start (attached).
    attached_pid: int | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.port_file.unlink(missing_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "paxos_commit", *self.args, "--port-file", str(self.port_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                info = json.loads(self.port_file.read_text())
                self.address, self.metrics_port = info["address"], info.get("metrics_port")
                return self.address
            if self.popen is not None and self.popen.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise ClusterError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")
            time.sleep(0.02)
        raise ClusterError(f"{self.name} not ready after {timeout}s (log: {self.log_file})")

    @property
    def pid(self) -> int:
        if self.popen is None:
            assert self.attached_pid is not None
            return self.attached_pid
        return self.popen.pid

    def alive(self) -> bool:
        if self.popen is None and self.attached_pid is not None:
            try:
                os.kill(self.attached_pid, 0)
            except ProcessLookupError:
                return False
            return True
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush (what a crash looks like)."""
        if not self.alive():
            return
        if self.popen is None:
            os.kill(self.pid, signal.SIGKILL)
            return
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait for a graceful exit; SIGKILL if it does not come."""
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@dataclass
class LocalCluster:
    """2F+1 acceptors (SQLite under ``data_dir``) and coordinator replicas."""

    data_dir: Path
    n_acceptors: int = 3
    n_coordinators: int = 2
    base_port: int = 0
    vote_timeout: float = 5.0
    recovery_timeout: float = 10.0
    recovery_interval: float = 1.0
    txn_timeout: float = 120.0
    extra_env: dict[str, str] = field(default_factory=dict)
    #: SQLAlchemy URLs, one per acceptor (e.g. Postgres); default: SQLite under data_dir.
    acceptor_urls: list[str] | None = None
    #: Folder for each process's protocol event log (trace validation); None: no logs.
    trace_dir: Path | None = None
    #: mTLS on every hop (certificates under data_dir/certs); False: --insecure.
    tls: bool = True
    #: Extra command-line arguments of every acceptor / coordinator process.
    acceptor_args: list[str] = field(default_factory=list)
    coordinator_args: list[str] = field(default_factory=list)
    acceptors: list[ServiceProcess] = field(default_factory=list)
    #: True for a cluster found with :meth:`attach`: someone else runs it.
    attached: bool = False
    coordinators: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_acceptors < 1 or self.n_acceptors % 2 == 0:
            raise ClusterError(f"acceptors must be 2F+1 (odd), got {self.n_acceptors}")
        if self.acceptor_urls is not None and len(self.acceptor_urls) != self.n_acceptors:
            raise ClusterError("need one storage URL per acceptor")
        if self.n_coordinators < 1:
            raise ClusterError("need at least one coordinator")
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def acceptor_addresses(self) -> list[str]:
        return [a.address for a in self.acceptors]

    @property
    def coordinator_addresses(self) -> list[str]:
        return [c.address for c in self.coordinators]

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"

    def credentials(self, role: str, name: str) -> grpc.ChannelCredentials | None:
        """Client credentials of ``role``/``name`` from the cluster's CA (issued on first
        use), or None for a cluster without TLS."""
        if not self.tls:
            return None
        from paxos_commit.certs import ensure_cert

        return ensure_cert(self.certs_dir, role, name).channel_credentials()

    def admin_tls(self, name: str = "local") -> TlsFiles | None:
        """The certificate files of the operators' tools (``admin/<name>``; ``admin/local``
        is made with the cluster), or None for a cluster without TLS."""
        if not self.tls:
            return None
        from paxos_commit.certs import ensure_cert

        return ensure_cert(self.certs_dir, "admin", name)

    def _security_args(self) -> list[str]:
        return ["--certs", str(self.certs_dir)] if self.tls else ["--insecure"]

    def _port(self, offset: int) -> int:
        return self.base_port + offset if self.base_port else 0

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        marker = self.data_dir / "cluster.json"
        fresh = not marker.exists()
        if not fresh:
            known = json.loads(marker.read_text())
            if known["acceptors"] != self.n_acceptors:
                raise ClusterError(
                    f"{self.data_dir} holds a cluster of {known['acceptors']} acceptors, not {self.n_acceptors}"
                )
        if self.tls:
            from paxos_commit.certs import local_certs

            local_certs(
                self.certs_dir, self.n_acceptors, [f"coordinator-{i}" for i in range(self.n_coordinators)]
            )
        try:
            for i in range(self.n_acceptors):
                args = ["acceptor", "--id", str(i), "--listen", f"127.0.0.1:{self._port(i)}"]
                args += self._security_args()
                args += ["--metrics-port", str(self._port(200 + i))]
                if self.acceptor_urls is not None:
                    args += ["--db", self.acceptor_urls[i]]
                else:
                    args += ["--data-dir", str(self.data_dir / f"acceptor-{i}")]
                if fresh:
                    args.append("--init")
                args += self.acceptor_args
                self.acceptors.append(self._process(f"acceptor-{i}", args))
            for p in self.acceptors:
                p.start(self.extra_env)
            for p in self.acceptors:
                p.wait_ready()
            if fresh:
                marker.write_text(json.dumps({"acceptors": self.n_acceptors}))
            for i in range(self.n_coordinators):
                self.coordinators.append(self._process(f"coordinator-{i}", self._coordinator_args(i)))
            for p in self.coordinators:
                p.start(self.extra_env)
            for p in self.coordinators:
                p.wait_ready()
        except BaseException:
            self.stop()
            raise

    def _coordinator_args(self, i: int) -> list[str]:
        return [
            "coordinator",
            "--name",
            f"coordinator-{i}",
            "--listen",
            f"127.0.0.1:{self._port(100 + i)}",
            "--metrics-port",
            str(self._port(300 + i)),
            "--acceptors",
            ",".join(self.acceptor_addresses),
            "--vote-timeout",
            str(self.vote_timeout),
            "--recovery-timeout",
            str(self.recovery_timeout),
            "--recovery-interval",
            str(self.recovery_interval),
            "--txn-timeout",
            str(self.txn_timeout),
            *self._security_args(),
            *self.coordinator_args,
        ]

    def _process(self, name: str, args: list[str]) -> ServiceProcess:
        if self.trace_dir is not None:
            args = ["--trace-file", str(Path(self.trace_dir) / f"{name}.ndjson"), *args]
        return ServiceProcess(
            name,
            args,
            port_file=self.data_dir / "run" / f"{name}.json",
            log_file=self.data_dir / "logs" / f"{name}.log",
        )

    def restart(self, proc: ServiceProcess, *, same_port: bool = True) -> None:
        """Start a stopped or killed process again, on its old ports by default."""
        proc.stop()
        if same_port and proc.address:
            proc.args = [*proc.args]
            i = proc.args.index("--listen")
            proc.args[i + 1] = f"127.0.0.1:{proc.address.rsplit(':', 1)[1]}"
            if proc.metrics_port:
                proc.args[proc.args.index("--metrics-port") + 1] = str(proc.metrics_port)
        if "--init" in proc.args:
            proc.args.remove("--init")  # a restarted acceptor must find its state
        proc.start(self.extra_env)
        proc.wait_ready()

    def stop(self) -> None:
        if self.attached:
            return
        for p in [*self.coordinators, *self.acceptors]:
            p.stop()

    @classmethod
    def attach(cls, data_dir: Path) -> LocalCluster:
        """The running cluster of ``paxos-commit up --data-dir data_dir``: addresses and
        pids from its port files. Stopping it is up's job, not the caller's."""
        run = Path(data_dir).resolve() / "run"
        if not run.is_dir():
            raise ClusterError(f"no running cluster in {data_dir} (start one with paxos-commit up)")
        found: dict[str, list[ServiceProcess]] = {"acceptor": [], "coordinator": []}
        tls = True
        for kind in found:
            for f in sorted(run.glob(f"{kind}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
                info = json.loads(f.read_text())
                proc = ServiceProcess(f.stem, [], f, Path(data_dir) / "logs" / f"{f.stem}.log")
                proc.address, proc.metrics_port, proc.attached_pid = (
                    info["address"],
                    info.get("metrics_port"),
                    info["pid"],
                )
                found[kind].append(proc)
                tls = tls and bool(info.get("tls", False))
        if not found["acceptor"] or not found["coordinator"]:
            raise ClusterError(f"{run} names no acceptors or no coordinators")
        cluster = cls(
            data_dir, n_acceptors=len(found["acceptor"]), n_coordinators=len(found["coordinator"]), tls=tls
        )
        cluster.acceptors, cluster.coordinators = found["acceptor"], found["coordinator"]
        cluster.attached = True
        return cluster

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
