"""``paxos-commit soak``: many transactions at the benchmark's F=1 workload, printing, every
10% of the run, commits/s, each acceptor's database bytes and row counts, and each
process's RSS: whether finished transactions are collected and memory stays bounded.

The cluster is the benchmark's (``paxos_commit/bench.py``): 3 acceptor processes (SQLite,
or one Postgres database each with ``--postgres``), one coordinator, and in this process
the application and two resource managers whose prepare is free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paxos_commit.bench import NullRM
from paxos_commit.cluster import LocalCluster
from paxos_commit.preflight import require_postgres
from rm_sdk import Client, Participant

__all__ = ["run_soak"]

#: Acceptor gauges read from /metrics (paxos_commit_acceptor_<name>).
_GAUGES = {
    "database_bytes": "db_bytes",
    "transactions_live": "txn_rows",
    "instance_rows": "instance_rows",
    "outcome_records": "outcome_records",
    "transactions_collectable": "collectable",
    "oldest_unacknowledged_age_seconds": "oldest_unacked_s",
}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _acceptor_figures(port: int | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if not port:
        return out
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if not line.startswith("paxos_commit_acceptor_"):
            continue
        name, _, value = line.partition(" ")
        key = _GAUGES.get(name.removeprefix("paxos_commit_acceptor_"))
        if key is not None:
            out[key] = float(value)
    return out


@contextlib.contextmanager
def _postgres_databases(dsn: str, n: int) -> Iterator[list[str]]:
    """``n`` fresh databases on the server of ``dsn`` (dropped at the end)."""
    import psycopg

    names = [f"paxos_soak_{uuid.uuid4().hex[:8]}_{i}" for i in range(n)]
    require_postgres(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    base = psycopg.conninfo.conninfo_to_dict(dsn)
    urls = []
    for name in names:
        user = base.get("user", "postgres")
        host = base.get("host", "127.0.0.1")
        port = base.get("port", 5432)
        pw = f":{base['password']}" if base.get("password") else ""
        urls.append(f"postgresql+psycopg://{user}{pw}@{host}:{port}/{name}")
    try:
        yield urls
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _soak(args: argparse.Namespace, root: Path, urls: list[str] | None) -> dict[str, Any]:
    cluster = LocalCluster(
        root / "f1",
        n_acceptors=3,
        n_coordinators=1,
        recovery_interval=0,
        acceptor_urls=urls,
        acceptor_args=["--collect-retention", str(args.retention), "--collect-interval", "0.5"],
    )
    cluster.start()
    rows: list[dict[str, Any]] = []
    try:
        coords = cluster.coordinator_addresses
        # TLS on, as a user runs it (and as the bench does): each client its own identity.
        client = Client(coords, credentials=cluster.credentials("app", "soak"))
        rms = [
            Participant(NullRM(f"rm-{i}"), coords, credentials=cluster.credentials("rm", f"rm-{i}"))
            for i in range(2)
        ]
        procs = {p.name: p for p in [*cluster.acceptors, *cluster.coordinators]}
        n = args.transactions
        step = max(1, n // 10)
        done = 0
        failures = 0
        issued = iter(range(n))
        marks: asyncio.Queue[int] = asyncio.Queue()

        async def one() -> None:
            nonlocal done, failures
            txn = await client.begin()
            await asyncio.gather(*(rm.join(txn.context) for rm in rms))
            try:
                await txn.commit()
            except Exception:
                failures += 1
            done += 1
            if done % step == 0:
                marks.put_nowait(done)

        async def worker() -> None:
            for _ in issued:
                await one()

        def snapshot(at: int, seconds: float, commits: int) -> dict[str, Any]:
            row: dict[str, Any] = {
                "done": at,
                "percent": round(100 * at / n),
                "commits_per_s": round(commits / seconds, 1) if seconds > 0 else None,
                "acceptors": [
                    {"id": i, **_acceptor_figures(p.metrics_port)} for i, p in enumerate(cluster.acceptors)
                ],
                "rss_mb": {name: _rss_mb(p.pid) for name, p in procs.items()},
                "participant_states": [len(rm.states) for rm in rms],
            }
            row["rss_mb"]["application+rms"] = _rss_mb(os.getpid())
            return row

        t0 = time.perf_counter()
        workers = asyncio.gather(*(worker() for _ in range(args.concurrency)))
        last_t, last_done = t0, 0
        while last_done < (n // step) * step:
            at = await marks.get()
            now = time.perf_counter()
            row = snapshot(at, now - last_t, at - last_done)
            rows.append(row)
            last_t, last_done = now, at
            if args.json:
                # progress as it comes, so that a long run that dies still leaves its rows
                print(json.dumps(row), file=sys.stderr, flush=True)
            else:
                accs = "; ".join(
                    f"a{a['id']} {a.get('db_bytes', 0) / 1e6:.2f} MB txn {a.get('txn_rows', 0):.0f} "
                    f"ins {a.get('instance_rows', 0):.0f} rec {a.get('outcome_records', 0):.0f}"
                    for a in row["acceptors"]
                )
                rss = ", ".join(f"{k} {v}" for k, v in row["rss_mb"].items())
                print(
                    f"{row['percent']:3d}% {at:>8} txns {row['commits_per_s']:>7}/s | {accs} | RSS MB {rss}",
                    flush=True,
                )
        await workers
        elapsed = time.perf_counter() - t0
        for rm in rms:
            await rm.close()
        await client.close()
        return {
            "transactions": n,
            "failures": failures,
            "concurrency": args.concurrency,
            "retention_s": args.retention,
            "storage": "postgres" if urls else "sqlite",
            "seconds": round(elapsed, 1),
            "rows": rows,
        }
    finally:
        cluster.stop()


async def run_soak(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="paxos-commit-soak-") as tmp:
        if args.postgres:
            with _postgres_databases(args.postgres, 3) as urls:
                result = await _soak(args, Path(tmp), urls)
        else:
            result = await _soak(args, Path(tmp), None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['transactions']} transactions in {result['seconds']} s, {result['failures']} failed")
    return 1 if result["failures"] else 0
