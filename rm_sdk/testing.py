"""Test helpers for applications: a whole Paxos Commit cluster inside the test process.

::

    async with InProcessCluster(acceptors=3) as cluster:
        async with Client(cluster.coordinators) as client:
            ...

Acceptors and coordinators run as asyncio gRPC servers in the calling process and event
loop, on ``127.0.0.1`` port 0, with SQLite in a temporary folder removed on exit. With
``tls=True`` they serve mTLS with certificates from a CA made in that folder, and
``cluster.credentials(role, name)`` gives clients theirs::

    async with InProcessCluster(tls=True) as cluster:
        async with Client(cluster.coordinators, credentials=cluster.credentials("app", "test")) as client:
            ...

This
needs the service code: install ``paxos-commit[server]`` (the ``server`` extra); the
services are imported only when a cluster starts.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from types import TracebackType

import grpc

__all__ = ["InProcessCluster"]


class InProcessCluster:
    """2F+1 acceptors and some coordinator replicas in this process, for tests.

    ``cluster.acceptors`` and ``cluster.coordinators`` are their addresses once entered.
    Timeouts are short by default so that recovery shows up within a test's patience."""

    def __init__(
        self,
        acceptors: int = 3,
        coordinators: int = 1,
        *,
        vote_timeout: float = 2.0,
        recovery_timeout: float = 3.0,
        recovery_interval: float = 0.5,
        txn_timeout: float = 60.0,
        data_dir: Path | str | None = None,
        tls: bool = False,
    ) -> None:
        if acceptors < 1 or acceptors % 2 == 0:
            raise ValueError(f"acceptors must be 2F+1 (odd), got {acceptors}")
        if coordinators < 1:
            raise ValueError("need at least one coordinator")
        self.n_acceptors = acceptors
        self.n_coordinators = coordinators
        self.vote_timeout = vote_timeout
        self.recovery_timeout = recovery_timeout
        self.recovery_interval = recovery_interval
        self.txn_timeout = txn_timeout
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self.tls = tls
        self._certs: Path | None = None
        #: Acceptor addresses (``host:port``), in acceptor id order.
        self.acceptors: list[str] = []
        #: Coordinator replica addresses (``host:port``).
        self.coordinators: list[str] = []
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> InProcessCluster:
        from acceptor.service import serve_acceptor
        from acceptor.storage import sqlite_url
        from coordinator.service import CoordinatorConfig, serve_coordinator

        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._data_dir is None:
                root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="paxos-commit-test-")))
            else:
                root = self._data_dir
                root.mkdir(parents=True, exist_ok=True)
            coordinator_tls = None
            if self.tls:
                from paxos_commit.certs import TlsFiles, local_certs

                self._certs = root / "certs"
                local_certs(self._certs, self.n_acceptors, ["coordinator"])
                coordinator_tls = TlsFiles.in_dir(self._certs, "coordinator", "coordinator")
            for i in range(self.n_acceptors):
                url = sqlite_url(root / f"acceptor-{i}.db")
                acceptor_tls = TlsFiles.in_dir(self._certs, "acceptor", str(i)) if self._certs else None
                handle = await stack.enter_async_context(serve_acceptor(i, url, init=True, tls=acceptor_tls))
                self.acceptors.append(handle.address)
            config = CoordinatorConfig(
                acceptors=list(self.acceptors),
                vote_timeout=self.vote_timeout,
                recovery_timeout=self.recovery_timeout,
                recovery_interval=self.recovery_interval,
                txn_timeout=self.txn_timeout,
                tls=coordinator_tls,
            )
            for _ in range(self.n_coordinators):
                handle = await stack.enter_async_context(serve_coordinator(config))
                self.coordinators.append(handle.address)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    def credentials(self, role: str, name: str) -> grpc.ChannelCredentials | None:
        """Client credentials for ``role``/``name`` (e.g. ``("app", "test")``, ``("rm",
        rm_id)``) from the cluster's CA, or None without TLS. Call once entered."""
        if self._certs is None:
            return None
        from paxos_commit.certs import ensure_cert

        return ensure_cert(self._certs, role, name).channel_credentials()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self.acceptors, self.coordinators = [], []
