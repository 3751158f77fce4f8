"""Collection on a real acceptor store (SQLite, and Postgres with PAXOS_COMMIT_TEST_PG):
a decided transaction every RM acknowledged is collected in the background; late and
duplicated messages for it are answered from the compact outcome record and create no
instance state (DESIGN.md pitfall 8, spec ``Collect`` / ``AnswerFromRecord``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from acceptor import core
from acceptor.collect import Collector, CollectorConfig
from acceptor.storage import AcceptorStore, TxnRecord, collected_table, instance_table, sqlite_url, txn_table
from rm_sdk import Client, Participant, RMState
from rm_sdk.core.messages import BundleRequest, Phase1a, Phase2a, RecordOutcome
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Ballot, Outcome, RMSet, Vote
from rm_sdk.testing import InProcessCluster
from tests.integration.helpers import ScriptedRM, wait_until


def _url(storage_urls: list[str] | None, tmp_path: Path) -> str:
    return storage_urls[0] if storage_urls else sqlite_url(tmp_path / "acc.db")


async def _step(store: AcceptorStore, txn: str, handler: Any) -> core.Step:
    now = store.now_ms()

    def fn(rec: TxnRecord | None) -> tuple[TxnRecord | None, core.Step]:
        out: core.Step = handler(rec, now)
        return out.record, out

    return await store.apply(txn, fn)


def _rows(store: AcceptorStore, txn: str) -> tuple[int, int, int]:
    engine = store._require_engine()
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.txn_id == txn)).scalar_one()
            for t in (txn_table, instance_table, collected_table)
        )


async def _decide(store: AcceptorStore, txn: str, acked: frozenset[str]) -> None:
    ab = frozenset({"a", "b"})
    await _step(
        store, txn, lambda r, n: core.phase2a(0, r, Phase2a(txn, RM_BALLOT, {REGISTRAR: RMSet.of(ab)}), n)
    )
    for rm in sorted(ab):
        await _step(
            store,
            txn,
            lambda r, n, rm=rm: core.phase2a(0, r, Phase2a(txn, RM_BALLOT, {rm: Vote.PREPARED}), n),
        )
    await _step(
        store,
        txn,
        lambda r, n: core.record_outcome(0, r, RecordOutcome(txn, Outcome.COMMITTED, ab, acked), n),
    )


async def _late_messages(store: AcceptorStore, txn: str) -> None:
    """A late ballot-0 vote, a late 1a, a late 2a and a bundle read (what a coordinator's
    GetOutcome asks the acceptors): each answered from the record, nothing written."""
    replies = [
        await _step(
            store, txn, lambda r, n: core.phase2a(0, r, Phase2a(txn, RM_BALLOT, {"a": Vote.ABORTED}), n)
        ),
        await _step(store, txn, lambda r, n: core.phase1a(0, r, Phase1a(txn, Ballot(5, "x"), ("a", "b")), n)),
        await _step(
            store, txn, lambda r, n: core.phase2a(0, r, Phase2a(txn, Ballot(5, "x"), {"a": Vote.ABORTED}), n)
        ),
    ]
    for out in replies:
        assert out.record is None
        assert out.reply.outcome is Outcome.COMMITTED and out.reply.states == {}
        assert [e.name for e in out.trace] == ["AnswerFromRecord"]
    b = core.bundle(0, await store.read(txn), BundleRequest(txn), store.now_ms())
    assert b.outcome is Outcome.COMMITTED and b.states == {}
    assert _rows(store, txn) == (0, 0, 1)


async def test_collected_transactions_answer_late_messages_from_the_record(
    storage_urls: list[str] | None, tmp_path: Path
) -> None:
    url = _url(storage_urls, tmp_path)
    store = AcceptorStore(url, 0, init=True)
    await store.start()
    collector = Collector(store, CollectorConfig(retention=3600))
    try:
        await _decide(store, "done", frozenset({"a", "b"}))
        await _decide(store, "waiting", frozenset({"a"}))  # b never acknowledged
        assert _rows(store, "done") == (1, 3, 0)
        await collector.collect_once()
        assert _rows(store, "done") == (0, 0, 1)
        assert _rows(store, "waiting") == (1, 3, 0)  # an RM that never comes back keeps it live
        st = collector.stats
        assert (st.live, st.collectable, st.records, st.collected_total) == (1, 0, 1, 1)
        assert st.oldest_unacked_ms >= 0 and st.db_bytes > 0
        await _late_messages(store, "done")
    finally:
        await store.close()
    # After a restart (no cache), the record on disk answers.
    store = AcceptorStore(url, 0)
    await store.start()
    try:
        await _late_messages(store, "done")
        # The late acknowledgement makes the waiting one collectable.
        await _step(
            store,
            "waiting",
            lambda r, n: core.record_outcome(
                0, r, RecordOutcome("waiting", Outcome.COMMITTED, None, frozenset({"b"})), n
            ),
        )
        await Collector(store).collect_once()
        assert _rows(store, "waiting") == (0, 0, 1)
    finally:
        await store.close()


async def test_records_expire_after_the_retention_and_sqlite_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "acc.db"
    store = AcceptorStore(sqlite_url(path), 0, init=True)
    await store.start()
    collector = Collector(store, CollectorConfig(retention=0.0, batch=64))
    try:
        await collector.start()  # converts to incremental auto-vacuum if needed
        engine = store._require_engine()
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # type: ignore[union-attr]
        await collector.close()
        for i in range(300):
            await _decide(store, f"t{i}", frozenset({"a", "b"}))
        full = collector.stats.db_bytes or path.stat().st_size
        while await collector.collect_once():
            pass
        await collector.collect_once()  # the records collected last expire now (retention 0)
        st = await collector.refresh_stats()
        assert (st.live, st.records, st.instances) == (0, 0, 0)
        assert st.expired_total == 300
        with engine.connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            freelist = raw.execute("PRAGMA freelist_count").fetchone()[0]
        assert freelist < 50, f"{freelist} free pages left in the file"
        assert path.stat().st_size <= full
    finally:
        await store.close()


@pytest.mark.timeout(120)
async def test_a_committed_transaction_is_collected_on_every_acceptor(tmp_path: Path) -> None:
    """End to end: two RMs apply, acknowledge; the owner records outcome + acks; every
    acceptor collects; a later GetOutcome (from a replica that never saw the transaction)
    is answered from the acceptors' records."""
    async with InProcessCluster(acceptors=3, coordinators=2, data_dir=tmp_path) as cluster:
        rms = [Participant(ScriptedRM(f"rm{i}"), cluster.coordinators[:1]) for i in range(2)]
        async with Client(cluster.coordinators[:1]) as client:
            txn = await client.begin()
            for rm in rms:
                await rm.join(txn.context)
            assert await txn.commit(wait_applied=True) is Outcome.COMMITTED
            assert txn.applied
        for rm in rms:
            await rm.close()
        for _ in range(60):
            counts = []
            for i in range(3):
                eng = sa.create_engine(sqlite_url(tmp_path / f"acceptor-{i}.db"))
                with eng.connect() as conn:
                    counts.append(
                        (
                            conn.execute(sa.select(sa.func.count()).select_from(txn_table)).scalar_one(),
                            conn.execute(
                                sa.select(sa.func.count()).select_from(collected_table)
                            ).scalar_one(),
                        )
                    )
                eng.dispose()
            if counts == [(0, 1)] * 3:
                break
            await asyncio.sleep(0.25)
        assert counts == [(0, 1)] * 3
        async with Client(cluster.coordinators[1:]) as other:
            outcome, _ = await other.outcome(txn.txn_id, wait=5)
            assert outcome is Outcome.COMMITTED


async def test_an_acceptor_file_from_before_collection_is_migrated(tmp_path: Path) -> None:
    """Migration 0002 on a file made at revision 0001 (auto_vacuum NONE): its rows stay,
    the new columns and table appear, and the file is converted to incremental
    auto-vacuum once at start."""
    from acceptor.migrations import upgrade

    path = tmp_path / "old.db"
    eng = sa.create_engine(sqlite_url(path))
    upgrade(eng, "0001")
    with eng.begin() as conn:
        conn.exec_driver_sql("INSERT INTO acceptor_meta (key, value) VALUES ('acceptor_id', '0')")
        conn.exec_driver_sql(
            "INSERT INTO paxos_txn (txn_id, first_seen_ms, outcome) VALUES ('old', 1, 'committed')"
        )
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 0
    eng.dispose()
    store = AcceptorStore(sqlite_url(path), 0)
    await store.start()
    collector = Collector(store)
    try:
        await collector.start()
        rec = await store.read("old")
        assert rec is not None and rec.outcome is Outcome.COMMITTED and rec.participants is None
        assert not core.collectable(rec)  # no set known: stays (visible), never dropped
        with store._require_engine().connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    finally:
        await collector.close()
        await store.close()


async def test_txns_lists_a_transaction_an_rm_never_acknowledged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from paxos_commit.cli import main

    url = sqlite_url(tmp_path / "acc.db")
    store = AcceptorStore(url, 0, init=True)
    await store.start()
    try:
        await _decide(store, "waiting", frozenset({"a"}))
    finally:
        await store.close()
    capsys.readouterr()
    assert main(["txns", "--db", url, "--unacknowledged", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["txn_id"] == "waiting" and row["unacknowledged"] == ["b"] and not row["collectable"]


class _SlowApply(ScriptedRM):
    """An RM whose commit waits until the test lets it apply."""

    def __init__(self, rm_id: str) -> None:
        super().__init__(rm_id)
        self.apply = asyncio.Event()

    async def commit(self, txn_id: str) -> None:
        await self.apply.wait()
        await super().commit(txn_id)


def _acceptor_rows(cluster: Any, txn_id: str) -> list[tuple[int, int]]:
    """Per acceptor: (live transaction rows, compact records) of ``txn_id``."""
    out = []
    for i in range(len(cluster.acceptors)):
        eng = sa.create_engine(sqlite_url(cluster.data_dir / f"acceptor-{i}" / f"acceptor-{i}.db"))
        try:
            with eng.connect() as conn:
                live = conn.execute(
                    sa.select(sa.func.count()).select_from(txn_table).where(txn_table.c.txn_id == txn_id)
                ).scalar_one()
                kept = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(collected_table)
                    .where(collected_table.c.txn_id == txn_id)
                ).scalar_one()
        finally:
            eng.dispose()
        out.append((live, kept))
    return out


@pytest.mark.timeout(120)
async def test_acks_held_by_an_owner_that_crashes_are_not_lost(tmp_path: Path) -> None:
    """The owner holds the first RM's ack (it waits for the second's, up to its ack wait)
    and is killed. That ack was not answered, so the RM sends it again to the other
    replica, which passes it on; the second RM's ack goes there too, the other replica's
    recovery scan records the outcome, and every acceptor collects the transaction. (When
    the owner answered acks from memory, the first one was lost with it and the
    transaction stayed live for ever.)"""
    from tests.integration.conftest import make_cluster

    cluster = make_cluster(tmp_path, None)
    cluster.start()
    try:
        coords = cluster.coordinator_addresses
        fast, slow = ScriptedRM("fast"), _SlowApply("slow")
        pf = Participant(fast, coords)
        ps = Participant(slow, coords)
        async with Client(coords[:1]) as client:
            txn = await client.begin()
            await pf.join(txn.context)
            await ps.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED
        await wait_until(lambda: txn.txn_id in fast.committed, what="the fast RM applied")
        await asyncio.sleep(0.3)  # the fast RM's ack is at the owner, held for the slow one
        assert not any(kept for _, kept in _acceptor_rows(cluster, txn.txn_id))
        owner = next(p for p in cluster.coordinators if p.address == txn.context.coordinator)
        owner.kill()
        slow.apply.set()
        assert await asyncio.wait_for(ps.wait(txn.txn_id), 30) is RMState.COMMITTED
        for _ in range(120):
            rows = _acceptor_rows(cluster, txn.txn_id)
            if rows == [(0, 1)] * 3:
                break
            await asyncio.sleep(0.25)
        assert rows == [(0, 1)] * 3, f"(live, collected) per acceptor: {rows}"
        await pf.close()
        await ps.close()
    finally:
        cluster.stop()
