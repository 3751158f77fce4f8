"""Fixtures for tests with real processes: a local cluster per test, on SQLite and, when
``PAXOS_COMMIT_TEST_PG`` names a Postgres server (``.ci/run`` sets it), on Postgres."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from paxos_commit.cluster import LocalCluster

PG_DSN = os.environ.get("PAXOS_COMMIT_TEST_PG", "")


def _pg_urls(n: int) -> Iterator[list[str]]:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    names = [f"pc_test_{uuid.uuid4().hex[:10]}_{i}" for i in range(n)]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    info = conninfo_to_dict(PG_DSN)
    try:
        yield [
            "postgresql+psycopg://"
            + f"{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
            for name in names
        ]
    finally:
        with psycopg.connect(make_conninfo(PG_DSN), autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not PG_DSN:
        pytest.skip("set PAXOS_COMMIT_TEST_PG to a Postgres DSN to run acceptors on Postgres")
    return str(request.param)


@pytest.fixture
def storage_urls(backend: str, tmp_path: Path) -> Iterator[list[str] | None]:
    """Storage for 3 acceptors: None (SQLite under the cluster's data dir) or Postgres."""
    if backend == "sqlite":
        yield None
    else:
        yield from _pg_urls(3)


def make_cluster(
    tmp_path: Path, storage_urls: list[str] | None, *, tls: bool = False, **options: float
) -> LocalCluster:
    """A cluster for one test. Plain text by default (the protocol tests, fast); the
    security tests (test_security.py) run theirs with TLS and per-role certificates."""
    settings: dict[str, float] = {
        "vote_timeout": 1.5,
        "recovery_timeout": 1.5,
        "recovery_interval": 0.3,
        **options,
    }
    return LocalCluster(
        tmp_path / "cluster",
        n_acceptors=3,
        n_coordinators=2,
        acceptor_urls=storage_urls,
        vote_timeout=settings["vote_timeout"],
        recovery_timeout=settings["recovery_timeout"],
        recovery_interval=settings["recovery_interval"],
        tls=tls,
    )


@pytest.fixture
def cluster(tmp_path: Path, storage_urls: list[str] | None) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path, storage_urls)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
async def channels() -> AsyncIterator[object]:
    from rm_sdk._channels import Channels

    ch = Channels()
    yield ch
    await ch.close()


@pytest.fixture
async def servicer(tmp_path: Path) -> AsyncIterator[object]:
    """An acceptor's stream handler on a fresh SQLite store (driven directly, no server)."""
    from acceptor.service import AcceptorServicer
    from acceptor.storage import AcceptorStore, sqlite_url

    store = AcceptorStore(sqlite_url(tmp_path / "acc.db"), 0, init=True)
    await store.start()
    try:
        yield AcceptorServicer(store)
    finally:
        await store.close()
