"""A ready-made resource manager: a SQLite bank ledger.

Accounts with balances, plus durable prepared-intent records: a prepared vote is a row in
``prepared`` (with where to learn the outcome) and its changes in ``intents``, committed
with ``synchronous=FULL`` before the vote leaves, so it survives a crash of the process;
:meth:`Ledger.recover` finishes such transactions after a restart. Debits of prepared, undecided transactions are reserved: a later
transaction cannot spend them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import grpc

from rm_sdk.client import TransactionContext
from rm_sdk.participant import Participant
from rm_sdk.protocol import Vote, validate_id

__all__ = ["Ledger"]

log = logging.getLogger("paxos_commit.ledger")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS intents (
    txn_id TEXT NOT NULL, account TEXT NOT NULL, delta INTEGER NOT NULL,
    PRIMARY KEY (txn_id, account));
CREATE TABLE IF NOT EXISTS prepared (
    txn_id TEXT PRIMARY KEY, coordinator TEXT NOT NULL, acceptors TEXT NOT NULL);
"""


class Ledger:
    """A bank: ``debit``/``credit`` inside a transaction, applied only on commit."""

    def __init__(
        self,
        path: Path | str,
        rm_id: str,
        coordinators: Sequence[str],
        *,
        owner_timeout: float = 15.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.rm_id = validate_id("rm id", rm_id)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._pending: dict[str, dict[str, int]] = {}
        self._lock = asyncio.Lock()
        self.participant = Participant(
            self, coordinators, owner_timeout=owner_timeout, credentials=credentials
        )

    async def close(self) -> None:
        await self.participant.close()
        self._db.close()

    # ------------------------------------------------------------ application API

    def open_account(self, name: str, balance: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?)", (name, balance))

    def balances(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, balance FROM accounts ORDER BY name").fetchall())

    def in_doubt(self) -> list[str]:
        """Transactions this ledger has prepared but not finished (e.g. after a crash)."""
        return [r[0] for r in self._db.execute("SELECT txn_id FROM prepared ORDER BY txn_id")]

    async def recover(self) -> list[str]:
        """After a restart: learn the outcome of every in-doubt transaction and apply it
        (in the background; :meth:`Participant.applied` waits for one). Returns their ids."""
        rows = self._db.execute(
            "SELECT txn_id, coordinator, acceptors FROM prepared ORDER BY txn_id"
        ).fetchall()
        for txn_id, coordinator, acceptors in rows:
            await self.participant.resume(txn_id, json.loads(acceptors), coordinator)
        return [r[0] for r in rows]

    async def debit(self, ctx: TransactionContext, account: str, amount: int) -> None:
        await self._change(ctx, account, -amount)

    async def credit(self, ctx: TransactionContext, account: str, amount: int) -> None:
        await self._change(ctx, account, amount)

    async def _change(self, ctx: TransactionContext, account: str, delta: int) -> None:
        if self._db.execute("SELECT 1 FROM accounts WHERE name = ?", (account,)).fetchone() is None:
            raise KeyError(f"no account {account!r} at {self.rm_id}")
        await self.participant.join(ctx, defer=True)
        work = self._pending.setdefault(ctx.txn_id, {})
        work[account] = work.get(account, 0) + delta

    # ------------------------------------------------------------ ResourceManager

    async def prepare(self, txn_id: str) -> Vote:
        async with self._lock:
            work = self._pending.get(txn_id, {})
            for account, delta in work.items():
                if delta >= 0:
                    continue
                (balance,) = self._db.execute(
                    "SELECT balance FROM accounts WHERE name = ?", (account,)
                ).fetchone()
                (reserved,) = self._db.execute(
                    "SELECT COALESCE(SUM(delta), 0) FROM intents WHERE account = ? AND delta < 0", (account,)
                ).fetchone()
                if balance + reserved + delta < 0:
                    log.info("%s: refusing %s: insufficient funds in %s", self.rm_id, txn_id, account)
                    return Vote.ABORTED
            joined = self.participant.joined(txn_id)
            if joined is None:
                return Vote.ABORTED  # nothing to resume from after a crash: do not prepare
            ctx, acceptors = joined
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO intents VALUES (?, ?, ?)",
                    [(txn_id, a, d) for a, d in work.items()],
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO prepared VALUES (?, ?, ?)",
                    (txn_id, ctx.coordinator, json.dumps(acceptors)),
                )
                self._db.execute("COMMIT")  # durable before the vote leaves
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pending.pop(txn_id, None)
            return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        async with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT account, delta FROM intents WHERE txn_id = ?", (txn_id,)
                ).fetchall()
                for account, delta in rows:
                    self._db.execute(
                        "UPDATE accounts SET balance = balance + ? WHERE name = ?", (delta, account)
                    )
                self._db.execute("DELETE FROM intents WHERE txn_id = ?", (txn_id,))
                self._db.execute("DELETE FROM prepared WHERE txn_id = ?", (txn_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pending.pop(txn_id, None)

    async def abort(self, txn_id: str) -> None:
        async with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM intents WHERE txn_id = ?", (txn_id,))
            self._db.execute("DELETE FROM prepared WHERE txn_id = ?", (txn_id,))
            self._db.execute("COMMIT")
            self._pending.pop(txn_id, None)
