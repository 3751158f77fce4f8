"""``paxos-commit``: run services, a local cluster, the demo, the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["main"]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PAXOS_COMMIT_{name}", default)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _acceptor(args: argparse.Namespace) -> int:
    from acceptor.service import serve_acceptor
    from acceptor.storage import StorageError, sqlite_url
    from paxos_commit.serving import wait_for_signal, write_port_file

    if args.id is None:
        print("paxos-commit acceptor: --id (or PAXOS_COMMIT_ACCEPTOR_ID) is required", file=sys.stderr)
        return 2
    url = args.db or sqlite_url(Path(args.data_dir) / f"acceptor-{args.id}.db")

    async def run() -> None:
        async with serve_acceptor(args.id, url, args.listen, init=args.init) as handle:
            write_port_file(args.port_file, {"address": handle.address, "pid": os.getpid()})
            print(f"acceptor {args.id} serving on {handle.address}", flush=True)
            await wait_for_signal()

    try:
        asyncio.run(run())
    except StorageError as exc:
        print(f"paxos-commit acceptor: {exc}", file=sys.stderr)
        return 1
    return 0


def _coordinator(args: argparse.Namespace) -> int:
    from coordinator.service import CoordinatorConfig, serve_coordinator
    from paxos_commit.serving import wait_for_signal, write_port_file

    acceptors = [a for a in (args.acceptors or "").split(",") if a]
    if not acceptors or len(acceptors) % 2 == 0:
        print(
            f"paxos-commit coordinator: --acceptors needs 2F+1 addresses (odd count), got {len(acceptors)}",
            file=sys.stderr,
        )
        return 2
    config = CoordinatorConfig(
        acceptors=acceptors,
        name=args.name,
        vote_timeout=args.vote_timeout,
        recovery_timeout=args.recovery_timeout,
        recovery_interval=args.recovery_interval,
        txn_timeout=args.txn_timeout,
    )

    async def run() -> None:
        async with serve_coordinator(config, args.listen, args.advertise_host) as handle:
            write_port_file(args.port_file, {"address": handle.address, "pid": os.getpid()})
            print(f"coordinator serving on {handle.address}", flush=True)
            await wait_for_signal()

    asyncio.run(run())
    return 0


def _up(args: argparse.Namespace) -> int:
    from paxos_commit.cluster import ClusterError, LocalCluster

    cluster = LocalCluster(
        Path(args.data_dir),
        n_acceptors=args.acceptors,
        n_coordinators=args.coordinators,
        base_port=args.base_port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"paxos-commit up: {exc}", file=sys.stderr)
        return 1
    f = (args.acceptors - 1) // 2
    print(
        f"paxos-commit: {args.acceptors} acceptors (F={f}), {args.coordinators} coordinators; data in {cluster.data_dir}"
    )
    for p in cluster.acceptors:
        print(f"  {p.name:<15} {p.address}")
    for p in cluster.coordinators:
        print(f"  {p.name:<15} {p.address}")
    print(f"  logs in {cluster.data_dir / 'logs'}; Ctrl-C stops", flush=True)
    try:
        while not stop.wait(0.5):
            dead = [p.name for p in [*cluster.acceptors, *cluster.coordinators] if not p.alive()]
            if dead:
                print(f"paxos-commit up: {', '.join(dead)} exited; see logs", file=sys.stderr)
                return 1
    finally:
        cluster.stop()
        print("paxos-commit: stopped", flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from paxos_commit.demo import run_demo

    return asyncio.run(run_demo(args))


def _bench(args: argparse.Namespace) -> int:
    from paxos_commit.bench import run_bench

    return asyncio.run(run_bench(args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paxos-commit", description=__doc__)
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("acceptor", help="run one acceptor (environment: PAXOS_COMMIT_*)")
    a.add_argument(
        "--id",
        type=int,
        default=int(_env("ACCEPTOR_ID", "-1") or -1),
        help="acceptor id: index in the acceptor list",
    )
    a.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:7700"), help="host:port (port 0: any)")
    a.add_argument("--data-dir", default=_env("DATA_DIR", "./.paxos-commit"), help="SQLite file's folder")
    a.add_argument(
        "--db", default=_env("DB"), help="SQLAlchemy URL instead of SQLite, e.g. postgresql+psycopg://..."
    )
    a.add_argument(
        "--init",
        action="store_true",
        default=_env("INIT") == "1",
        help="create state for a brand-new acceptor (never for one that lost its disk)",
    )
    a.add_argument("--port-file", default=None, help="write {address, pid} here once serving")
    a.set_defaults(func=_acceptor)

    c = sub.add_parser("coordinator", help="run one coordinator replica (environment: PAXOS_COMMIT_*)")
    c.add_argument(
        "--acceptors", default=_env("ACCEPTORS"), help="comma-separated acceptor addresses, in id order"
    )
    c.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:7800"))
    c.add_argument(
        "--advertise-host", default=_env("ADVERTISE_HOST"), help="host that RMs use to reach this replica"
    )
    c.add_argument("--name", default=_env("NAME", "coordinator"))
    c.add_argument("--vote-timeout", type=float, default=float(_env("VOTE_TIMEOUT", "5") or 5))
    c.add_argument("--recovery-timeout", type=float, default=float(_env("RECOVERY_TIMEOUT", "10") or 10))
    c.add_argument("--recovery-interval", type=float, default=float(_env("RECOVERY_INTERVAL", "1") or 1))
    c.add_argument("--txn-timeout", type=float, default=float(_env("TXN_TIMEOUT", "120") or 120))
    c.add_argument("--port-file", default=None)
    c.set_defaults(func=_coordinator)

    u = sub.add_parser("up", help="a local cluster in the foreground")
    u.add_argument("--data-dir", default="./.paxos-commit")
    u.add_argument("--acceptors", type=int, default=3, help="2F+1")
    u.add_argument("--coordinators", type=int, default=2)
    u.add_argument(
        "--base-port",
        type=int,
        default=7700,
        help="acceptors listen on base+i, coordinators on base+100+i (0: any free ports)",
    )
    u.set_defaults(func=_up)

    d = sub.add_parser("demo", help="two banks, concurrent transfers, a coordinator killed mid-commit")
    d.add_argument("--data-dir", default=None, help="keep the demo's data here (default: a temporary folder)")
    d.add_argument("--transfers", type=int, default=40)
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--seed", type=int, default=7)
    d.set_defaults(func=_demo)

    b = sub.add_parser("bench", help="commits/s and latency for F=0 and F=1, in one run")
    b.add_argument("--json", action="store_true", help="print one JSON document")
    b.add_argument("--transactions", type=int, default=1000)
    b.add_argument("--concurrency", type=int, default=16)
    b.add_argument("--rms", type=int, default=2)
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    if getattr(args, "id", 0) == -1:
        args.id = None
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
