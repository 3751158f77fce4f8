"""A ready-made resource manager: a Postgres database, with real prepared transactions.

The service does its work in an ordinary psycopg 3 :class:`psycopg.AsyncConnection` that
the RM hands out for the transaction::

    pg = PostgresRM("dbname=shop", "shop-db", coordinators, acceptors=acceptors)
    await pg.recover()                       # at start: finish what a crash left prepared
    async with pg.work(ctx) as conn:         # joins the transaction
        await conn.execute("UPDATE stock SET n = n - 1 WHERE item = %s", (item,))

The connection is inside a two-phase transaction (``tpc_begin``) with the global
transaction id :func:`gid` = ``"pc1:<rm_id>:<txn_id>"``. At vote time the SDK issues
``PREPARE TRANSACTION`` (``tpc_prepare``): the work is durable in Postgres and holds its
locks before the ``prepared`` vote leaves (DESIGN.md pitfall 3). The outcome is applied
with ``COMMIT PREPARED`` / ``ROLLBACK PREPARED`` from a fresh connection. Several
``work`` blocks of one transaction share one connection, one at a time.

SQLAlchemy: bind a session to the connection's driver connection, e.g. an
``AsyncEngine`` made with ``async_creator`` returning ``conn`` and ``poolclass=NullPool``;
or, simpler, run Core statements with ``conn.execute(str(stmt.compile(...)))``. Do not call
``commit``/``rollback`` on the session: the RM ends the transaction.

A failure to prepare (a serialization failure, a deferred constraint, the database gone)
is a ``no`` vote, its reason logged; an exception raised inside a ``work`` block marks the
transaction to be voted ``no`` too. Outcome delivery is idempotent: an outcome for a gid
no longer prepared is a no-op; while the database is down, commit and abort raise and the
:class:`~rm_sdk.participant.Participant` retries them with capped backoff.

In-doubt recovery: :meth:`PostgresRM.recover` (call at start and then periodically, e.g.
with :meth:`PostgresRM.recover_periodically`) lists this RM's prepared transactions
(``tpc_recover``, filtered by the gid prefix and the current database) and finishes each:
the outcome comes from a coordinator or, if none answers in ``recovery_timeout``, from the
acceptors (the RM runs higher ballots itself). Configure ``acceptors`` so that works right
after a restart; otherwise the acceptors learned at the first join are used.

Needs ``psycopg`` 3 (the ``postgres`` extra) and ``max_prepared_transactions > 0`` on the
server. Gids are unique per Postgres cluster: RM ids of RMs sharing a cluster must differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import psycopg
import psycopg.errors
from psycopg.rows import TupleRow

from rm_sdk.client import TransactionContext
from rm_sdk.participant import Participant
from rm_sdk.protocol import Vote, validate_id

__all__ = ["GID_PREFIX", "PostgresRM", "gid", "parse_gid"]

log = logging.getLogger("paxos_commit.postgres")

#: Version tag of the gid format ``pc1:<rm_id>:<txn_id>``.
GID_PREFIX = "pc1"


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
    conn: psycopg.AsyncConnection[TupleRow] | None = None
    #: Why this transaction must vote no ("" while it may still prepare).
    failed: str = ""


class PostgresRM:
    """A Postgres database as a resource manager of Paxos Commit transactions."""

    def __init__(
        self,
        dsn: str,
        rm_id: str,
        coordinators: Sequence[str],
        *,
        acceptors: Sequence[str] = (),
        owner_timeout: float = 15.0,
        recovery_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.rm_id = validate_id("rm id", rm_id)
        self.connect_timeout = connect_timeout
        self._work: dict[str, _Work] = {}
        self.participant = Participant(
            self,
            coordinators,
            owner_timeout=owner_timeout,
            recovery_timeout=recovery_timeout,
            acceptors=acceptors,
        )

    async def close(self) -> None:
        """Stop the participant and close open work connections (their unprepared work
        rolls back; prepared transactions stay prepared, for :meth:`recover`)."""
        await self.participant.close()
        for w in list(self._work.values()):
            if w.conn is not None:
                await w.conn.close()
        self._work.clear()

    def gid(self, txn_id: str) -> str:
        """This RM's gid for ``txn_id``: ``pc1:<rm_id>:<txn_id>``."""
        return gid(self.rm_id, txn_id)

    async def connect(self, *, autocommit: bool = True) -> psycopg.AsyncConnection[TupleRow]:
        """A new connection to this RM's database."""
        return await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=autocommit, connect_timeout=max(1, int(self.connect_timeout))
        )

    # ------------------------------------------------------------ application API

    @contextlib.asynccontextmanager
    async def work(self, ctx: TransactionContext) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        """Join ``ctx``'s transaction and yield a connection inside its two-phase
        transaction. An exception in the block makes this RM vote no (and propagates)."""
        w = self._work.get(ctx.txn_id)
        if w is None:
            w = self._work[ctx.txn_id] = _Work()
        async with w.lock:
            if w.failed:
                raise RuntimeError(f"transaction {ctx.txn_id} already failed at {self.rm_id}: {w.failed}")
            try:
                await self.participant.join(ctx)
            except BaseException:
                if w.conn is None:
                    self._work.pop(ctx.txn_id, None)
                raise
            try:
                if w.conn is None:
                    conn = await self.connect(autocommit=False)
                    try:
                        await conn.tpc_begin(self.gid(ctx.txn_id))
                    except BaseException:
                        await conn.close()
                        raise
                    w.conn = conn
                yield w.conn
            except BaseException as exc:
                w.failed = f"{type(exc).__name__}: {exc}"
                log.info("%s: work of %s failed, will vote no: %s", self.rm_id, ctx.txn_id, w.failed)
                raise

    async def in_doubt(self) -> list[str]:
        """Transactions this RM holds prepared in its database (by their transaction id)."""
        async with await self.connect() as conn:
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
        (:meth:`Participant.wait` waits for one). Returns their transaction ids."""
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

    # ------------------------------------------------------------ ResourceManager

    async def prepare(self, txn_id: str) -> Vote:
        """``PREPARE TRANSACTION``; any failure is a no vote with its reason logged."""
        w = self._work.get(txn_id)
        if w is None:
            log.info("%s: asked to prepare %s with no work here: voting no", self.rm_id, txn_id)
            return Vote.ABORTED
        async with w.lock:
            if w.failed or w.conn is None:
                log.info("%s: voting no on %s: %s", self.rm_id, txn_id, w.failed or "no connection")
                return Vote.ABORTED
            try:
                await w.conn.tpc_prepare()
            except Exception as exc:
                w.failed = f"prepare failed: {type(exc).__name__}: {exc}"
                log.warning("%s: voting no on %s: %s", self.rm_id, txn_id, w.failed)
                return Vote.ABORTED
            # Prepared: the transaction now lives in Postgres, not in this session.
            conn, w.conn = w.conn, None
            self._work.pop(txn_id, None)
            await conn.close()
            return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        """``COMMIT PREPARED``; a no-op if the gid is no longer prepared. Raises while the
        database cannot be reached, so the participant retries."""
        await self._finish(txn_id, commit=True)

    async def abort(self, txn_id: str) -> None:
        """Roll back unprepared work, or ``ROLLBACK PREPARED``; a no-op if nothing is left."""
        w = self._work.pop(txn_id, None)
        if w is not None and w.conn is not None:
            if w.lock.locked():
                # A work block may be running a statement on this connection (e.g. waiting
                # for a row lock). Cancel the statement and let the block end before we
                # close: closing a socket another task still waits on corrupts the event
                # loop's registration of its file descriptor, and the next connection that
                # reuses the number hangs.
                with contextlib.suppress(psycopg.Error, TimeoutError):
                    await asyncio.wait_for(w.conn.cancel_safe(), 5.0)
            async with w.lock:
                conn, w.conn = w.conn, None
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()  # closing an unprepared session rolls its work back
        await self._finish(txn_id, commit=False)

    async def _finish(self, txn_id: str, *, commit: bool) -> None:
        xid = self.gid(txn_id)
        async with await self.connect() as conn:
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
