"""A ready-made resource manager: a Postgres database, with real prepared transactions.

The service does its work in an ordinary psycopg 3 :class:`psycopg.AsyncConnection` that
the RM lends out, from its connection pool, for the transaction::

    pg = PostgresRM("dbname=shop", "shop-db", coordinators, acceptors=acceptors)
    await pg.recover()                       # at start: finish what a crash left prepared
    async with pg.work(ctx) as conn:         # joins the transaction
        await conn.execute("UPDATE stock SET n = n - 1 WHERE item = %s", (item,))

The RM takes a DSN (it then owns a :class:`psycopg_pool.AsyncConnectionPool` of
``min_size``..``max_size`` connections) or a pool of the application's. The connection is
inside a transaction that the RM began; at vote time the RM issues ``PREPARE TRANSACTION``
with the global transaction id :func:`gid` = ``"pc1:<rm_id>:<txn_id>"``: the work is
durable in Postgres and holds its locks before the ``prepared`` vote leaves (DESIGN.md
pitfall 3). From then on the session no longer holds the transaction, so its connection
goes straight back to the pool. The outcome is applied with ``COMMIT PREPARED`` /
``ROLLBACK PREPARED`` on pooled connections, at most ``apply_concurrency`` at once (many
outcomes learned together are applied concurrently). Several ``work`` blocks of one
transaction share one connection, one at a time. Nothing opens a connection per
transaction: the pool connects only to fill itself or to replace a broken connection.

SQLAlchemy: bind a session to the connection's driver connection, e.g. an
``AsyncEngine`` made with ``async_creator`` returning ``conn`` and ``poolclass=NullPool``;
or, simpler, run Core statements with ``conn.execute(str(stmt.compile(...)))``. Do not call
``commit``/``rollback`` on the connection or the session: the RM ends the transaction (a
block that ended it itself makes the RM vote no).

An exception raised inside a ``work`` block aborts the transaction at once: the RM rolls
its work back and votes ``aborted`` before being asked to prepare
(:meth:`~rm_sdk.participant.Participant.refuse`), so ``commit()`` raises
:class:`~rm_sdk.client.RMRefused` naming this RM and the error, without waiting for a
timeout. A failure to prepare (a serialization failure, a deferred constraint, the database
gone) is a ``no`` vote, its reason logged. Outcome delivery is idempotent: an outcome for
a gid no longer prepared is a no-op; while the database is down, commit and abort raise and
the :class:`~rm_sdk.participant.Participant` retries them with capped backoff.
:meth:`PostgresRM.applied` waits until this RM applied a transaction's outcome.

In-doubt recovery: :meth:`PostgresRM.recover` (call at start and then periodically, e.g.
with :meth:`PostgresRM.recover_periodically`) lists this RM's prepared transactions
(``tpc_recover``, filtered by the gid prefix and the current database) and finishes each:
the outcome comes from a coordinator or, if none answers in ``recovery_timeout``, from the
acceptors (the RM runs higher ballots itself). Configure ``acceptors`` so that works right
after a restart; otherwise the acceptors learned at the first join are used.

Needs ``psycopg`` 3 and ``psycopg-pool`` (the ``postgres`` extra) and
``max_prepared_transactions > 0`` on the server. Gids are unique per Postgres cluster: RM
ids of RMs sharing a cluster must differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
import psycopg
import psycopg.errors
from psycopg import pq, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from rm_sdk.client import TransactionContext
from rm_sdk.participant import Participant, RMState
from rm_sdk.protocol import Vote, validate_id

__all__ = ["GID_PREFIX", "PostgresRM", "gid", "parse_gid"]

log = logging.getLogger("paxos_commit.postgres")

#: Version tag of the gid format ``pc1:<rm_id>:<txn_id>``.
GID_PREFIX = "pc1"

Connection = psycopg.AsyncConnection[TupleRow]

_IDLE = pq.TransactionStatus.IDLE
_INTRANS = pq.TransactionStatus.INTRANS
_INERROR = pq.TransactionStatus.INERROR


def gid(rm_id: str, txn_id: str) -> str:
    """The Postgres global transaction id of ``txn_id`` at RM ``rm_id``."""
    return f"{GID_PREFIX}:{rm_id}:{txn_id}"


def parse_gid(rm_id: str, value: str) -> str | None:
    """The transaction id in ``value`` if it is a gid of RM ``rm_id``, else None."""
    prefix = f"{GID_PREFIX}:{rm_id}:"
    if not value.startswith(prefix):
        return None
    txn_id = value[len(prefix) :]
    try:
        return validate_id("transaction id", txn_id)
    except ValueError:
        return None


@dataclass
class _Work:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: Connection | None = None
    #: Why this transaction must vote no ("" while it may still prepare).
    failed: str = ""
    #: True once the early abort for ``failed`` was started.
    refused: bool = False
    #: The block failed by cancellation (or exit), not by an error of its own.
    cancelled: bool = False


class PostgresRM:
    """A Postgres database as a resource manager of Paxos Commit transactions.

    ``dsn``: a connection string (the RM then owns a pool of ``min_size``..``max_size``
    connections) or an :class:`~psycopg_pool.AsyncConnectionPool` of the application's
    (left open by :meth:`close`). Work blocks hold at most ``max_size - max(1,
    max_size // 4)`` of the pool's connections, so that outcomes, which release the
    locks those blocks may wait for, always find one. ``apply_concurrency`` bounds the
    outcomes applied at once. ``connect_timeout``: for a connection attempt, and for
    waiting on the pool."""

    def __init__(
        self,
        dsn: str | AsyncConnectionPool[Connection],
        rm_id: str,
        coordinators: Sequence[str],
        *,
        acceptors: Sequence[str] = (),
        owner_timeout: float = 15.0,
        recovery_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        min_size: int = 2,
        max_size: int = 20,
        apply_concurrency: int = 16,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.rm_id = validate_id("rm id", rm_id)
        self.connect_timeout = connect_timeout
        self.pool: AsyncConnectionPool[Connection]
        if isinstance(dsn, str):
            if not 1 <= min_size <= max_size:
                raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
            self.dsn = dsn
            self.pool = AsyncConnectionPool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                open=False,
                kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
                timeout=connect_timeout,
                name=f"paxos-commit-{rm_id}",
            )
            self._own_pool = True
        else:
            self.pool = dsn
            self.dsn = dsn.conninfo if isinstance(dsn.conninfo, str) else ""
            self._own_pool = False
        size = self.pool.max_size
        self._work_slots = asyncio.Semaphore(max(1, size - max(1, size // 4)) if size > 1 else 1)
        self._apply_slots = asyncio.Semaphore(max(1, apply_concurrency))
        self._opened = False
        self._work: dict[str, _Work] = {}
        self.participant = Participant(
            self,
            coordinators,
            owner_timeout=owner_timeout,
            recovery_timeout=recovery_timeout,
            acceptors=acceptors,
            credentials=credentials,
        )

    async def close(self) -> None:
        """Stop the participant and give back open work connections (their unprepared
        work rolls back; prepared transactions stay prepared, for :meth:`recover`); close
        the pool if this RM made it."""
        await self.participant.close()
        for w in list(self._work.values()):
            conn, w.conn = w.conn, None
            if conn is not None:
                await self._give_back(conn)
        self._work.clear()
        if self._own_pool and self._opened:
            await self.pool.close()

    def gid(self, txn_id: str) -> str:
        """This RM's gid for ``txn_id``: ``pc1:<rm_id>:<txn_id>``."""
        return gid(self.rm_id, txn_id)

    async def connect(self, *, autocommit: bool = True) -> Connection:
        """A new connection to this RM's database, outside the pool (for tools and
        administration; the RM itself uses :attr:`pool`)."""
        return await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=autocommit, connect_timeout=max(1, int(self.connect_timeout))
        )

    async def _open(self) -> None:
        if not self._opened:
            self._opened = True
            if self._own_pool:
                await self.pool.open(wait=False)

    # ------------------------------------------------------------ application API

    @contextlib.asynccontextmanager
    async def work(self, ctx: TransactionContext) -> AsyncIterator[Connection]:
        """Join ``ctx``'s transaction and yield a pooled connection inside its
        transaction. An exception in the block rolls the work back and aborts the
        transaction at once (this RM votes no before it is asked); it then propagates."""
        w = self._work.get(ctx.txn_id)
        if w is None:
            w = self._work[ctx.txn_id] = _Work()
        try:
            async with w.lock:
                if w.failed:
                    raise RuntimeError(f"transaction {ctx.txn_id} already failed at {self.rm_id}: {w.failed}")
                checkout: asyncio.Task[Connection] | None = None
                if w.conn is None and ctx.txn_id not in self.participant.states:
                    # Join and begin the session's transaction at once: the join's round
                    # trip to the coordinator overlaps the BEGIN's to the database.
                    checkout = asyncio.ensure_future(self._checkout())
                try:
                    # Deferred when this process began the transaction: its commit waits
                    # for the join, so the work need not.
                    await self.participant.join(ctx, defer=True)
                    state = self.participant.states.get(ctx.txn_id)
                    if state is not RMState.WORKING and not self.participant.joining(ctx.txn_id):
                        raise RuntimeError(
                            f"transaction {ctx.txn_id} is {state.value if state else 'unknown'} at {self.rm_id}"
                        )
                except BaseException:
                    if checkout is not None:
                        await self._drop_checkout(checkout)
                    if w.conn is None and self._work.get(ctx.txn_id) is w:
                        self._work.pop(ctx.txn_id, None)
                    raise
                try:
                    if w.conn is None:
                        w.conn = await (checkout if checkout is not None else self._checkout())
                    yield w.conn
                except BaseException as exc:
                    w.failed = f"{type(exc).__name__}: {exc}"
                    w.cancelled = not isinstance(exc, Exception)
                    log.info("%s: work of %s failed, voting no: %s", self.rm_id, ctx.txn_id, w.failed)
                    raise
        finally:
            if w.failed and not w.refused:
                w.refused = True
                refusal = self.participant.refuse(ctx.txn_id, w.failed)
                if w.cancelled:
                    # Do not hold up a cancellation with network round trips.
                    asyncio.get_running_loop().create_task(refusal)
                else:
                    await refusal

    async def applied(self, txn_id: str) -> RMState:
        """Wait until this RM applied the outcome of ``txn_id`` (``COMMIT PREPARED`` or
        ``ROLLBACK PREPARED`` returned): COMMITTED or ABORTED. See
        :meth:`Participant.applied`."""
        return await self.participant.applied(txn_id)

    async def in_doubt(self) -> list[str]:
        """Transactions this RM holds prepared in its database (by their transaction id)."""
        await self._open()
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT current_database()")
            row = await cur.fetchone()
            database = row[0] if row else None
            xids = await conn.tpc_recover()
        found = []
        for x in xids:
            if x.database != database or x.format_id is not None:
                continue
            txn_id = parse_gid(self.rm_id, x.gtrid)
            if txn_id is not None:
                found.append(txn_id)
        return sorted(found)

    async def recover(self) -> list[str]:
        """Finish every transaction this RM holds prepared and is not running now: learn
        each outcome (coordinators, else acceptors) and apply it, in the background
        (:meth:`applied` waits for one). Returns their transaction ids."""
        txns = [t for t in await self.in_doubt() if not self.participant.active(t)]
        for txn_id in txns:
            log.info("%s: resuming in-doubt transaction %s", self.rm_id, txn_id)
            await self.participant.resume(txn_id)
        return txns

    async def recover_periodically(self, interval: float = 60.0) -> None:
        """Run :meth:`recover` now and every ``interval`` seconds, forever (run it as a
        task; errors, e.g. the database down, are logged and retried)."""
        while True:
            try:
                await self.recover()
            except Exception:
                log.exception("%s: recovery scan failed", self.rm_id)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ connections

    async def _checkout(self) -> Connection:
        """A pooled connection for a transaction's work, inside a transaction."""
        await self._open()
        await self._work_slots.acquire()
        try:
            conn = await self.pool.getconn()
        except BaseException:
            self._work_slots.release()
            raise
        try:
            if not conn.autocommit:
                await conn.set_autocommit(True)
            # Autocommit plus an explicit BEGIN: PREPARE TRANSACTION then leaves the
            # session idle, and a block that ended the transaction itself shows.
            await conn.execute("BEGIN")
        except BaseException:
            await self._give_back(conn, discard=True)
            raise
        return conn

    async def _drop_checkout(self, checkout: asyncio.Task[Connection]) -> None:
        """Undo a :meth:`_checkout` begun for a join that failed."""
        checkout.cancel()
        (result,) = await asyncio.gather(checkout, return_exceptions=True)
        if isinstance(result, psycopg.AsyncConnection):
            await self._give_back(result)

    async def _give_back(self, conn: Connection, *, discard: bool = False) -> None:
        """Return a work connection to the pool: rolled back if it still holds work, or
        closed (the pool replaces it) if it was cancelled or broken. Never close a
        connection another task still awaits: callers hold the work's lock."""
        try:
            status = conn.pgconn.transaction_status
            if not discard and status in (_INTRANS, _INERROR):
                await conn.rollback()
            elif status != _IDLE:
                discard = True
        except psycopg.Error:
            discard = True
        try:
            if discard:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            await self.pool.putconn(conn)
        finally:
            self._work_slots.release()

    # ------------------------------------------------------------ ResourceManager

    async def prepare(self, txn_id: str) -> Vote:
        """``PREPARE TRANSACTION``; any failure is a no vote with its reason logged.
        Prepared, the connection goes back to the pool at once."""
        w = self._work.get(txn_id)
        if w is None:
            log.info("%s: asked to prepare %s with no work here: voting no", self.rm_id, txn_id)
            return Vote.ABORTED
        async with w.lock:
            if w.failed or w.conn is None:
                log.info("%s: voting no on %s: %s", self.rm_id, txn_id, w.failed or "no connection")
                return Vote.ABORTED
            conn = w.conn
            if conn.pgconn.transaction_status != _INTRANS:
                w.failed = "the work block ended its transaction itself"
                log.warning("%s: voting no on %s: %s", self.rm_id, txn_id, w.failed)
                return Vote.ABORTED
            try:
                await conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(self.gid(txn_id))))
            except Exception as exc:
                w.failed = f"prepare failed: {type(exc).__name__}: {exc}"
                log.warning("%s: voting no on %s: %s", self.rm_id, txn_id, w.failed)
                return Vote.ABORTED
            # Prepared: the transaction now lives in Postgres, not in this session.
            w.conn = None
            self._work.pop(txn_id, None)
            await self._give_back(conn)
            return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        """``COMMIT PREPARED``; a no-op if the gid is no longer prepared. Raises while the
        database cannot be reached, so the participant retries."""
        await self._finish(txn_id, commit=True)

    async def abort(self, txn_id: str) -> None:
        """Roll back unprepared work, or ``ROLLBACK PREPARED``; a no-op if nothing is left."""
        w = self._work.pop(txn_id, None)
        if w is not None and w.conn is not None:
            cancelled = False
            if w.lock.locked():
                # A work block may be running a statement on this connection (e.g. waiting
                # for a row lock). Cancel the statement and let the block end before the
                # connection is touched again: closing a socket another task still waits
                # on corrupts the event loop's registration of its file descriptor, and
                # the next connection that reuses the number hangs.
                with contextlib.suppress(psycopg.Error, TimeoutError):
                    await asyncio.wait_for(w.conn.cancel_safe(), 5.0)
                cancelled = True
            async with w.lock:
                conn, w.conn = w.conn, None
                if conn is not None:
                    # A cancelled connection is not trusted back into the pool.
                    await self._give_back(conn, discard=cancelled)
        await self._finish(txn_id, commit=False)

    async def _finish(self, txn_id: str, *, commit: bool) -> None:
        xid = self.gid(txn_id)
        await self._open()
        async with self._apply_slots, self.pool.connection() as conn:
            for attempt in range(50):
                try:
                    if commit:
                        await conn.tpc_commit(xid)
                    else:
                        await conn.tpc_rollback(xid)
                    return
                except psycopg.errors.UndefinedObject:
                    # Not (or no longer) prepared: already applied, or never prepared.
                    log.debug("%s: %s is not prepared; nothing to do", self.rm_id, xid)
                    return
                except psycopg.errors.ObjectNotInPrerequisiteState:
                    # "busy": a redelivered outcome is being applied right now elsewhere.
                    await asyncio.sleep(min(0.01 * 2**attempt, 0.2))
            raise TimeoutError(f"{xid} stayed busy; will retry")
