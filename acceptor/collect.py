"""Collection of finished transactions on one acceptor, in the background (spec ``Collect``
and ``Expire``; DESIGN.md pitfall 8).

A transaction is collectable at an acceptor once its outcome is recorded there and every
RM of the registrar's set acknowledged applying it (:func:`acceptor.core.collectable`,
stored as ``paxos_txn.collectable``). The :class:`Collector` replaces such transactions, a
batch at a time, by a compact outcome record (``paxos_collected``: id, outcome, when): its
instance rows and transaction row go. Every late message for the transaction is then
answered from the record (:mod:`acceptor.core`), never with fresh instance state. After
``retention`` the records go too, a batch at a time; SQLite gives the freed pages back to
the file system (incremental auto-vacuum), Postgres reuses them (autovacuum).

Each batch runs on the store's one writer thread, between two group-commit batches, so
it is serialized with every protocol step (no step can write back rows collected under
it); its size adapts so that one batch holds the writer at most ``max_hold`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acceptor.core import TxnRecord
from acceptor.storage import AcceptorStore, collected_table, instance_table, txn_table
from rm_sdk import tracing
from rm_sdk.protocol import Outcome

__all__ = [
    "CollectStats",
    "Collector",
    "CollectorConfig",
    "database_bytes",
    "enable_incremental_vacuum",
    "live_transactions",
    "vacuum_postgres",
]

log = logging.getLogger("paxos_commit.acceptor.collect")


@dataclass(frozen=True)
class CollectorConfig:
    #: Seconds between passes while there is nothing to do.
    interval: float = 1.0
    #: How long the compact outcome record of a collected transaction is kept (seconds):
    #: a message about it arriving later than this is taken for a new transaction's.
    retention: float = 3600.0
    #: Longest time one batch may hold the writer (seconds); batches shrink to fit.
    max_hold: float = 0.05
    #: First and largest batch size (transactions).
    batch: int = 256
    max_batch: int = 4096
    #: Free pages given back per SQLite incremental vacuum step.
    vacuum_pages: int = 2000
    #: Seconds between refreshes of the counts (metrics): COUNT(*) over the tables also
    #: runs on the writer thread, so not on every pass.
    stats_every: float = 5.0
    #: Postgres: seconds between plain VACUUMs of the acceptor's tables after deletions, so
    #: the space of collected rows is reused even where autovacuum is off or slow (it does
    #: not block writes; SQLite gives space back with incremental auto-vacuum instead).
    pg_vacuum_every: float = 30.0


@dataclass
class CollectStats:
    """What the last pass saw; counters since start."""

    live: int = 0  # transactions with state (undecided, or decided and not collected)
    collectable: int = 0  # decided, every participant acknowledged, not collected yet
    records: int = 0  # compact outcome records kept
    instances: int = 0  # instance rows (of live transactions)
    collected_total: int = 0
    expired_total: int = 0
    oldest_unacked_ms: int = 0  # first-seen age of the oldest decided, unacknowledged one
    db_bytes: int = 0
    last_batch_seconds: float = 0.0
    batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Collector:
    """The background collection task of one :class:`AcceptorStore`."""

    def __init__(self, store: AcceptorStore, config: CollectorConfig | None = None) -> None:
        self.store = store
        self.config = config or CollectorConfig()
        self.stats = CollectStats()
        self._batch = self.config.batch
        self._task: asyncio.Task[None] | None = None
        self._stats_at: float | None = None
        self._vacuum_at = time.monotonic()
        self._deleted_since_vacuum = 0
        #: Observers of each pass (the metrics).
        self.on_pass: list[Any] = []

    async def start(self) -> None:
        """Convert an old SQLite file to incremental auto-vacuum (once), then run."""
        engine = self.store._require_engine()
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self.store._executor, enable_incremental_vacuum, engine):
            log.info("acceptor %d: database converted to incremental auto-vacuum", self.store.acceptor_id)
        self._task = loop.create_task(self._run(), name="acceptor-collect")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # a cancellation of close() itself propagates

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.collect_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # storage trouble: try again later, never crash
                log.warning("collection pass failed: %r", exc)
                busy = False
            await asyncio.sleep(0 if busy else self.config.interval)

    async def collect_once(self) -> bool:
        """One batch of collection and one of expiry; True if either was full (more to do)."""
        loop = asyncio.get_running_loop()
        now_ms = self.store.now_ms()
        cutoff = now_ms - int(self.config.retention * 1000)
        limit = self._batch
        collected, expired, seconds = await loop.run_in_executor(
            self.store._executor, self._collect_batch, limit, now_ms, cutoff
        )
        for txn_id, outcome in collected:
            tracing.event("Collect", txn_id, acc=self.store.acceptor_id, outcome=outcome.value)
        for txn_id in expired:
            tracing.event("Expire", txn_id, acc=self.store.acceptor_id)
        st = self.stats
        st.collected_total += len(collected)
        st.expired_total += len(expired)
        st.last_batch_seconds = seconds
        st.batches += 1
        # Batches bounded in how long they hold the writer.
        if seconds > self.config.max_hold and limit > 1:
            self._batch = max(1, limit // 2)
        elif seconds < self.config.max_hold / 2 and (len(collected) >= limit or len(expired) >= limit):
            self._batch = min(self.config.max_batch, limit * 2)
        now = time.monotonic()
        self._deleted_since_vacuum += len(collected) + len(expired)
        if self._deleted_since_vacuum and now - self._vacuum_at >= self.config.pg_vacuum_every:
            self._vacuum_at = now
            self._deleted_since_vacuum = 0
            engine = self.store._require_engine()
            if engine.url.get_backend_name() == "postgresql":
                # Off the writer thread: VACUUM (not FULL) takes no lock that stops writes.
                await loop.run_in_executor(None, vacuum_postgres, engine)
        if self._stats_at is None or now - self._stats_at >= self.config.stats_every:
            self._stats_at = now
            await self.refresh_stats()
        for cb in self.on_pass:
            cb(self.stats)
        return len(collected) >= limit or len(expired) >= limit

    async def refresh_stats(self) -> CollectStats:
        engine = self.store._require_engine()
        now_ms = self.store.now_ms()

        def query() -> tuple[int, int, int, int, int | None]:
            with engine.connect() as conn:
                live = conn.execute(sa.select(sa.func.count()).select_from(txn_table)).scalar_one()
                ready = conn.execute(
                    sa.select(sa.func.count()).select_from(txn_table).where(txn_table.c.collectable == 1)
                ).scalar_one()
                records = conn.execute(sa.select(sa.func.count()).select_from(collected_table)).scalar_one()
                oldest = conn.execute(
                    sa.select(sa.func.min(txn_table.c.first_seen_ms))
                    .where(txn_table.c.outcome != Outcome.PENDING.value)
                    .where(txn_table.c.collectable == 0)
                ).scalar_one()
                ins = conn.execute(sa.select(sa.func.count()).select_from(instance_table)).scalar_one()
                return int(live), int(ready), int(records), int(ins), oldest

        # On the writer thread: SQLite's one connection is the writer's.
        loop = asyncio.get_running_loop()
        live, ready, records, ins, oldest = await loop.run_in_executor(self.store._executor, query)
        st = self.stats
        st.live, st.collectable, st.records, st.instances = live, ready, records, ins
        st.oldest_unacked_ms = max(0, now_ms - int(oldest)) if oldest is not None else 0
        st.db_bytes = await loop.run_in_executor(self.store._executor, database_bytes, engine)
        return st

    def _collect_batch(
        self, limit: int, now_ms: int, cutoff_ms: int
    ) -> tuple[list[tuple[str, Outcome]], list[str], float]:
        """On the writer thread: one storage transaction that collects up to ``limit``
        collectable transactions and expires up to ``limit`` old records."""
        engine = self.store._require_engine()
        started = time.perf_counter()
        with engine.connect() as conn:
            trans = conn.begin()
            rows = conn.execute(
                sa.select(txn_table.c.txn_id, txn_table.c.outcome)
                .where(txn_table.c.collectable == 1)
                .limit(limit)
            ).all()
            collected = [(r.txn_id, Outcome(r.outcome)) for r in rows]
            ids = [t for t, _ in collected]
            # The deletes and inserts as one prepared statement each, run per row on the
            # DBAPI cursor: a SQLAlchemy ``in_()`` per batch retained its clause objects
            # (found with tracemalloc, ~130 bytes per collected transaction, for ever).
            mark = self.store._hot_sql(conn).mark
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                if ids:
                    one = [(t,) for t in ids]
                    cur.executemany(f"DELETE FROM paxos_instance WHERE txn_id = {mark}", one)
                    cur.executemany(f"DELETE FROM paxos_txn WHERE txn_id = {mark}", one)
                    cur.executemany(
                        f"INSERT INTO paxos_collected (txn_id, outcome, collected_ms) VALUES ({mark}, {mark}, {mark})",
                        [(t, o.value, now_ms) for t, o in collected],
                    )
                old = conn.execute(
                    sa.select(collected_table.c.txn_id)
                    .where(collected_table.c.collected_ms < cutoff_ms)
                    .limit(limit)
                ).all()
                expired = [r.txn_id for r in old]
                if expired:
                    cur.executemany(
                        f"DELETE FROM paxos_collected WHERE txn_id = {mark}", [(t,) for t in expired]
                    )
            finally:
                cur.close()
            if ids or expired:
                trans.commit()
            else:
                trans.rollback()
            if (ids or expired) and conn.dialect.name == "sqlite":
                # Outside any transaction (the driver's autocommit; SQLAlchemy would begin one).
                raw: Any = conn.connection.dbapi_connection
                raw.execute(f"PRAGMA incremental_vacuum({int(self.config.vacuum_pages)})").fetchall()
        # The cache holds committed records only: now these.
        cache = self.store._cache
        for txn_id, outcome in collected:
            if txn_id in cache:
                cache[txn_id] = TxnRecord(first_seen_ms=0, outcome=outcome, collected=True)
        for txn_id in expired:
            cache.pop(txn_id, None)
        return collected, expired, time.perf_counter() - started


def database_bytes(engine: Engine) -> int:
    """Bytes the acceptor's database takes on disk: the SQLite file and its WAL, or the
    Postgres tables with their indexes and TOAST."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        total = 0
        for suffix in ("", "-wal"):
            p = Path(f"{url.database}{suffix}")
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total
    with engine.connect() as conn:
        n = conn.execute(
            sa.text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.relname IN ('paxos_txn', 'paxos_instance', 'paxos_collected', 'acceptor_meta')"
            )
        ).scalar_one()
        return int(n)


def vacuum_postgres(engine: Engine) -> None:
    """A plain VACUUM of the acceptor's tables (outside any transaction)."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("VACUUM paxos_instance, paxos_txn, paxos_collected")


def enable_incremental_vacuum(engine: Engine) -> bool:
    """Convert an existing SQLite database (made before collection, auto_vacuum NONE) to
    incremental auto-vacuum: a one-off VACUUM, outside any transaction (the migration of
    old acceptor files; Alembic's migrations run inside one). True if it converted."""
    if engine.url.get_backend_name() != "sqlite":
        return False
    with engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        (mode,) = raw.execute("PRAGMA auto_vacuum").fetchone()
        if mode == 2:
            return False
        raw.execute("PRAGMA auto_vacuum=INCREMENTAL")
        raw.execute("VACUUM")
        return True


def live_transactions(
    engine: Engine, *, unacknowledged: bool = False, limit: int = 1000
) -> list[dict[str, Any]]:
    """The transactions an acceptor still holds state for, oldest first: what
    ``paxos-commit txns`` shows. ``unacknowledged``: only decided ones some participant has
    not acknowledged (an RM that never comes back keeps its transaction here)."""
    import json

    q = sa.select(txn_table).order_by(txn_table.c.first_seen_ms).limit(limit)
    if unacknowledged:
        q = q.where(txn_table.c.outcome != Outcome.PENDING.value).where(txn_table.c.collectable == 0)
    out = []
    with engine.connect() as conn:
        for r in conn.execute(q):
            participants = None if r.participants is None else json.loads(r.participants)
            acked = json.loads(r.acked) if r.acked else []
            missing = None if participants is None else sorted(set(participants) - set(acked))
            out.append(
                {
                    "txn_id": r.txn_id,
                    "first_seen_ms": r.first_seen_ms,
                    "outcome": r.outcome,
                    "participants": participants,
                    "acked": acked,
                    "unacknowledged": missing,
                    "collectable": bool(r.collectable),
                }
            )
    return out
