"""The acceptor store: durable before reply, group commit, refuses to start blank."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from acceptor.rules import phase1b, phase2b
from acceptor.storage import AcceptorStore, StorageError, TxnRecord, sqlite_url
from rm_sdk.protocol import RM_BALLOT, Ballot, ConflictError, InstanceState, RMSet, Vote


def _url(storage_urls: list[str] | None, tmp_path: Path) -> str:
    return storage_urls[0] if storage_urls else sqlite_url(tmp_path / "acc.db")


def _vote(rm: str, val: Vote):  # type: ignore[no-untyped-def]
    def step(rec: TxnRecord | None) -> tuple[TxnRecord, InstanceState]:
        base = rec or TxnRecord(first_seen_ms=1)
        st = phase2b(base.instances.get(rm, InstanceState()), RM_BALLOT, val)
        return replace(base, instances={**base.instances, rm: st}), st

    return step


async def test_group_commit_batches_concurrent_steps_and_state_survives_reopen(
    storage_urls: list[str] | None, tmp_path: Path
) -> None:
    url = _url(storage_urls, tmp_path)
    store = AcceptorStore(url, 0, init=True)
    batches: list[int] = []
    store.on_batch.append(lambda size, _secs: batches.append(size))
    await store.start()
    n = 300
    await asyncio.gather(*(store.apply(f"t{i}", _vote("rm", Vote.PREPARED)) for i in range(n)))
    assert sum(batches) == n
    assert len(batches) < n / 3, f"{len(batches)} storage transactions for {n} concurrent steps"
    await store.close()

    again = AcceptorStore(url, 0)  # no init: the state must be there
    await again.start()
    for i in (0, n // 2, n - 1):
        rec = await again.read(f"t{i}")
        assert rec is not None and rec.instances["rm"].val is Vote.PREPARED
    assert await again.read("never") is None
    await again.close()


async def test_refused_step_changes_nothing(storage_urls: list[str] | None, tmp_path: Path) -> None:
    store = AcceptorStore(_url(storage_urls, tmp_path), 0, init=True)
    await store.start()
    await store.apply("t", _vote("rm", Vote.PREPARED))
    with pytest.raises(ConflictError):
        await store.apply("t", _vote("rm", Vote.ABORTED))
    rec = await store.read("t")
    assert rec is not None and rec.instances["rm"].val is Vote.PREPARED

    def promise(rec: TxnRecord | None) -> tuple[TxnRecord, None]:
        assert rec is not None
        st = phase1b(rec.instances["rm"], Ballot(3, "L"))
        reg = InstanceState(bal=RM_BALLOT, val=RMSet.of(["rm"]))
        return replace(rec, instances={**rec.instances, "rm": st, "@registrar": reg}), None

    await store.apply("t", promise)
    await store.close()
    again = AcceptorStore(_url(storage_urls, tmp_path), 0)
    await again.start()
    rec = await again.read("t")
    assert rec is not None
    assert rec.instances["rm"].mbal == Ballot(3, "L") and rec.instances["rm"].val is Vote.PREPARED
    assert rec.instances["@registrar"].val == RMSet.of(["rm"])
    await again.close()


async def test_refuses_to_start_blank_or_as_another_acceptor(
    storage_urls: list[str] | None, tmp_path: Path
) -> None:
    url = _url(storage_urls, tmp_path)
    with pytest.raises(StorageError, match="refusing to start blank"):
        await AcceptorStore(url, 0).start()
    first = AcceptorStore(url, 0, init=True)
    await first.start()
    await first.close()
    with pytest.raises(StorageError, match="belongs to acceptor 0"):
        await AcceptorStore(url, 1).start()


async def test_the_writer_keeps_one_connection_and_replaces_one_that_died_idle(
    storage_urls: list[str] | None, tmp_path: Path
) -> None:
    """Batches reuse the writer's connection; one that died between batches (a database
    restart, a closed socket) is replaced and the batch runs on the new one, once."""
    url = _url(storage_urls, tmp_path)
    store = AcceptorStore(url, 0, init=True)
    await store.start()
    await store.apply("t1", _vote("rm", Vote.PREPARED))
    first = store._conn
    await store.apply("t2", _vote("rm", Vote.PREPARED))
    assert first is not None and store._conn is first, "a connection per batch"
    # Kill it under the store: the next batch fails on it, is run again on a new one.
    if url.startswith("sqlite"):
        dbapi = first.connection.dbapi_connection
        assert dbapi is not None
        dbapi.close()
    else:
        pid = first.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        first.rollback()
        import sqlalchemy as sa

        killer = sa.create_engine(url)
        with killer.connect() as k:
            k.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        killer.dispose()
    await store.apply("t3", _vote("rm", Vote.PREPARED))
    assert store._conn is not None and store._conn is not first
    await store.close()
    again = AcceptorStore(url, 0)
    await again.start()
    for t in ("t1", "t2", "t3"):
        rec = await again.read(t)
        assert rec is not None and rec.instances["rm"].val is Vote.PREPARED, t
    await again.close()


async def test_a_failed_batch_never_reuses_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other failure reaches the callers at once (no rerun) and drops the connection
    (its state is unknown); a disconnect seen twice in a row is not retried again."""
    import sqlalchemy as sa

    store = AcceptorStore(sqlite_url(tmp_path / "acc.db"), 0, init=True)
    await store.start()
    await store.apply("t0", _vote("rm", Vote.PREPARED))
    runs: list[bool] = []
    real = store._run_batch_on

    def failing(invalidated: bool, times: int):  # type: ignore[no-untyped-def]
        def run(conn, batch):  # type: ignore[no-untyped-def]
            runs.append(invalidated)
            if len(runs) <= times:
                raise sa.exc.OperationalError(
                    "COMMIT", {}, Exception("boom"), connection_invalidated=invalidated
                )
            return real(conn, batch)

        return run

    monkeypatch.setattr(store, "_run_batch_on", failing(False, 1))
    used = store._conn
    with pytest.raises(sa.exc.OperationalError):
        await store.apply("t1", _vote("rm", Vote.PREPARED))
    assert runs == [False] and store._conn is None and used is not None and used.closed
    runs.clear()
    monkeypatch.setattr(store, "_run_batch_on", failing(True, 2))
    with pytest.raises(sa.exc.OperationalError):
        await store.apply("t1", _vote("rm", Vote.PREPARED))
    assert runs == [True, True], "a disconnect is retried once, not more"
    runs.clear()
    monkeypatch.setattr(store, "_run_batch_on", failing(True, 1))
    await store.apply("t1", _vote("rm", Vote.PREPARED))
    assert runs == [True, True]
    assert await store.read("t1") is not None
    await store.close()


def test_head_is_alembics_newest_revision() -> None:
    """``HEAD`` lets a store at it skip Alembic: it must be what Alembic would migrate to."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from acceptor.migrations import HEAD, HERE

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD]


_OPEN_AND_REPORT = """
import asyncio, json, sys
import sqlalchemy as sa
from acceptor.migrations import at_head
from acceptor.storage import AcceptorStore

async def main(url):
    store = AcceptorStore(url, 0)
    await store.start()
    await store.close()
    with sa.create_engine(url).connect() as conn:
        print(json.dumps({"alembic": "alembic" in sys.modules, "at_head": at_head(conn)}))

asyncio.run(main(sys.argv[1]))
"""


def _open_in_a_new_process(url: str) -> dict[str, bool]:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_REPORT, url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def test_a_store_at_head_starts_without_alembic_and_an_older_one_is_migrated(
    storage_urls: list[str] | None, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    url = _url(storage_urls, tmp_path)
    store = AcceptorStore(url, 0, init=True)
    await store.start()
    await store.apply("t1", _vote("rm", Vote.PREPARED))
    await store.close()
    assert _open_in_a_new_process(url) == {"alembic": False, "at_head": True}

    # The same store taken back to revision 0001 (as if made by an older release): the
    # next start migrates it, and its rows stay.
    from alembic import command
    from alembic.config import Config

    from acceptor.migrations import HERE

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    eng.dispose()
    assert _open_in_a_new_process(url) == {"alembic": True, "at_head": True}
    again = AcceptorStore(url, 0)
    await again.start()
    try:
        rec = await again.read("t1")
        assert rec is not None and rec.instances["rm"].val is Vote.PREPARED
    finally:
        await again.close()
