"""Durable acceptor state through SQLAlchemy Core, with group commit.

Every protocol step goes through :meth:`AcceptorStore.apply`: steps that arrive together
are applied in order to in-memory copies, written in one storage transaction, and only
after that transaction commits do their callers get replies (never reply before durable).
SQLite runs in WAL mode with ``synchronous=FULL`` and ``BEGIN IMMEDIATE``; Postgres by DSN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from acceptor.core import TxnRecord, collectable
from rm_sdk.protocol import (
    NO_SET,
    NO_VALUE,
    Ballot,
    Instance,
    InstanceState,
    NoSet,
    NoValue,
    Outcome,
    RMSet,
    Value,
    Vote,
)

__all__ = ["AcceptorStore", "StorageError", "TxnRecord", "sqlite_url"]

R = TypeVar("R")

metadata = sa.MetaData()
txn_table = sa.Table(
    "paxos_txn",
    metadata,
    sa.Column("txn_id", sa.String(128), primary_key=True),
    sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    # Collection (migration 0002): JSON lists of RM ids; collectable is 1 once every
    # participant acknowledged (acceptor.core.collectable).
    sa.Column("participants", sa.Text, nullable=True),
    sa.Column("acked", sa.Text, nullable=True),
    sa.Column("collectable", sa.SmallInteger, nullable=False, server_default="0"),
)
#: The compact outcome record of each collected transaction (acceptor/collect.py).
collected_table = sa.Table(
    "paxos_collected",
    metadata,
    sa.Column("txn_id", sa.String(128), primary_key=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("collected_ms", sa.BigInteger, nullable=False),
)
instance_table = sa.Table(
    "paxos_instance",
    metadata,
    sa.Column("txn_id", sa.String(128), primary_key=True),
    sa.Column("instance", sa.String(128), primary_key=True),
    sa.Column("mbal_round", sa.BigInteger, nullable=False),
    sa.Column("mbal_leader", sa.String(128), nullable=False),
    sa.Column("bal_round", sa.BigInteger, nullable=False),
    sa.Column("bal_leader", sa.String(128), nullable=False),
    sa.Column("val", sa.Text, nullable=True),
)
_TXN_COLUMNS = ("txn_id", "first_seen_ms", "outcome", "participants", "acked", "collectable")
_INSTANCE_COLUMNS = ("txn_id", "instance", "mbal_round", "mbal_leader", "bal_round", "bal_leader", "val")


class _HotSQL:
    """The writer's per-batch statements as SQL text for the DBAPI cursor of the
    SQLAlchemy connection, inside the SQLAlchemy transaction. Measured on a one-step
    batch (a new transaction's vote): SQLAlchemy's execute path cost ~500 us of CPU
    against ~90 us for the same statements on the cursor, and this runs once per
    group commit. The text is the same for SQLite and Postgres (both take
    ``INSERT ... ON CONFLICT ... DO UPDATE SET c = excluded.c``); only the
    placeholder differs. Schema, migrations, reads for people and collection stay on
    SQLAlchemy Core."""

    def __init__(self, paramstyle: str) -> None:
        self.mark = "?" if paramstyle == "qmark" else "%s"
        self._in: dict[int, str] = {}
        self.upsert_txn = self._upsert("paxos_txn", _TXN_COLUMNS, ("txn_id",))
        self.upsert_instance = self._upsert("paxos_instance", _INSTANCE_COLUMNS, ("txn_id", "instance"))

    def _upsert(self, table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> str:
        marks = ", ".join([self.mark] * len(columns))
        sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
        )

    def ids(self, n: int) -> str:
        text = self._in.get(n)
        if text is None:
            text = self._in[n] = ", ".join([self.mark] * n)
        return text

    def load_txns(self, n: int) -> str:
        return f"SELECT txn_id, first_seen_ms, outcome, participants, acked FROM paxos_txn WHERE txn_id IN ({self.ids(n)})"

    def load_instances(self, n: int) -> str:
        return (
            "SELECT txn_id, instance, mbal_round, mbal_leader, bal_round, bal_leader, val "
            f"FROM paxos_instance WHERE txn_id IN ({self.ids(n)})"
        )

    def load_collected(self, n: int) -> str:
        return f"SELECT txn_id, outcome FROM paxos_collected WHERE txn_id IN ({self.ids(n)})"


meta_table = sa.Table(
    "acceptor_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class StorageError(RuntimeError):
    """The store cannot be opened as asked (missing, or another acceptor's)."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def encode_value(v: Value | NoValue) -> str | None:
    if isinstance(v, NoValue):
        return None
    if isinstance(v, Vote):
        return v.value
    if isinstance(v, RMSet):
        return "set:" + json.dumps(sorted(v.rms))
    return NO_SET.value


def decode_value(s: str | None) -> Value | NoValue:
    if s is None:
        return NO_VALUE
    if s.startswith("set:"):
        return RMSet.of(json.loads(s[4:]))
    if s == NoSet.NO_SET.value:
        return NO_SET
    return Vote(s)


class _Outcome(Generic[R]):
    __slots__ = ("error", "value")

    def __init__(self, value: R | None = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


StepFn = Callable[[TxnRecord | None], tuple[TxnRecord | None, Any]]


@dataclass
class _Group:
    """Steps submitted together (one incoming batch of a stream), answered together: the
    future gets one :class:`_Outcome` per step, in order."""

    steps: list[tuple[str, StepFn]]
    future: asyncio.Future[list[_Outcome[Any]]]


class AcceptorStore:
    """The durable state of one acceptor, shared by all its transactions."""

    def __init__(
        self,
        url: str,
        acceptor_id: int,
        *,
        init: bool = False,
        max_batch: int = 512,
        cache_size: int = 50_000,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.url = url
        self.acceptor_id = acceptor_id
        self._init = init
        self._max_batch = max_batch
        self._cache: OrderedDict[str, TxnRecord] = OrderedDict()
        self._cache_size = cache_size
        self._clock_ms = clock_ms
        self._queue: asyncio.Queue[_Group] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acceptor-db")
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._engine: Engine | None = None
        #: The writer thread's connection, kept across batches: a checkout per batch was
        #: ~5% of an acceptor's CPU at low load (and a ping round trip on Postgres).
        self._conn: Connection | None = None
        self._sql: _HotSQL | None = None
        #: Observers of each committed batch: (batch size, seconds spent writing).
        self.on_batch: list[Callable[[int, float], None]] = []
        #: Steps queued for the writer and not taken yet, and steps of the batch being
        #: written (the queue-depth metrics).
        self.steps_waiting = 0
        self.steps_writing = 0
        #: Operators' reads: their own engine and thread (see :meth:`query`).
        self._reader: ThreadPoolExecutor | None = None
        self._reader_engine: Engine | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._engine = await loop.run_in_executor(self._executor, self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="acceptor-group-commit")

    async def close(self) -> None:
        if self._writer is not None:
            # Let queued steps finish: their callers may already be waiting for replies.
            await self._queue.join()
            self._writer.cancel()
            # asyncio.wait, not suppressing CancelledError: a cancellation of close() itself
            # must still reach its caller.
            await asyncio.wait([self._writer])
        if self._engine is not None:
            engine = self._engine

            def dispose() -> None:
                self._drop_connection()
                engine.dispose()

            await asyncio.get_running_loop().run_in_executor(self._executor, dispose)
        self._executor.shutdown(wait=True)
        if self._reader is not None:
            reader = self._reader_engine
            if reader is not None:
                await asyncio.get_running_loop().run_in_executor(self._reader, reader.dispose)
            self._reader.shutdown(wait=True)

    def _open(self) -> Engine:
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() == "sqlite":
            db = url.database
            if not db or db == ":memory:":
                raise StorageError("SQLite needs a file: durability is the point")
            path = Path(db)
            if not path.exists() and not self._init:
                raise StorageError(
                    f"no acceptor state at {path}; refusing to start blank (an acceptor that "
                    "lost its disk must not rejoin as new). Pass --init for a brand-new acceptor."
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(self.url, poolclass=sa.pool.StaticPool)
            _configure_sqlite(engine)
        else:
            engine = sa.create_engine(self.url, pool_size=2, pool_pre_ping=True)
        from acceptor.migrations import at_head, upgrade

        with engine.connect() as conn:
            exists = sa.inspect(conn).has_table(meta_table.name)
            current = exists and at_head(conn)
        if not exists and not self._init:
            engine.dispose()
            raise StorageError(
                f"no acceptor state in {url.render_as_string(hide_password=True)}; refusing to "
                "start blank. Pass --init for a brand-new acceptor."
            )
        if not current:
            upgrade(engine)
        with engine.begin() as conn:
            row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "acceptor_id")).first()
            if row is None:
                conn.execute(meta_table.insert().values(key="acceptor_id", value=str(self.acceptor_id)))
            elif int(row[0]) != self.acceptor_id:
                raise StorageError(f"this store belongs to acceptor {row[0]}, not {self.acceptor_id}")
        return engine

    # ---------------------------------------------------------------- steps

    async def apply(self, txn_id: str, fn: StepFn) -> Any:
        """Run ``fn`` on the transaction's record; durable before this returns.

        ``fn`` gets the current record (None if the acceptor never heard of the
        transaction) and returns the new record (None or the same object: no write) and a
        result. If it raises, nothing changes and the exception reaches the caller.
        """
        (res,) = await self.apply_many([(txn_id, fn)])
        if res.error is not None:
            raise res.error
        return res.value

    def apply_many(self, steps: list[tuple[str, StepFn]]) -> asyncio.Future[list[_Outcome[Any]]]:
        """Steps run in order in one storage transaction (with whatever else is queued);
        the future completes once they are durable, with each step's result or refusal.
        If storage fails, the future fails and nothing is claimed durable."""
        fut: asyncio.Future[list[_Outcome[Any]]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Group(steps, fut))
        self.steps_waiting += len(steps)
        return fut

    def cached(self, txn_id: str) -> TxnRecord | None:
        """The committed record of ``txn_id`` if it is in memory (None: absent or not
        cached; the caller reads through :meth:`apply` when that matters)."""
        return self._cache.get(txn_id)

    def subscribe(self, txn_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, after the next storage transaction that changes
        ``txn_id`` commits (its cached record is then the new one)."""
        self._watchers.setdefault(txn_id, []).append(callback)

    def unsubscribe(self, txn_id: str, callback: Callable[[], None]) -> None:
        cbs = self._watchers.get(txn_id)
        if cbs is not None:
            with contextlib.suppress(ValueError):
                cbs.remove(callback)
            if not cbs:
                del self._watchers[txn_id]

    async def read(self, txn_id: str) -> TxnRecord | None:
        """The durable state of ``txn_id``. The cache holds only committed records (the
        writer installs them after its storage transaction commits), so a hit needs no
        trip through the writer; a miss loads from storage in order with the writes."""
        cached = self._cache.get(txn_id)
        if cached is not None:
            return cached
        rec: TxnRecord | None = await self.apply(txn_id, lambda rec: (None, rec))
        return rec

    @contextlib.contextmanager
    def watch(self, txn_id: str) -> Iterator[asyncio.Future[None]]:
        """A future that completes when a batch next changes ``txn_id``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(txn_id, set()).add(fut)
        try:
            yield fut
        finally:
            waiters = self._waiters.get(txn_id)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[txn_id]

    def now_ms(self) -> int:
        return self._clock_ms()

    async def list_undecided(self, older_than_ms: int, limit: int) -> list[str]:
        cutoff = self._clock_ms() - older_than_ms
        engine = self._require_engine()

        def query() -> list[str]:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(txn_table.c.txn_id)
                    .where(txn_table.c.outcome == Outcome.PENDING.value)
                    .where(txn_table.c.first_seen_ms <= cutoff)
                    .order_by(txn_table.c.first_seen_ms)
                    .limit(limit)
                )
                return [r[0] for r in rows]

        return await asyncio.get_running_loop().run_in_executor(self._executor, query)

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        engine = self._require_engine()

        def query() -> None:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        await asyncio.get_running_loop().run_in_executor(self._executor, query)

    async def query(self, fn: Callable[[Connection], R]) -> R:
        """Run a read-only query of operators' tools (``acceptor/operations.py``) on a
        connection and thread of its own, so a long listing never delays the group
        commits; it sees committed state only (SQLite in WAL mode: readers and the
        writer do not block each other)."""
        self._require_engine()
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acceptor-read")
        loop = asyncio.get_running_loop()

        def run() -> R:
            if self._reader_engine is None:
                self._reader_engine = _reader_engine(self.url)
            with self._reader_engine.connect() as conn:
                return fn(conn)

        return await loop.run_in_executor(self._reader, run)

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise StorageError("store not started")
        return self._engine

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            groups = [await self._queue.get()]
            size = len(groups[0].steps)
            while size < self._max_batch and not self._queue.empty():
                g = self._queue.get_nowait()
                groups.append(g)
                size += len(g.steps)
            steps = [st for g in groups for st in g.steps]
            self.steps_waiting -= size
            self.steps_writing = size
            try:
                results, changed = await loop.run_in_executor(self._executor, self._run_batch, steps)
            except Exception as exc:  # storage failed: nobody gets a reply claiming durability
                for g in groups:
                    if not g.future.done():
                        g.future.set_exception(exc)
                    self._queue.task_done()
                continue
            finally:
                self.steps_writing = 0
            at = 0
            for g in groups:
                n = len(g.steps)
                if not g.future.done():
                    g.future.set_result(results[at : at + n])
                at += n
                self._queue.task_done()
            for txn_id in changed:
                for fut in self._waiters.get(txn_id, ()):
                    if not fut.done():
                        fut.set_result(None)
                for cb in self._watchers.pop(txn_id, ()):
                    loop.call_soon(cb)

    def _connection(self) -> Connection:
        """The writer's connection (writer thread only), opened again after a failure."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self._require_engine().connect()
        return conn

    def _drop_connection(self) -> None:
        """After a failed batch its connection's state is unknown: never reuse it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def _run_batch(self, batch: list[tuple[str, StepFn]]) -> tuple[list[_Outcome[Any]], set[str]]:
        for attempt in (1, 2):
            try:
                return self._run_batch_on(self._connection(), batch)
            except BaseException as exc:
                lost = self._disconnected(exc)
                self._drop_connection()
                # The kept connection died while idle (a database restart): once more on a
                # new one. Steps are pure and acceptor steps idempotent (a rerun is the
                # network delivering the batch twice), so this is safe even if the failed
                # attempt's commit reached the disk.
                if attempt == 2 or not lost:
                    raise
        raise AssertionError("unreachable")

    def _disconnected(self, exc: BaseException) -> bool:
        """``exc`` says the writer's connection is gone (SQLAlchemy's or the driver's own
        error: the hot path talks to the driver directly)."""
        if isinstance(exc, sa.exc.DBAPIError):
            return bool(exc.connection_invalidated)
        engine, conn = self._engine, self._conn
        if engine is None or conn is None or not isinstance(exc, engine.dialect.loaded_dbapi.Error):
            return False
        try:
            dbapi = conn.connection.dbapi_connection
        except Exception:
            dbapi = None
        return bool(engine.dialect.is_disconnect(exc, dbapi, None))

    def _run_batch_on(
        self, conn: Connection, batch: list[tuple[str, StepFn]]
    ) -> tuple[list[_Outcome[Any]], set[str]]:
        started = time.perf_counter()
        working: dict[str, TxnRecord | None] = {}
        #: Each dirty transaction's record as it was before this batch (None: new).
        original: dict[str, TxnRecord | None] = {}
        dirty: set[str] = set()
        results: list[_Outcome[Any]] = []
        # One storage transaction per batch, begun only if a step needs the disk.
        trans = None
        missing = []
        for txn_id, _ in batch:
            if txn_id not in working:
                cached = self._cache.get(txn_id)
                working[txn_id] = cached
                if cached is None:
                    missing.append(txn_id)
        if missing:
            trans = conn.begin()
            working.update(self._load_many(conn, missing))
        for txn_id, fn in batch:
            before = working[txn_id]
            try:
                new, value = fn(before)
            except Exception as exc:  # the step's own refusal: state unchanged
                results.append(_Outcome(error=exc))
                continue
            if new is not None and new is not before:
                if txn_id not in dirty:
                    original[txn_id] = before
                working[txn_id] = new
                dirty.add(txn_id)
            results.append(_Outcome(value=value))
        if dirty:
            if trans is None:
                trans = conn.begin()
            self._write(conn, {t: working[t] for t in dirty}, original)
            trans.commit()
        elif trans is not None:
            trans.rollback()
        for txn_id, rec in working.items():
            if rec is not None:
                self._cache[txn_id] = rec
                self._cache.move_to_end(txn_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        if dirty:
            elapsed = time.perf_counter() - started
            for cb in self.on_batch:
                cb(len(batch), elapsed)
        return results, dirty

    def _load_many(self, conn: Connection, txn_ids: list[str]) -> dict[str, TxnRecord | None]:
        """The stored records of ``txn_ids`` (None where absent; the compact outcome
        record where collected), a few queries per chunk instead of two per transaction."""
        found: dict[str, TxnRecord | None] = dict.fromkeys(txn_ids)
        sql = self._hot_sql(conn)
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for at in range(0, len(txn_ids), 500):
                chunk = txn_ids[at : at + 500]
                cur.execute(sql.load_txns(len(chunk)), chunk)
                rows = cur.fetchall()
                instances: dict[str, dict[Instance, InstanceState]] = {r[0]: {} for r in rows}
                if rows:
                    cur.execute(sql.load_instances(len(instances)), list(instances))
                    for txn_id, ins, mr, ml, br, bl, val in cur.fetchall():
                        instances[txn_id][ins] = InstanceState(
                            mbal=Ballot(mr, ml), bal=Ballot(br, bl), val=decode_value(val)
                        )
                for txn_id, first_seen_ms, outcome, participants, acked in rows:
                    found[txn_id] = TxnRecord(
                        first_seen_ms=first_seen_ms,
                        instances=instances[txn_id],
                        outcome=Outcome(outcome),
                        participants=None if participants is None else frozenset(json.loads(participants)),
                        acked=frozenset(json.loads(acked)) if acked else frozenset(),
                    )
                absent = [t for t in chunk if t not in instances]
                if absent:
                    cur.execute(sql.load_collected(len(absent)), absent)
                    for txn_id, outcome in cur.fetchall():
                        found[txn_id] = TxnRecord(first_seen_ms=0, outcome=Outcome(outcome), collected=True)
        finally:
            cur.close()
        return found

    def _hot_sql(self, conn: Connection) -> _HotSQL:
        if self._sql is None:
            self._sql = _HotSQL(conn.dialect.paramstyle)
        return self._sql

    def _write(
        self,
        conn: Connection,
        records: Mapping[str, TxnRecord | None],
        original: Mapping[str, TxnRecord | None],
    ) -> None:
        """Write the changed rows only: a transaction row whose outcome or first-seen time
        changed, and the instance rows whose state changed."""
        txn_rows = []
        ins_rows = []
        for txn_id, rec in records.items():
            assert rec is not None and not rec.collected  # a compact record is never rewritten
            old = original.get(txn_id)
            if (
                old is None
                or old.outcome is not rec.outcome
                or old.first_seen_ms != rec.first_seen_ms
                or old.participants != rec.participants
                or old.acked != rec.acked
            ):
                txn_rows.append(
                    (
                        txn_id,
                        rec.first_seen_ms,
                        rec.outcome.value,
                        None if rec.participants is None else json.dumps(sorted(rec.participants)),
                        json.dumps(sorted(rec.acked)) if rec.acked else None,
                        1 if collectable(rec) else 0,
                    )
                )
            before = old.instances if old is not None else {}
            for ins, st in rec.instances.items():
                if before.get(ins) == st:
                    continue
                ins_rows.append(
                    (
                        txn_id,
                        ins,
                        st.mbal.round,
                        st.mbal.leader,
                        st.bal.round,
                        st.bal.leader,
                        encode_value(st.val),
                    )
                )
        sql = self._hot_sql(conn)
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if txn_rows:
                cur.executemany(sql.upsert_txn, txn_rows)
            if ins_rows:
                cur.executemany(sql.upsert_instance, ins_rows)
        finally:
            cur.close()


def _reader_engine(url: str) -> Engine:
    """A read-only engine for operators' queries, beside the writer's."""
    if sa.engine.make_url(url).get_backend_name() == "sqlite":
        engine = sa.create_engine(url, poolclass=sa.pool.StaticPool)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA query_only=1")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN IMMEDIATE is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # Space freed by collection goes back to the file system in steps
        # (acceptor/collect.py); it takes effect in a new database only (an existing one is
        # converted once by acceptor.collect.enable_incremental_vacuum).
        cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver: SQLAlchemy's statement machinery was ~3% of an
        # acceptor's CPU at low load, once per storage transaction.
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.execute("BEGIN IMMEDIATE")
