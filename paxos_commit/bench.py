"""``paxos-commit bench``: commits/s and latency for F=0 (classic 2PC) and F=1, one run.

Each configuration gets a fresh local cluster (2F+1 acceptor processes on SQLite with
``synchronous=FULL``, one coordinator process). The benchmark process plays the
application and ``--rms`` resource managers whose prepare is free, so the figures measure
the protocol and its durable writes, not a database's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Participant, TransactionContext, Vote

__all__ = ["run_bench"]


class NullRM:
    """A resource manager with nothing to make durable."""

    def __init__(self, rm_id: str) -> None:
        self.rm_id = rm_id

    async def prepare(self, txn_id: str) -> Vote:
        return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        return None

    async def abort(self, txn_id: str) -> None:
        return None


async def _measure(f: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = LocalCluster(root / f"f{f}", n_acceptors=2 * f + 1, n_coordinators=1, recovery_interval=0)
    cluster.start()
    try:
        coords = cluster.coordinator_addresses
        client = Client(coords)
        rms = [Participant(NullRM(f"rm-{i}"), coords) for i in range(args.rms)]
        latencies: list[float] = []
        failures = 0

        async def one(record: bool) -> None:
            nonlocal failures
            t0 = time.perf_counter()
            txn = await client.begin()
            ctx: TransactionContext = txn.context
            await asyncio.gather(*(rm.join(ctx) for rm in rms))
            try:
                await txn.commit()
            except Exception:
                failures += 1
                return
            if record:
                latencies.append(time.perf_counter() - t0)

        async def run(n: int, record: bool) -> float:
            queue = iter(range(n))

            async def worker() -> None:
                for _ in queue:
                    await one(record)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            return time.perf_counter() - t0

        await run(max(50, args.transactions // 10), record=False)  # warm up channels and caches
        elapsed = await run(args.transactions, record=True)
        for rm in rms:
            await rm.close()
        await client.close()
        latencies.sort()
        return {
            "f": f,
            "acceptors": 2 * f + 1,
            "transactions": args.transactions,
            "failures": failures,
            "concurrency": args.concurrency,
            "rms": args.rms,
            "commits_per_s": round(len(latencies) / elapsed, 1),
            "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
            "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        }
    finally:
        cluster.stop()


async def run_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="paxos-commit-bench-") as tmp:
        results = [await _measure(f, args, Path(tmp)) for f in (0, 1)]
    f0, f1 = results
    report = {
        "f0": f0,
        "f1": f1,
        "f1_over_f0_throughput": round(f1["commits_per_s"] / f0["commits_per_s"], 3),
        "f1_over_f0_latency_p50": round(f1["latency_ms_p50"] / f0["latency_ms_p50"], 3),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            print(
                f"F={r['f']} ({r['acceptors']} acceptors): {r['commits_per_s']} commits/s, "
                f"p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms"
            )
        print(
            f"F=1 / F=0: throughput x{report['f1_over_f0_throughput']}, p50 latency x{report['f1_over_f0_latency_p50']}"
        )
    return 1 if f0["failures"] or f1["failures"] else 0
