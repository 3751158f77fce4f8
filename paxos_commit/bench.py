"""``paxos-commit bench``: commits/s and latency for F=0 (classic 2PC) and F=1, one run.

Each configuration gets a fresh local cluster (2F+1 acceptor processes on SQLite with
``synchronous=FULL``, one coordinator process), with mTLS on every hop as a user runs it;
``--insecure`` measures the same configurations in plain text too, in the same run, and
reports TLS's cost. The benchmark process plays the
application and ``--rms`` resource managers whose prepare is free, so the figures measure
the protocol and its durable writes, not a database's own work. The benchmark process
calls :func:`rm_sdk.tune_gc` first, as the services do (``--default-gc``: it does not;
the application's CPU per transaction then includes CPython's default collections).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.request
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds every core of this machine spent busy so far (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _stream_counts(port: int | None) -> tuple[float, float, float, float, float]:
    """(stream messages served, incoming stream batches, outgoing stream batches, storage
    batches, steps in them) from a process's /metrics. Every stream write is one of the
    two kinds of stream batch at a server: the services' own writes to acceptors arrive
    as the acceptors' incoming batches. Storage batches: acceptors only (0 elsewhere)."""
    if not port:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    messages = batches = replies = stored = steps = 0.0
    for line in text.splitlines():
        if line.startswith("paxos_commit_stream_messages_total{"):
            messages += float(line.rpartition(" ")[2])
        elif line.startswith("paxos_commit_stream_batch_size_count"):
            batches += float(line.rpartition(" ")[2])
        elif line.startswith("paxos_commit_stream_reply_batch_size_count"):
            replies += float(line.rpartition(" ")[2])
        elif line.startswith("paxos_commit_acceptor_batch_size_count"):
            stored += float(line.rpartition(" ")[2])
        elif line.startswith("paxos_commit_acceptor_batch_size_sum"):
            steps += float(line.rpartition(" ")[2])
    return messages, batches, replies, stored, steps


async def _measure(
    f: int, args: argparse.Namespace, root: Path, levels: list[int], tls: bool = True
) -> list[dict[str, Any]]:
    """Every concurrency level on one fresh cluster of 2F+1 acceptors and one coordinator."""
    cluster = LocalCluster(
        root / f"f{f}{'' if tls else '-insecure'}",
        n_acceptors=2 * f + 1,
        n_coordinators=1,
        recovery_interval=0,
        tls=tls,
    )
    cluster.start()
    try:
        coords = cluster.coordinator_addresses
        client = Client(coords, credentials=cluster.credentials("app", "bench"))
        rms = [
            Participant(NullRM(f"rm-{i}"), coords, credentials=cluster.credentials("rm", f"rm-{i}"))
            for i in range(args.rms)
        ]
        procs = {p.name: p for p in [*cluster.acceptors, *cluster.coordinators]}
        acceptor_names = [p.name for p in cluster.acceptors]

        async def one(latencies: list[float] | None, failures: list[int]) -> None:
            t0 = time.perf_counter()
            txn = await client.begin()
            ctx: TransactionContext = txn.context
            await asyncio.gather(*(rm.join(ctx) for rm in rms))
            try:
                await txn.commit()
            except Exception:
                failures.append(1)
                return
            if latencies is not None:
                latencies.append(time.perf_counter() - t0)

        async def run(n: int, concurrency: int, latencies: list[float] | None, failures: list[int]) -> float:
            queue = iter(range(n))

            async def worker() -> None:
                for _ in queue:
                    await one(latencies, failures)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0

        results = []
        for concurrency in levels:
            n = args.transactions if concurrency > 1 else max(100, args.transactions // 4)
            await run(max(50, n // 10), concurrency, None, [])  # warm up channels and caches
            cpu0 = {name: _cpu_seconds(p.pid) for name, p in procs.items()}
            cpu0["application+rms"] = time.process_time()
            machine0, window0 = _machine_busy(), time.perf_counter()
            streams0 = {name: _stream_counts(p.metrics_port) for name, p in procs.items()}
            latencies: list[float] = []
            failures: list[int] = []
            elapsed = await run(n, concurrency, latencies, failures)
            cpu1 = {name: _cpu_seconds(p.pid) for name, p in procs.items()}
            cpu1["application+rms"] = time.process_time()
            machine1, window1 = _machine_busy(), time.perf_counter()
            streams1 = {name: _stream_counts(p.metrics_port) for name, p in procs.items()}
            latencies.sort()
            done = max(1, len(latencies))
            # Per service: (messages, batches read, batches written, storage batches, steps
            # stored) during the run.
            moved = {k: [b - a for a, b in zip(streams0[k], streams1[k], strict=True)] for k in streams1}
            msgs = sum(m[0] for m in moved.values())
            batches = sum(m[1] for m in moved.values())
            writes = batches + sum(m[2] for m in moved.values())
            results.append(
                {
                    "f": f,
                    "tls": tls,
                    "acceptors": 2 * f + 1,
                    "concurrency": concurrency,
                    "transactions": n,
                    "failures": len(failures),
                    "rms": args.rms,
                    "application_gc": "default" if getattr(args, "default_gc", False) else "tuned",
                    "commits_per_s": round(len(latencies) / elapsed, 1),
                    "latency_ms_p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
                    "latency_ms_p99": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 2)
                    if latencies
                    else None,
                    # Messages served in stream batches by the coordinator and acceptors.
                    "stream_messages_per_txn": round(msgs / done, 2),
                    "stream_messages_per_batch": round(msgs / batches, 2) if batches else None,
                    # Stream writes of every process, both directions (each is a batch).
                    "stream_writes_per_txn": round(writes / done, 2),
                    # Per service: batches it read (its peers' writes to it) and wrote, per
                    # transaction. At low load each costs ~0.1-0.2 ms of CPU at both ends.
                    "stream_batches_per_txn": {
                        k: {"in": round(m[1] / done, 2), "out": round(m[2] / done, 2)}
                        for k, m in moved.items()
                    },
                    # Per acceptor: storage transactions per transaction, and steps in
                    # each. At c=64 a batch holds 64, 128 or 192 steps: the closed loop's
                    # transactions move in step, stage after stage.
                    "storage_batches_per_txn": {k: round(moved[k][3] / done, 3) for k in acceptor_names},
                    "storage_steps_per_batch": {
                        k: round(moved[k][4] / moved[k][3], 1) if moved[k][3] else None
                        for k in acceptor_names
                    },
                    "cpu_ms_per_txn": {k: round((cpu1[k] - cpu0[k]) * 1000 / done, 3) for k in cpu1},
                    # The whole machine (kernel, and anything else running, included): how
                    # much of its cores the run kept busy, and CPU ms per transaction.
                    # Over the window the two readings span (the run and the reads of
                    # the processes' CPU between them), not the run alone: on a machine
                    # busy with something else too, that gave more than 100%. At most 1:
                    # /proc/stat counts in clock ticks.
                    "machine_busy": round(
                        min(1.0, (machine1 - machine0) / ((window1 - window0) * (os.cpu_count() or 1))), 3
                    ),
                    "machine_cpu_ms_per_txn": round((machine1 - machine0) * 1000 / done, 3),
                }
            )
        for rm in rms:
            await rm.close()
        await client.close()
        return results
    finally:
        cluster.stop()


def disk_sync_us(directory: Path, writes: int = 200) -> float:
    """Median microseconds of one 4 KiB write and ``fdatasync`` in ``directory``: the floor
    under every durable write of the acceptors here (SQLite's WAL commit is one). Reported
    with the figures, because machines differ: this one's disk has read 60 us and 230 us in
    different sessions."""
    path = directory / "fdatasync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"\0" * 4096
    took = []
    try:
        for _ in range(writes):
            t0 = time.perf_counter()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            took.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return round(statistics.median(took) * 1e6, 1)


async def run_bench(args: argparse.Namespace) -> int:
    levels = [args.concurrency] if args.concurrency else list(args.levels or (1, 16, 64))
    plain = bool(getattr(args, "insecure", False))
    with tempfile.TemporaryDirectory(prefix="paxos-commit-bench-") as tmp:
        machine = {"cpus": os.cpu_count(), "fdatasync_us_p50": disk_sync_us(Path(tmp))}
        # Each plain-text run right after its TLS twin: on a shared machine the load drifts.
        f0s = await _measure(0, args, Path(tmp), levels)
        f0p = await _measure(0, args, Path(tmp), levels, tls=False) if plain else [None] * len(levels)
        f1s = await _measure(1, args, Path(tmp), levels)
        f1p = await _measure(1, args, Path(tmp), levels, tls=False) if plain else [None] * len(levels)
    runs = []
    for f0, f1, p0, p1 in zip(f0s, f1s, f0p, f1p, strict=True):
        run: dict[str, Any] = {
            "concurrency": f0["concurrency"],
            "f0": f0,
            "f1": f1,
            "f1_over_f0_throughput": round(f1["commits_per_s"] / f0["commits_per_s"], 3),
        }
        if p0 is not None and p1 is not None:
            run["f0_insecure"], run["f1_insecure"] = p0, p1
            # TLS's cost: throughput with mTLS over throughput in plain text (1.0: free).
            run["tls_over_insecure_throughput"] = {
                "f0": round(f0["commits_per_s"] / p0["commits_per_s"], 3),
                "f1": round(f1["commits_per_s"] / p1["commits_per_s"], 3),
            }
        runs.append(run)
    if args.json:
        print(json.dumps({"machine": machine, "levels": runs}, indent=2))
    else:
        print(
            f"machine: {machine['cpus']} CPUs, a 4 KiB write and fdatasync takes "
            f"{machine['fdatasync_us_p50']} us (p50) where the acceptors store"
        )
        for run in runs:
            for key in ("f0", "f1", "f0_insecure", "f1_insecure"):
                if key not in run:
                    continue
                r = run[key]
                cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_txn"].items())
                mode = "TLS" if r["tls"] else "insecure"
                print(
                    f"c={r['concurrency']} F={r['f']} {mode}: {r['commits_per_s']} commits/s, p50 {r['latency_ms_p50']} ms, "
                    f"p99 {r['latency_ms_p99']} ms, {r['stream_messages_per_txn']} stream msgs/txn "
                    f"({r['stream_messages_per_batch']}/batch), {r['stream_writes_per_txn']} stream writes/txn; "
                    f"CPU ms/txn: {cpu}; machine {r['machine_cpu_ms_per_txn']} ({r['machine_busy']:.0%} busy)"
                )
            print(f"c={run['concurrency']} F=1 / F=0 throughput x{run['f1_over_f0_throughput']}")
            if "tls_over_insecure_throughput" in run:
                t = run["tls_over_insecure_throughput"]
                print(f"c={run['concurrency']} TLS / insecure throughput: F=0 x{t['f0']}, F=1 x{t['f1']}")
    keys = ("f0", "f1", "f0_insecure", "f1_insecure")
    failed = any(r[k]["failures"] for r in runs for k in keys if k in r)
    return 1 if failed else 0
