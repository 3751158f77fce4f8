"""``paxos-commit bench --postgres DSN``: a transfer between two Postgres databases, three ways.

In one sitting, for each concurrency level (closed loop, ``c`` workers) and each run:

- ``hand_rolled``: a blocking two-phase commit written directly over psycopg, the
  comparator. Each worker keeps one connection per bank. ``BEGIN``, the UPDATE at bank A,
  the UPDATE at bank B, ``PREPARE TRANSACTION`` at both (concurrently), the decision
  forced to a log table (an autocommit INSERT into ``decision_log`` at bank A, whose
  session is free once prepared), then ``COMMIT PREPARED`` at both (concurrently).
- ``f0`` / ``f1``: paxos-commit with one coordinator and 2F+1 acceptor processes (SQLite,
  ``synchronous=FULL``), and two :class:`~rm_sdk.postgres.PostgresRM` in this process:
  ``begin``, a ``work`` block at each bank, ``commit()``, then ``applied()`` at both.

A transfer counts once both banks applied it. Per-phase medians: ``begin``, ``work`` (the
two work blocks, joins included), ``begin_work`` (the two together), ``commit_reply``
(from the end of the work to the commit reply; for the hand-rolled one, until the
decision row is durable) and ``applied``
(from the reply until both banks ran ``COMMIT PREPARED``). Each bank has ``--accounts``
accounts; a transfer moves 1 from a random account at A to a random account at B.
The databases are made for the benchmark and dropped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from paxos_commit.bench import _cpu_seconds, _machine_busy
from paxos_commit.cluster import LocalCluster
from paxos_commit.preflight import require_postgres
from rm_sdk import Client, RMState
from rm_sdk.postgres import PostgresRM

__all__ = ["run_postgres_bench"]

#: (begin, the two work blocks, commit reply, applied) seconds, each from the previous point.
Phases = tuple[float, float, float, float]


def _setup(dsn: str, names: list[str], accounts: int) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsns = [make_conninfo(dsn, dbname=name) for name in names]
    for d in dsns:
        with psycopg.connect(d, autocommit=True) as conn:
            conn.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
            conn.execute(
                "INSERT INTO accounts SELECT i, 1000000 FROM generate_series(0, %s) AS i", (accounts - 1,)
            )
            conn.execute("CREATE TABLE decision_log (gid TEXT PRIMARY KEY, decision TEXT NOT NULL)")
    return dsns


def _teardown(dsn: str, names: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            rows = conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)).fetchall()
            if rows:
                with psycopg.connect(make_conninfo(dsn, dbname=name), autocommit=True) as db:
                    for (g,) in rows:
                        db.tpc_rollback(g)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _postgres_busy() -> float:
    """CPU seconds of every Postgres server process so far (the banks' work, here)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() in ("postgres", "postmaster"):
                total += _cpu_seconds(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


def _cpu_now(procs: dict[str, int]) -> dict[str, float]:
    out = {name: _cpu_seconds(pid) for name, pid in procs.items()}
    out["application+rms"] = time.process_time()
    out["postgres"] = _postgres_busy()
    out["machine"] = _machine_busy()
    return out


async def _closed_loop(
    one: Callable[[], Awaitable[Phases]],
    concurrency: int,
    n: int,
    warmup: int,
    procs: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``procs``: the cluster's processes (name: pid), whose CPU is reported with this
    process's, Postgres's and the whole machine's (CPU ms per transfer)."""
    phases: list[Phases] = []
    failures = 0

    async def run(count: int, record: bool) -> float:
        todo = iter(range(count))

        async def worker() -> None:
            nonlocal failures
            for _ in todo:
                try:
                    p = await one()
                except Exception as exc:
                    failures += 1
                    if failures <= 3:
                        print(f"transfer failed: {exc!r}", file=sys.stderr, flush=True)
                    continue
                if record:
                    phases.append(p)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0

    await run(warmup, record=False)
    cpu0 = _cpu_now(procs or {})
    elapsed = await run(n, record=True)
    cpu1 = _cpu_now(procs or {})
    total = sorted(sum(p) for p in phases)

    def ms(x: float) -> float:
        return round(x * 1000, 2)

    return {
        "concurrency": concurrency,
        "transactions": n,
        "failures": failures,
        "transfers_per_s": round(len(phases) / elapsed, 1),
        "latency_ms_p50": ms(statistics.median(total)) if total else None,
        "latency_ms_p99": ms(total[max(0, int(len(total) * 0.99) - 1)]) if total else None,
        "median_ms": {
            name: ms(statistics.median(p[k] for p in phases)) if phases else None
            for k, name in enumerate(("begin", "work", "commit_reply", "applied"))
        }
        | {"begin_work": ms(statistics.median(p[0] + p[1] for p in phases)) if phases else None},
        # CPU per transfer: where the machine's two cores went ("machine": all of it).
        "cpu_ms_per_txn": {k: round((cpu1[k] - cpu0[k]) * 1000 / max(1, len(phases)), 3) for k in cpu1},
    }


async def _hand_rolled(
    dsns: list[str], accounts: int, concurrency: int, n: int, warmup: int
) -> dict[str, Any]:
    rng = random.Random(1)
    free: asyncio.Queue[tuple[psycopg.AsyncConnection[Any], psycopg.AsyncConnection[Any]]] = asyncio.Queue()
    conns = []
    for _ in range(concurrency):
        pair = (
            await psycopg.AsyncConnection.connect(dsns[0], autocommit=True),
            await psycopg.AsyncConnection.connect(dsns[1], autocommit=True),
        )
        conns.append(pair)
        free.put_nowait(pair)

    async def one() -> Phases:
        a, b = await free.get()
        # Gids are unique per Postgres cluster: one per bank.
        name = uuid.uuid4().hex
        ga, gb = sql.Literal(f"bench2pc:{name}:a"), sql.Literal(f"bench2pc:{name}:b")
        try:
            t0 = time.perf_counter()
            await a.execute("BEGIN")
            await a.execute(
                "UPDATE accounts SET balance = balance - 1 WHERE id = %s", (rng.randrange(accounts),)
            )
            await b.execute("BEGIN")
            await b.execute(
                "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (rng.randrange(accounts),)
            )
            t1 = time.perf_counter()  # (no begin: the BEGINs are part of the work)
            await asyncio.gather(
                a.execute(sql.SQL("PREPARE TRANSACTION {}").format(ga)),
                b.execute(sql.SQL("PREPARE TRANSACTION {}").format(gb)),
            )
            await a.execute(sql.SQL("INSERT INTO decision_log VALUES ({}, 'commit')").format(ga))
            t2 = time.perf_counter()
            await asyncio.gather(
                a.execute(sql.SQL("COMMIT PREPARED {}").format(ga)),
                b.execute(sql.SQL("COMMIT PREPARED {}").format(gb)),
            )
            t3 = time.perf_counter()
            return (0.0, t1 - t0, t2 - t1, t3 - t2)
        except Exception:
            for conn, g in ((a, ga), (b, gb)):
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(g))
            raise
        finally:
            free.put_nowait((a, b))

    try:
        return await _closed_loop(one, concurrency, n, warmup)
    finally:
        for a, b in conns:
            await a.close()
            await b.close()


async def _paxos(
    f: int, dsns: list[str], root: Path, args: argparse.Namespace, levels: list[int]
) -> dict[int, dict[str, Any]]:
    cluster = LocalCluster(root, n_acceptors=2 * f + 1, n_coordinators=1, recovery_interval=0)
    cluster.start()
    out: dict[int, dict[str, Any]] = {}
    try:
        coords, accs = cluster.coordinator_addresses, cluster.acceptor_addresses
        size = args.pool_size
        bank_a = PostgresRM(
            dsns[0], "bench-a", coords, acceptors=accs, min_size=2, max_size=size,
            credentials=cluster.credentials("rm", "bench-a"),
        )  # fmt: skip
        bank_b = PostgresRM(
            dsns[1], "bench-b", coords, acceptors=accs, min_size=2, max_size=size,
            credentials=cluster.credentials("rm", "bench-b"),
        )  # fmt: skip
        client = Client(coords, credentials=cluster.credentials("app", "bench"))
        rng = random.Random(2)
        procs = {p.name: p.pid for p in [*cluster.acceptors, *cluster.coordinators]}

        async def one() -> Phases:
            t0 = time.perf_counter()
            txn = await client.begin()
            tb = time.perf_counter()
            async with bank_a.work(txn.context) as conn:
                await conn.execute(
                    "UPDATE accounts SET balance = balance - 1 WHERE id = %s", (rng.randrange(args.accounts),)
                )
            async with bank_b.work(txn.context) as conn:
                await conn.execute(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (rng.randrange(args.accounts),)
                )
            t1 = time.perf_counter()
            await txn.commit()
            t2 = time.perf_counter()
            states = await asyncio.gather(bank_a.applied(txn.txn_id), bank_b.applied(txn.txn_id))
            t3 = time.perf_counter()
            if any(s is not RMState.COMMITTED for s in states):
                raise RuntimeError(f"applied {states}")
            return (tb - t0, t1 - tb, t2 - t1, t3 - t2)

        try:
            for c in levels:
                out[c] = await _closed_loop(one, c, args.transactions, args.warmup, procs)
        finally:
            await client.close()
            await bank_a.close()
            await bank_b.close()
    finally:
        cluster.stop()
    return out


def _ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 3) if x and y else None


async def run_postgres_bench(args: argparse.Namespace) -> int:
    levels = list(args.levels or (1, 8, 32))
    # Each transfer prepares one transaction at each bank: 2 x concurrency at once. Below
    # that every vote comes back no, and the run would report 0 transfers/s.
    await asyncio.to_thread(
        require_postgres,
        args.postgres,
        prepared=2 * max(levels),
        why=f"concurrency {max(levels)} (one prepared transaction per bank per transfer)",
    )
    tag = uuid.uuid4().hex[:8]
    names = [f"pc_bench_{tag}_a", f"pc_bench_{tag}_b"]
    runs: list[dict[str, Any]] = []
    failures = 0
    dsns = await asyncio.to_thread(_setup, args.postgres, names, args.accounts)
    try:
        with tempfile.TemporaryDirectory(prefix="paxos-commit-bench-pg-") as tmp:
            for r in range(args.runs):
                hand = {
                    c: await _hand_rolled(dsns, args.accounts, c, args.transactions, args.warmup)
                    for c in levels
                }
                f0 = await _paxos(0, dsns, Path(tmp) / f"run{r}-f0", args, levels)
                f1 = await _paxos(1, dsns, Path(tmp) / f"run{r}-f1", args, levels)
                run: dict[str, Any] = {"run": r + 1, "levels": {}}
                for c in levels:
                    run["levels"][str(c)] = {
                        "hand_rolled": hand[c],
                        "f0": f0[c],
                        "f1": f1[c],
                        "f0_over_hand_rolled": _ratio(f0[c]["transfers_per_s"], hand[c]["transfers_per_s"]),
                        "f1_over_hand_rolled": _ratio(f1[c]["transfers_per_s"], hand[c]["transfers_per_s"]),
                    }
                    failures += sum(x[c]["failures"] for x in (hand, f0, f1))
                runs.append(run)
                if not args.json:
                    _print_run(run)
    finally:
        await asyncio.to_thread(_teardown, args.postgres, names)
    report = {
        "accounts_per_bank": args.accounts,
        "transactions_per_measurement": args.transactions,
        "pool_max_size": args.pool_size,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    return 1 if failures else 0


def _print_run(run: dict[str, Any]) -> None:
    print(f"run {run['run']}")
    for c, row in run["levels"].items():
        for name in ("hand_rolled", "f0", "f1"):
            r = row[name]
            m = r["median_ms"]
            ratio = "" if name == "hand_rolled" else f"  x{row[f'{name}_over_hand_rolled']} of hand-rolled"
            print(
                f"  c={c:>2} {name:<11} {r['transfers_per_s']:>7}/s  p50 {r['latency_ms_p50']} ms"
                f"  (begin {m['begin']}, work {m['work']}, commit reply {m['commit_reply']}, "
                f"applied {m['applied']})"
                f"{ratio}",
                flush=True,
            )
            cpu = r["cpu_ms_per_txn"]
            print(
                "      CPU ms/transfer: " + ", ".join(f"{k} {v}" for k, v in cpu.items()),
                flush=True,
            )
