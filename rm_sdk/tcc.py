"""TCC resource managers: try / confirm / cancel callbacks for resources that are not
databases (a reservation in a remote API, a file, a message to send on commit).

::

    async def reserve(txn_id: str, payload: dict[str, Any]) -> None: ...   # raise to refuse
    async def confirm(txn_id: str, payload: dict[str, Any]) -> None: ...
    async def cancel(txn_id: str, payload: dict[str, Any]) -> None: ...

    seats = TccParticipant("seats.db", "seats", coordinators, try_=reserve, confirm=confirm, cancel=cancel)
    await seats.recover()                               # at start
    await seats.enlist(ctx, {"flight": "LH400", "seat": "12A"})   # in the service call

:meth:`TccParticipant.enlist` joins the transaction, records the payload durably, then
calls ``try_`` (so its error reaches the caller at once, and the transaction aborts). At vote time the SDK makes the record ``prepared`` in SQLite (``synchronous=FULL``)
before the ``prepared`` vote leaves (DESIGN.md pitfall 3). On the outcome each enlisted
payload gets ``confirm`` or ``cancel``; then the record goes. A failed ``try_`` aborts the
transaction at once (:meth:`~rm_sdk.participant.Participant.refuse`): its payloads are
cancelled and ``commit()`` raises :class:`~rm_sdk.client.RMRefused` with the error. One
SQLite connection serves every transaction (none is opened per transaction).

After a crash, :meth:`TccParticipant.recover` finishes prepared records (the outcome is
learned, never guessed) and cancels records that never prepared (an RM may abort on its
own before it voted). Hence the callbacks' contract: ``confirm`` and ``cancel`` are
idempotent (they may run again after a crash), and ``cancel`` must cope with a ``try_``
that never ran or did not finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from rm_sdk.client import TransactionContext
from rm_sdk.participant import Participant
from rm_sdk.protocol import Vote, validate_id

__all__ = ["TccCallback", "TccParticipant"]

log = logging.getLogger("paxos_commit.tcc")

#: A try, confirm or cancel step: ``(txn_id, payload)``; the payload is JSON-compatible.
TccCallback = Callable[[str, Any], Awaitable[None]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tcc_txns (
    txn_id TEXT PRIMARY KEY, state TEXT NOT NULL, coordinator TEXT NOT NULL, acceptors TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tcc_actions (
    txn_id TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (txn_id, seq));
"""


class TccParticipant:
    """A resource manager made of three async callbacks, with a durable SQLite journal."""

    def __init__(
        self,
        path: Path | str,
        rm_id: str,
        coordinators: Sequence[str],
        *,
        try_: TccCallback,
        confirm: TccCallback,
        cancel: TccCallback,
        acceptors: Sequence[str] = (),
        owner_timeout: float = 15.0,
        recovery_timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.rm_id = validate_id("rm id", rm_id)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._try, self._confirm, self._cancel = try_, confirm, cancel
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._failed: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.participant = Participant(
            self,
            coordinators,
            owner_timeout=owner_timeout,
            recovery_timeout=recovery_timeout,
            acceptors=acceptors,
            credentials=credentials,
        )

    async def close(self) -> None:
        """Stop the participant and close the journal (records stay for :meth:`recover`)."""
        await self.participant.close()
        self._db.close()

    # ------------------------------------------------------------ application API

    async def enlist(self, ctx: TransactionContext, payload: Any) -> None:
        """Join ``ctx``'s transaction and run ``try_(txn_id, payload)``. If it raises, the
        exception propagates and this RM votes no on the transaction."""
        await self.participant.join(ctx)
        joined = self.participant.joined(ctx.txn_id)
        if joined is None:
            raise RuntimeError(f"transaction {ctx.txn_id} already finished at {self.rm_id}")
        _, acceptors = joined
        data = json.dumps(payload)
        async with self._lock:
            if self._failed.get(ctx.txn_id):
                raise RuntimeError(f"transaction {ctx.txn_id} already failed at {self.rm_id}")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO tcc_txns VALUES (?, 'working', ?, ?)",
                    (ctx.txn_id, ctx.coordinator, json.dumps(acceptors)),
                )
                (seq,) = self._db.execute(
                    "SELECT COALESCE(MAX(seq), -1) + 1 FROM tcc_actions WHERE txn_id = ?", (ctx.txn_id,)
                ).fetchone()
                self._db.execute("INSERT INTO tcc_actions VALUES (?, ?, ?)", (ctx.txn_id, seq, data))
                self._db.execute("COMMIT")  # before try_: a crash after it must cancel
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        try:
            await self._try(ctx.txn_id, payload)
        except BaseException as exc:
            reason = self._failed[ctx.txn_id] = f"try failed: {type(exc).__name__}: {exc}"
            log.info("%s: %s: %s; voting no", self.rm_id, ctx.txn_id, reason)
            # Abort at once (allowed: not prepared): cancel runs and the vote leaves now,
            # so the transaction need not wait for its commit or a timeout.
            refusal = self.participant.refuse(ctx.txn_id, reason)
            if isinstance(exc, Exception):
                await refusal
            else:
                asyncio.get_running_loop().create_task(refusal)
            raise

    def in_doubt(self) -> list[str]:
        """Transactions recorded as prepared and not yet finished."""
        return [
            r[0] for r in self._db.execute("SELECT txn_id FROM tcc_txns WHERE state = 'prepared' ORDER BY 1")
        ]

    async def recover(self) -> list[str]:
        """Finish what a crash left: prepared records learn their outcome (in the
        background; :meth:`Participant.applied` waits for one), records that never prepared
        are cancelled now. Skips transactions this process is running. Returns the ids
        of the prepared ones resumed."""
        rows = self._db.execute(
            "SELECT txn_id, state, coordinator, acceptors FROM tcc_txns ORDER BY 1"
        ).fetchall()
        resumed = []
        for txn_id, state, coordinator, acceptors in rows:
            if self.participant.active(txn_id):
                continue
            if state == "prepared":
                await self.participant.resume(txn_id, json.loads(acceptors), coordinator)
                resumed.append(txn_id)
            else:
                log.info("%s: cancelling %s, which never prepared", self.rm_id, txn_id)
                await self.participant.abandon(txn_id, json.loads(acceptors))
        return resumed

    # ------------------------------------------------------------ ResourceManager

    async def prepare(self, txn_id: str) -> Vote:
        """Vote no if a try failed; else make the record prepared, durably, and vote yes."""
        async with self._lock:
            if self._failed.get(txn_id):
                log.info("%s: voting no on %s: %s", self.rm_id, txn_id, self._failed[txn_id])
                return Vote.ABORTED
            cur = self._db.execute("UPDATE tcc_txns SET state = 'prepared' WHERE txn_id = ?", (txn_id,))
            if cur.rowcount != 1:
                log.info("%s: voting no on %s: nothing enlisted here", self.rm_id, txn_id)
                return Vote.ABORTED
            return Vote.PREPARED  # autocommit + synchronous=FULL: durable before the vote

    async def commit(self, txn_id: str) -> None:
        """Confirm every payload, then forget the transaction (a no-op if unknown)."""
        await self._finish(txn_id, self._confirm)

    async def abort(self, txn_id: str) -> None:
        """Cancel every payload, then forget the transaction (a no-op if unknown)."""
        await self._finish(txn_id, self._cancel)

    async def _finish(self, txn_id: str, step: TccCallback) -> None:
        payloads = [
            json.loads(r[0])
            for r in self._db.execute(
                "SELECT payload FROM tcc_actions WHERE txn_id = ? ORDER BY seq", (txn_id,)
            )
        ]
        for payload in payloads:
            await step(txn_id, payload)  # raising: the participant retries the whole step
        async with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM tcc_actions WHERE txn_id = ?", (txn_id,))
            self._db.execute("DELETE FROM tcc_txns WHERE txn_id = ?", (txn_id,))
            self._db.execute("COMMIT")
            self._failed.pop(txn_id, None)
