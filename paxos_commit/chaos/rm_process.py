"""A resource manager served in a process of its own, with durable SQLite state.

``python -m paxos_commit.chaos.rm_process --id rm-0 --db rm-0.db ...`` serves one RPC,
``Work`` (JSON over gRPC, no generated code): join the transaction named by a token and
remember a piece of work for it. The RM (:class:`SqliteRM`, run by an
``rm_sdk.Participant``) keeps three tables the checker reads afterwards:

- ``joined``: transactions whose join the registrar acknowledged (written after the join,
  before ``Work`` answers);
- ``prepared``: made durable (``synchronous=FULL``) before the vote leaves, deleted when
  the outcome is applied;
- ``applied``: append-only, one row per outcome applied (an idempotent re-apply of the same
  outcome adds nothing; a different outcome would add a second row, which the checker flags),
  with whether the transaction was prepared here when it was applied (a commit of work this
  RM never prepared is a violation too).

On a restart it resumes every prepared transaction (learning the outcome, never guessing)
and abandons every joined transaction it never prepared (an RM may abort on its own before
it prepared). This is also the ready way to serve an RM in its own process that outside
tests lacked: replace :class:`SqliteRM` with your resource.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc

from paxos_commit import serving
from rm_sdk import Participant, TransactionContext, Vote

__all__ = ["WORK_METHOD", "SqliteRM", "main", "work_stub"]

log = logging.getLogger("paxos_commit.chaos.rm")

#: The one RPC: request ``{"token": "txn@coordinator", "refuse": bool}``, reply ``{"ok": true}``.
WORK_METHOD = "/paxoscommit.chaos.v1.RM/Work"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS joined (txn_id TEXT PRIMARY KEY, coordinator TEXT NOT NULL,
    acceptors TEXT NOT NULL, refuse INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS prepared (txn_id TEXT PRIMARY KEY, coordinator TEXT NOT NULL,
    acceptors TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY AUTOINCREMENT, txn_id TEXT NOT NULL,
    outcome TEXT NOT NULL, at REAL NOT NULL, was_prepared INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS applied_txn ON applied (txn_id);
"""


def open_db(path: Path | str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(_SCHEMA)
    return db


class SqliteRM:
    """The ``ResourceManager``: every step is one durable SQLite transaction."""

    def __init__(self, rm_id: str, db: sqlite3.Connection) -> None:
        self.rm_id = rm_id
        self.db = db
        self.work: dict[str, bool] = {}  # txn_id -> refuse (lost on a crash, as work is)
        self.participant: Participant | None = None

    async def prepare(self, txn_id: str) -> Vote:
        refuse = self.work.get(txn_id)
        if refuse is None or refuse:
            return Vote.ABORTED  # refused by the workload, or the work died with a crash
        row = self.db.execute(
            "SELECT coordinator, acceptors FROM joined WHERE txn_id = ?", (txn_id,)
        ).fetchone()
        if row is None:
            return Vote.ABORTED
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT OR REPLACE INTO prepared VALUES (?, ?, ?)", (txn_id, row[0], row[1]))
        self.db.execute("COMMIT")  # durable before the vote leaves
        return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        self._apply(txn_id, "committed")

    async def abort(self, txn_id: str) -> None:
        self._apply(txn_id, "aborted")

    def _apply(self, txn_id: str, outcome: str) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            was_prepared = (
                self.db.execute("SELECT 1 FROM prepared WHERE txn_id = ?", (txn_id,)).fetchone() is not None
            )
            self.db.execute(
                "INSERT INTO applied (txn_id, outcome, at, was_prepared) SELECT ?, ?, ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM applied WHERE txn_id = ? AND outcome = ?)",
                (txn_id, outcome, time.time(), int(was_prepared), txn_id, outcome),
            )
            self.db.execute("DELETE FROM prepared WHERE txn_id = ?", (txn_id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.work.pop(txn_id, None)

    async def do_work(self, token: str, refuse: bool) -> None:
        assert self.participant is not None
        ctx = TransactionContext.parse(token)
        await self.participant.join(ctx)
        joined = self.participant.joined(ctx.txn_id)
        acceptors = joined[1] if joined else list(self.participant.acceptors)
        self.work.setdefault(ctx.txn_id, refuse)
        self.db.execute(
            "INSERT OR IGNORE INTO joined VALUES (?, ?, ?, ?, ?)",
            (ctx.txn_id, ctx.coordinator, json.dumps(acceptors), int(refuse), time.time()),
        )

    async def recover(self) -> tuple[int, int]:
        """After a restart: resume prepared transactions, abandon joined-only ones."""
        assert self.participant is not None
        prepared = self.db.execute("SELECT txn_id, coordinator, acceptors FROM prepared").fetchall()
        for txn_id, coordinator, acceptors in prepared:
            await self.participant.resume(txn_id, json.loads(acceptors), coordinator)
        orphans = self.db.execute(
            "SELECT txn_id, acceptors FROM joined WHERE txn_id NOT IN (SELECT txn_id FROM prepared) "
            "AND txn_id NOT IN (SELECT txn_id FROM applied)"
        ).fetchall()
        for txn_id, acceptors in orphans:
            await self.participant.abandon(txn_id, json.loads(acceptors))
        return len(prepared), len(orphans)


def _json_handler(rm: SqliteRM) -> grpc.GenericRpcHandler[bytes, bytes]:
    async def work(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        req = json.loads(request)
        try:
            await rm.do_work(str(req["token"]), bool(req.get("refuse", False)))
        except grpc.aio.AioRpcError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"join failed: {exc.code().name}")
        except (KeyError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return b'{"ok": true}'

    handler = grpc.unary_unary_rpc_method_handler(work, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler("paxoscommit.chaos.v1.RM", {"Work": handler})


def work_stub(channel: grpc.aio.Channel) -> Any:
    """A callable for :data:`WORK_METHOD` on ``channel`` (bytes in, bytes out)."""
    return channel.unary_unary(WORK_METHOD, None, None)


def _write_port_file(path: Path, address: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid()}))
    tmp.replace(path)


async def serve(args: argparse.Namespace) -> None:
    db = open_db(args.db)
    rm = SqliteRM(args.id, db)
    rm.participant = Participant(
        rm,
        args.coordinators.split(","),
        acceptors=args.acceptors.split(","),
        owner_timeout=args.owner_timeout,
        recovery_timeout=args.recovery_timeout,
        rpc_timeout=2.0,
    )
    resumed, abandoned = await rm.recover()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_json_handler(rm),))
    port = server.add_insecure_port(args.listen)
    await server.start()
    if args.port_file:
        _write_port_file(Path(args.port_file), f"{args.listen.rsplit(':', 1)[0]}:{port}")
    print(f"rm {args.id} serving on port {port}; resumed {resumed}, abandoned {abandoned}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    await rm.participant.close()
    db.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="paxos_commit.chaos.rm_process")
    p.add_argument("--id", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--listen", default="0.0.0.0:7200")
    p.add_argument("--coordinators", required=True)
    p.add_argument("--acceptors", required=True)
    p.add_argument("--owner-timeout", type=float, default=5.0)
    p.add_argument("--recovery-timeout", type=float, default=6.0)
    p.add_argument("--port-file", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serving.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
