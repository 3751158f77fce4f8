"""A client process: runs transactions over the RMs and logs, append-only, every
transaction it began, the work it asked for and the outcome it was told.

``python -m paxos_commit.chaos.workload --id c0 --log c0.ndjson ...``. One line per event,
each written with a single ``write`` to a file opened ``O_APPEND``, so a SIGKILL loses at
most the line being written and never garbles one before it. Lines::

    {"ev": "begin", "txn": T, "client": C, "rms": [...], "refuse": RM or null, "owner": coordinator, "t": ...}
    {"ev": "work", "txn": T, "rm": R, "ok": bool, "t": ...}
    {"ev": "commit", "txn": T, "t": ...}  (commit asked)
    {"ev": "outcome", "txn": T, "outcome": "committed" | "aborted" | "unknown",
     "cause": exception class or "client-abort", "reason": ..., "t": ...}

A restarted client counts the ``begin`` lines already in its log and carries on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path

import grpc

from paxos_commit import serving
from rm_sdk import Client, Outcome, OutcomeUnknown, TransactionAborted

from .rm_process import work_stub

__all__ = ["main"]


class Log:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **doc: object) -> None:
        doc["t"] = time.time()
        os.write(self.fd, (json.dumps(doc) + "\n").encode())


def _begun(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"ev": "begin"' in line)


async def run(args: argparse.Namespace) -> None:
    path = Path(args.log)
    begun = _begun(path)
    log = Log(path)
    rms = dict(item.split("=", 1) for item in args.rms.split(","))
    names = sorted(rms)
    # Reconnect soon after an RM comes back (gRPC's default backoff grows to minutes).
    options = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
    channels = {name: grpc.aio.insecure_channel(addr, options=options) for name, addr in rms.items()}
    stubs = {name: work_stub(ch) for name, ch in channels.items()}
    stop_file = Path(args.stop_file) if args.stop_file else None
    deadline = time.monotonic() + args.max_seconds
    next_k = begun

    def claim() -> int | None:
        nonlocal next_k
        if next_k >= args.transactions or time.monotonic() > deadline:
            return None
        if stop_file is not None and stop_file.exists():
            return None
        next_k += 1
        return next_k - 1

    async with Client(args.coordinators.split(","), rpc_timeout=2.0, outcome_timeout=15.0) as client:

        async def one(k: int) -> None:
            rng = random.Random(f"{args.seed}/{args.id}/{k}")
            chosen = sorted(rng.sample(names, rng.randint(2, min(3, len(names)))))
            refuse = rng.choice(chosen) if rng.random() < args.refuse_rate else None
            try:
                txn = await client.begin()
            except (ConnectionError, grpc.aio.AioRpcError) as exc:
                log.write(ev="begin-failed", client=args.id, error=type(exc).__name__)
                await asyncio.sleep(0.2)
                return
            log.write(
                ev="begin",
                txn=txn.txn_id,
                client=args.id,
                rms=chosen,
                refuse=refuse,
                owner=txn.context.coordinator,
            )
            failed: str | None = None
            for rm in chosen:
                # The application does something between its calls: RMs that joined wait
                # for the prepare a while, as they do in real systems.
                await asyncio.sleep(rng.uniform(0.0, args.think))
                req = json.dumps({"token": txn.context.token(), "refuse": rm == refuse}).encode()
                try:
                    await stubs[rm](req, timeout=3.0, wait_for_ready=True)
                    log.write(ev="work", txn=txn.txn_id, rm=rm, ok=True)
                except grpc.aio.AioRpcError as exc:
                    log.write(ev="work", txn=txn.txn_id, rm=rm, ok=False, error=exc.code().name)
                    failed = rm
                    break
            try:
                if failed is not None:
                    o = await txn.abort(f"work failed at {failed}")
                    log.write(
                        ev="outcome", txn=txn.txn_id, outcome=o.value, cause="client-abort", reason=failed
                    )
                    return
                await asyncio.sleep(rng.uniform(0.0, args.think))
                log.write(ev="commit", txn=txn.txn_id)
                o = await txn.commit()
                log.write(ev="outcome", txn=txn.txn_id, outcome=o.value, cause="", reason="")
            except TransactionAborted as exc:
                log.write(
                    ev="outcome",
                    txn=txn.txn_id,
                    outcome=Outcome.ABORTED.value,
                    cause=type(exc).__name__,
                    reason=exc.reason,
                    rm=getattr(exc, "rm_id", None),
                )
            except (OutcomeUnknown, grpc.aio.AioRpcError, ConnectionError, TimeoutError) as exc:
                log.write(
                    ev="outcome", txn=txn.txn_id, outcome="unknown", cause=type(exc).__name__, reason=""
                )

        async def worker() -> None:
            while (k := claim()) is not None:
                await one(k)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    for ch in channels.values():
        await ch.close(None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="paxos_commit.chaos.workload")
    p.add_argument("--id", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--coordinators", required=True)
    p.add_argument("--rms", required=True, help="name=host:port,...")
    p.add_argument("--transactions", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refuse-rate", type=float, default=0.05)
    p.add_argument("--think", type=float, default=0.1, help="max pause before each call and the commit (s)")
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--stop-file", default=None, help="begin nothing new once this file exists")
    args = p.parse_args(argv)
    serving.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
