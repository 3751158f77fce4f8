"""The Postgres resource manager with real prepared transactions (needs
``PAXOS_COMMIT_TEST_PG`` and ``max_prepared_transactions > 0``; ``.ci/run`` sets both).

Each test gets two fresh databases; every prepared transaction left in them is rolled
back in teardown, and the session fails if any was left (prepared transactions survive
restarts and hold their locks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Outcome, Participant, RMRefused, RMState, TransactionAborted
from rm_sdk._channels import Channels
from rm_sdk.postgres import PostgresRM, gid
from rm_sdk.protocol import RM_BALLOT
from tests.integration.conftest import make_cluster
from tests.integration.helpers import ScriptedRM, acceptor_states, wait_until

PG_DSN = os.environ.get("PAXOS_COMMIT_TEST_PG", "")
PREFIX = "pc_rmtest_"
pytestmark = pytest.mark.skipif(not PG_DSN, reason="set PAXOS_COMMIT_TEST_PG to a Postgres DSN")

#: Prepared transactions found left over in teardown: the session fails if any.
LEFTOVERS: list[str] = []


def _rollback_leftovers(dbname_like: str) -> list[str]:
    """ROLLBACK PREPARED every prepared transaction in matching databases; their gids."""
    found: list[str] = []
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT gid, database FROM pg_prepared_xacts WHERE database LIKE %s", (dbname_like,)
        ).fetchall()
    for g, database in rows:
        with psycopg.connect(make_conninfo(PG_DSN, dbname=database), autocommit=True) as conn:
            conn.tpc_rollback(g)
        found.append(f"{database}:{g}")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_prepared_transactions_left() -> Iterator[None]:
    yield
    if not PG_DSN:
        return
    LEFTOVERS.extend(_rollback_leftovers(PREFIX + "%"))
    assert not LEFTOVERS, f"prepared transactions were left over: {LEFTOVERS}"


@pytest.fixture(scope="module")
def databases() -> Iterator[tuple[str, str]]:
    """Two databases for this module (CREATE/DROP DATABASE take seconds each)."""
    names = [f"{PREFIX}{uuid.uuid4().hex[:8]}_{x}" for x in "ab"]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(PG_DSN, dbname=names[0]), make_conninfo(PG_DSN, dbname=names[1])
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for name in names:
                LEFTOVERS.extend(_rollback_leftovers(name))
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dbs(databases: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """Fresh ``accounts`` tables: alice 100 in the first database, bob 0 in the second.
    Prepared transactions left by the test are rolled back (and fail the session)."""
    for dsn, (who, balance) in zip(databases, [("alice", 100), ("bob", 0)], strict=True):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS accounts, audit")
            conn.execute(
                "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0))"
            )
            conn.execute("INSERT INTO accounts VALUES (%s, %s)", (who, balance))
    yield databases
    for dsn in databases:
        with psycopg.connect(dsn, autocommit=True) as conn:
            database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        LEFTOVERS.extend(_rollback_leftovers(database[0]))


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path_factory.mktemp("pgrm"), None)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def balance(dsn: str, name: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT balance FROM accounts WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def prepared_gids(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
            ).fetchall()
        ]


def row_locked(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute("SELECT 1 FROM accounts WHERE name = %s FOR UPDATE NOWAIT", (name,))
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            conn.rollback()
    return False


async def voted(acceptors: list[str], txn_id: str, rm_id: str) -> bool:
    channels = Channels()
    try:
        states = [await acceptor_states(channels, a, txn_id) for a in acceptors]
    finally:
        await channels.close()
    return sum(rm_id in s and s[rm_id].bal == RM_BALLOT for s in states) > len(acceptors) // 2


async def transfer(rm_a: PostgresRM, rm_b: PostgresRM, client: Client, amount: int) -> str:
    txn = await client.begin()
    try:
        async with rm_a.work(txn.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance - %s WHERE name = 'alice'", (amount,))
        async with rm_b.work(txn.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance + %s WHERE name = 'bob'", (amount,))
    except Exception:
        await txn.abort("a service failed")
        raise
    await txn.commit()
    return txn.txn_id


@contextlib.asynccontextmanager
async def rms(dsns: tuple[str, str], cluster: LocalCluster) -> AsyncIterator[tuple[PostgresRM, PostgresRM]]:
    coords, accs = cluster.coordinator_addresses, cluster.acceptor_addresses
    a = PostgresRM(dsns[0], "pg-a", coords, acceptors=accs, recovery_timeout=1.0)
    b = PostgresRM(dsns[1], "pg-b", coords, acceptors=accs, recovery_timeout=1.0)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_commit_and_abort_across_two_databases(
    dbs: tuple[str, str], shared_cluster: LocalCluster
) -> None:
    async with rms(dbs, shared_cluster) as (a, b), Client(shared_cluster.coordinator_addresses) as client:
        txn_id = await transfer(a, b, client, 30)
        assert await a.participant.wait(txn_id) is RMState.COMMITTED
        assert await b.participant.wait(txn_id) is RMState.COMMITTED
        assert (balance(dbs[0], "alice"), balance(dbs[1], "bob")) == (70, 30)

        # More than alice has: the CHECK fails in the work block, so pg-a votes no.
        with pytest.raises(psycopg.errors.CheckViolation):
            await transfer(a, b, client, 500)
        # The application aborts: work in both databases rolls back.
        txn = await client.begin()
        async with a.work(txn.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance - 5 WHERE name = 'alice'")
        async with b.work(txn.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance + 5 WHERE name = 'bob'")
        assert await txn.abort() is Outcome.ABORTED
        assert await a.participant.wait(txn.txn_id) is RMState.ABORTED
        assert await b.participant.wait(txn.txn_id) is RMState.ABORTED
        # A refusal at prepare (a deferred constraint fails at PREPARE) aborts everywhere.
        for dsn in dbs:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE audit (n INT UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        txn = await client.begin()
        async with a.work(txn.context) as conn:
            await conn.execute("INSERT INTO audit VALUES (1), (1)")
        async with b.work(txn.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance + 5 WHERE name = 'bob'")
        with pytest.raises(TransactionAborted) as info:
            await txn.commit()
        assert "pg-a" in info.value.reason
        assert await b.participant.wait(txn.txn_id) is RMState.ABORTED
        assert (balance(dbs[0], "alice"), balance(dbs[1], "bob")) == (70, 30)
        assert prepared_gids(dbs[0]) == [] and prepared_gids(dbs[1]) == []


async def test_outcome_redelivered_is_applied_once(
    dbs: tuple[str, str], shared_cluster: LocalCluster
) -> None:
    async with rms(dbs, shared_cluster) as (a, b), Client(shared_cluster.coordinator_addresses) as client:
        txn_id = await transfer(a, b, client, 10)
        for _ in range(2):  # while the participants may still be applying it too
            await a.commit(txn_id)
            await b.commit(txn_id)
        assert await a.participant.wait(txn_id) is RMState.COMMITTED
        assert await b.participant.wait(txn_id) is RMState.COMMITTED
        await a.abort(txn_id)  # a stray abort for a finished gid is a no-op as well
        assert (balance(dbs[0], "alice"), balance(dbs[1], "bob")) == (90, 10)
    # A database that cannot be reached raises, so the participant retries the outcome.
    down = PostgresRM("host=127.0.0.1 port=1 dbname=none", "pg-down", ["127.0.0.1:1"], connect_timeout=1)
    with pytest.raises(psycopg.OperationalError):
        await down.commit(txn_id)
    await down.close()


async def test_rm_process_killed_after_prepare_finishes_after_restart(
    dbs: tuple[str, str], shared_cluster: LocalCluster
) -> None:
    cluster = shared_cluster
    coords, accs = cluster.coordinator_addresses, cluster.acceptor_addresses
    worker = [sys.executable, str(Path(__file__).with_name("pg_rm_worker.py"))]
    common = [dbs[0], "pg-worker", ",".join(coords), ",".join(accs)]
    gate = ScriptedRM("gate")
    gate.release.clear()
    pg = Participant(gate, coords)
    async with Client(coords, outcome_timeout=30) as client:
        txn = await client.begin()
        proc = await asyncio.create_subprocess_exec(
            *worker, "work", *common, txn.context.token(), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.strip() == b"worked"
            await pg.join(txn.context)
            commit = asyncio.create_task(txn.commit())
            await wait_until(lambda: gid("pg-worker", txn.txn_id) in prepared_gids(dbs[0]), what="PREPARE")
            await wait_until(lambda: voted(accs, txn.txn_id, "pg-worker"), what="the worker's vote")
            assert row_locked(dbs[0], "alice")
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        gate.release.set()
        assert await commit is Outcome.COMMITTED
        # The worker is dead: its prepared transaction still holds alice's row.
        assert prepared_gids(dbs[0]) == [gid("pg-worker", txn.txn_id)] and row_locked(dbs[0], "alice")
        out = await asyncio.to_thread(
            subprocess.run, [*worker, "recover", *common], capture_output=True, timeout=60, check=True
        )
        assert out.stdout.decode().split() == [txn.txn_id, "committed"]
    assert prepared_gids(dbs[0]) == [] and not row_locked(dbs[0], "alice")
    assert balance(dbs[0], "alice") == 110
    await pg.close()


@pytest.mark.parametrize("last_rm_votes", [True, False])
async def test_every_coordinator_killed_rms_ask_the_acceptors(
    dbs: tuple[str, str], tmp_path: Path, last_rm_votes: bool
) -> None:
    """Both databases prepared, then every coordinator is SIGKILLed: the RMs learn the
    outcome from the acceptors (all votes in: commit; the gate never votes: their own
    higher ballot chooses ``aborted`` for it)."""
    cluster = make_cluster(tmp_path, None, recovery_timeout=60.0)
    cluster.start()
    try:
        coords, accs = cluster.coordinator_addresses, cluster.acceptor_addresses
        gate = ScriptedRM("gate")
        gate.release.clear()
        pg = Participant(gate, coords, recovery_timeout=1.0, acceptors=accs)
        async with rms(dbs, cluster) as (a, b), Client(coords, outcome_timeout=5) as client:
            txn = await client.begin()
            async with a.work(txn.context) as conn:
                await conn.execute("UPDATE accounts SET balance = balance - 40 WHERE name = 'alice'")
            async with b.work(txn.context) as conn:
                await conn.execute("UPDATE accounts SET balance = balance + 40 WHERE name = 'bob'")
            await pg.join(txn.context)
            commit = asyncio.create_task(txn.commit())
            await gate.preparing.wait()
            for rm_id in ("pg-a", "pg-b"):
                await wait_until(lambda rm_id=rm_id: voted(accs, txn.txn_id, rm_id), what=f"{rm_id}'s vote")
            for c in cluster.coordinators:
                c.kill()
            if last_rm_votes:
                gate.release.set()
            else:
                await pg.close()
            want = RMState.COMMITTED if last_rm_votes else RMState.ABORTED
            assert await asyncio.wait_for(a.participant.wait(txn.txn_id), 30) is want
            assert await asyncio.wait_for(b.participant.wait(txn.txn_id), 30) is want
            commit.cancel()
            with contextlib.suppress(BaseException):
                await commit
        moved = 40 if last_rm_votes else 0
        assert (balance(dbs[0], "alice"), balance(dbs[1], "bob")) == (100 - moved, moved)
        assert prepared_gids(dbs[0]) == [] and prepared_gids(dbs[1]) == []
        await pg.close()
    finally:
        cluster.stop()


async def test_abort_while_a_statement_waits_on_a_row_lock_does_not_wedge_the_rm(
    dbs: tuple[str, str], shared_cluster: LocalCluster
) -> None:
    """An abort that arrives while the transaction's work block waits for a row lock
    cancels the statement and then closes the connection; the RM keeps working (closing a
    socket another task still waited on used to break the event loop's registration of
    that file descriptor, and the next connection reusing it hung)."""
    coords = shared_cluster.coordinator_addresses
    bank = PostgresRM(dbs[0], "bank-lock", coords, acceptors=shared_cluster.acceptor_addresses)
    async with Client(coords) as client:
        holder = await client.begin()
        async with bank.work(holder.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance - 1 WHERE name = 'alice'")
        waiter = await client.begin()

        async def blocked_update() -> None:
            async with bank.work(waiter.context) as conn:
                await conn.execute("UPDATE accounts SET balance = balance - 2 WHERE name = 'alice'")

        work = asyncio.create_task(blocked_update())
        await wait_until(
            lambda: bank._work.get(waiter.txn_id) is not None and bank._work[waiter.txn_id].lock.locked()
        )
        await asyncio.sleep(0.3)  # the UPDATE is now waiting for holder's row lock
        # Liveness, not speed: without the fix this hung for the connect timeout.
        await asyncio.wait_for(bank.abort(waiter.txn_id), 15)
        with pytest.raises(psycopg.Error):
            await asyncio.wait_for(work, 15)
        conn2 = await asyncio.wait_for(bank.connect(), 15)
        await conn2.close()
        await holder.abort()
        await waiter.abort()
    await bank.participant.wait(holder.txn_id)
    await bank.close()
    assert balance(dbs[0], "alice") == 100 and prepared_gids(dbs[0]) == []


async def test_no_connection_is_opened_per_transaction(
    dbs: tuple[str, str], shared_cluster: LocalCluster
) -> None:
    """200 transfers, each waited until applied at both banks, open no connection beyond
    what the pools hold: bank A on a pool of the application's (connections counted by the
    pool's ``configure`` hook), bank B on the pool it made from a DSN (the pool's own count
    of connection attempts)."""
    coords, accs = shared_cluster.coordinator_addresses, shared_cluster.acceptor_addresses
    opened = 0

    async def count(conn: psycopg.AsyncConnection[TupleRow]) -> None:
        nonlocal opened
        opened += 1

    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
        dbs[0], min_size=2, max_size=6, open=False, kwargs={"autocommit": True}, configure=count
    )
    await pool.open()
    a = PostgresRM(pool, "pg-a", coords, acceptors=accs)
    b = PostgresRM(dbs[1], "pg-b", coords, acceptors=accs, min_size=2, max_size=6)
    try:
        async with Client(coords) as client:
            for _ in range(200):
                txn_id = await transfer(a, b, client, 0)
                assert await a.applied(txn_id) is RMState.COMMITTED
                assert await b.applied(txn_id) is RMState.COMMITTED
        assert opened <= 6, f"bank A's pool opened {opened} connections for 200 transactions"
        b_opened = b.pool.get_stats().get("connections_num", 0)
        assert b_opened <= 6, f"bank B's pool opened {b_opened} connections for 200 transactions"
    finally:
        await a.close()
        await b.close()
        await pool.close()
    assert prepared_gids(dbs[0]) == [] and prepared_gids(dbs[1]) == []


async def test_failed_work_block_aborts_at_once_with_the_rms_reason(
    dbs: tuple[str, str], shared_cluster: LocalCluster
) -> None:
    """The work block at pg-a fails (the CHECK constraint): pg-a votes aborted before it
    is asked to prepare (allowed, pitfall 3), so the transaction is decided without a
    commit (the coordinator's transaction timeout is 120 s) and commit() raises
    RMRefused naming pg-a and the error."""
    async with rms(dbs, shared_cluster) as (a, b), Client(shared_cluster.coordinator_addresses) as client:
        txn = await client.begin()
        async with b.work(txn.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance + 500 WHERE name = 'bob'")
        with pytest.raises(psycopg.errors.CheckViolation):
            async with a.work(txn.context) as conn:
                await conn.execute("UPDATE accounts SET balance = balance - 500 WHERE name = 'alice'")
        assert a.participant.states[txn.txn_id] is RMState.ABORTED
        # Decided without anyone asking to commit or abort.
        outcome, reason = await client.outcome(txn.txn_id, wait=30)
        assert outcome is Outcome.ABORTED and "pg-a" in reason
        # pg-b learns it and rolls its work back, without a commit from the application.
        assert await b.applied(txn.txn_id) is RMState.ABORTED
        with pytest.raises(RMRefused) as info:
            await txn.commit()
        assert info.value.rm_id == "pg-a" and "CheckViolation" in info.value.reason
        # A later block of the same transaction at pg-a is refused too.
        with pytest.raises(RuntimeError):
            async with a.work(txn.context):
                pass
        assert await a.applied(txn.txn_id) is RMState.ABORTED
    assert (balance(dbs[0], "alice"), balance(dbs[1], "bob")) == (100, 0)
    assert prepared_gids(dbs[0]) == [] and prepared_gids(dbs[1]) == []


async def test_applied_waits_until_the_outcome_ran_at_the_rm(
    dbs: tuple[str, str], shared_cluster: LocalCluster
) -> None:
    """commit() returns once the outcome is decided; applied() returns once COMMIT
    PREPARED ran, so the transfer is visible in the database right after it."""
    async with rms(dbs, shared_cluster) as (a, b), Client(shared_cluster.coordinator_addresses) as client:
        with pytest.raises(LookupError):
            await a.applied("never-joined")
        for amount in (10, 20):
            txn_id = await transfer(a, b, client, amount)
            assert await a.applied(txn_id) is RMState.COMMITTED
            assert await b.participant.applied(txn_id) is RMState.COMMITTED
            assert gid("pg-a", txn_id) not in prepared_gids(dbs[0])
        assert (balance(dbs[0], "alice"), balance(dbs[1], "bob")) == (70, 30)
        txn = await client.begin()
        async with a.work(txn.context) as conn:
            await conn.execute("UPDATE accounts SET balance = balance - 5 WHERE name = 'alice'")
        assert await txn.abort() is Outcome.ABORTED
        assert await a.applied(txn.txn_id) is RMState.ABORTED
        assert await a.applied(txn.txn_id) is RMState.ABORTED  # again: already known
    assert balance(dbs[0], "alice") == 70 and prepared_gids(dbs[0]) == []


def test_postgres_bench_prints_every_phase_of_the_three_ways(tmp_path: Path) -> None:
    """``paxos-commit bench --postgres`` runs (a handful of transfers: figures come from the
    command itself, not from a test) and reports each phase of each way."""
    import json

    out = subprocess.run(
        [sys.executable, "-m", "paxos_commit", "--log-level", "WARNING", "bench", "--postgres", PG_DSN,
         "--levels", "2", "--transactions", "10", "--warmup", "2", "--runs", "1", "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    row = json.loads(out.stdout)["runs"][0]["levels"]["2"]
    for way in ("hand_rolled", "f0", "f1"):
        assert row[way]["failures"] == 0 and row[way]["transfers_per_s"] > 0
        m = row[way]["median_ms"]
        assert set(m) == {"begin", "work", "begin_work", "commit_reply", "applied"}
        assert m["work"] > 0 and m["commit_reply"] > 0 and m["applied"] > 0
    assert row["hand_rolled"]["median_ms"]["begin"] == 0  # its BEGINs are part of the work
    assert row["f1"]["median_ms"]["begin"] > 0
    assert row["f1_over_hand_rolled"] > 0 and row["f0_over_hand_rolled"] > 0


def test_postgres_bench_refuses_a_server_too_small_for_its_prepared_transactions(tmp_path: Path) -> None:
    """A level needing more prepared transactions than the server allows (Postgres's
    default is 0) fails at once, naming the setting, instead of reporting 0 transfers/s
    after every vote came back no; nothing is created on the server."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        have = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])  # type: ignore[index]
        before = conn.execute("SELECT count(*) FROM pg_database").fetchone()
    level = have // 2 + 1
    out = subprocess.run(
        [sys.executable, "-m", "paxos_commit", "--log-level", "WARNING", "bench", "--postgres", PG_DSN,
         "--levels", f"1,{level}", "--transactions", "10", "--runs", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"max_prepared_transactions = {have}" in out.stderr
    assert f"needs at least {2 * level}" in out.stderr
    assert out.stdout == ""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database").fetchone() == before


def test_postgres_preflight_passes_exactly_at_what_the_server_holds() -> None:
    from paxos_commit.argtypes import CommandError
    from paxos_commit.preflight import require_postgres

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        have = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])  # type: ignore[index]
    assert have >= 2, "the suite needs max_prepared_transactions > 0 (see .ci/run)"
    require_postgres(PG_DSN)
    require_postgres(PG_DSN, prepared=have)
    with pytest.raises(
        CommandError, match=f"max_prepared_transactions = {have}; x needs at least {have + 1}"
    ):
        require_postgres(PG_DSN, prepared=have + 1, why="x")
