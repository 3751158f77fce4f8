"""``paxos-commit``: run services, a local cluster, the demo, the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from paxos_commit.argtypes import CommandError, addresses, count, levels, odd_count, port, seconds
from rm_sdk import otel, tracing

if TYPE_CHECKING:
    from paxos_commit.certs import TlsFiles

T = TypeVar("T")

__all__ = ["main"]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PAXOS_COMMIT_{name}", default)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; carries ``txn_id`` when the log call passed one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        txn_id = getattr(record, "txn_id", None)
        if txn_id:
            doc["txn_id"] = txn_id
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _run(main: Coroutine[Any, Any, T]) -> T:
    """A process's main coroutine, on the event loop :func:`paxos_commit.serving.run` picks."""
    from paxos_commit import serving

    return serving.run(main)


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _acceptor_id(value: str) -> int:
    """An acceptor id, or "auto": the trailing number of the host name (a StatefulSet
    pod's ordinal: ``paxos-commit-acceptor-2`` is acceptor 2)."""
    if value == "auto":
        m = re.search(r"(\d+)$", socket.gethostname())
        if m is None:
            raise argparse.ArgumentTypeError(
                f"--id auto: host name {socket.gethostname()!r} ends in no number"
            )
        return int(m.group(1))
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"acceptor id must be a number or 'auto', not {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("acceptor id must be >= 0")
    return n


class _UsageError(Exception):
    pass


def _tls_files(args: argparse.Namespace, role: str, name: str) -> TlsFiles | None:
    """This service's certificate files from --tls-cert/--tls-key/--tls-ca or --certs,
    None with --insecure; neither: a usage error (TLS is not optional by accident)."""
    from paxos_commit.certs import TlsFiles

    explicit = [args.tls_cert, args.tls_key, args.tls_ca]
    if args.insecure:
        if any(explicit) or args.certs:
            raise _UsageError("--insecure cannot be combined with --tls-* or --certs")
        return None
    if any(explicit):
        if not all(explicit):
            raise _UsageError("--tls-cert, --tls-key and --tls-ca go together")
        files = TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))
    elif args.certs:
        d = Path(args.certs)
        # A mounted Kubernetes TLS Secret (tls.crt, tls.key, ca.crt), or a `paxos-commit certs` folder.
        files = TlsFiles.mounted(d) if (d / "tls.crt").exists() else TlsFiles.in_dir(d, role, name)
    else:
        raise _UsageError(
            "no certificates: give --certs DIR (see `paxos-commit certs`) or --tls-cert/--tls-key/--tls-ca; "
            "--insecure runs without TLS and without authentication"
        )
    for f in (files.cert, files.key, files.ca):
        if not f.exists():
            raise _UsageError(f"certificate file {f} does not exist")
    return files


def _add_tls_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS (mTLS: peers present certificates from the same CA)")
    g.add_argument("--tls-cert", default=_env("TLS_CERT"), help="this service's certificate chain (PEM)")
    g.add_argument("--tls-key", default=_env("TLS_KEY"), help="its private key (PEM)")
    g.add_argument(
        "--tls-ca", default=_env("TLS_CA"), help="the CA that signs every peer's certificate (PEM)"
    )
    g.add_argument(
        "--certs",
        default=_env("CERTS"),
        help="a folder with tls.crt, tls.key, ca.crt (a Kubernetes TLS Secret), or made by `paxos-commit certs`",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        default=_env("INSECURE") == "1",
        help="no TLS and no authentication: anyone who reaches the port may act as any role",
    )
    g.add_argument(
        "--health-port",
        type=port,
        default=_env("HEALTH_PORT"),
        help="also serve the gRPC health service alone, in plain text, on this port (kubelet probes)",
    )


def _health_listen(args: argparse.Namespace) -> str | None:
    if args.health_port is None:
        return None
    return f"{args.listen.rsplit(':', 1)[0]}:{args.health_port}"


def _acceptor(args: argparse.Namespace) -> int:
    from acceptor.service import serve_acceptor
    from acceptor.storage import StorageError, sqlite_url
    from paxos_commit.serving import wait_for_signal, write_port_file
    from rm_sdk import tune_gc

    if args.id is None:
        print("paxos-commit acceptor: --id (or PAXOS_COMMIT_ACCEPTOR_ID) is required", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir)
    url = args.db or sqlite_url(data_dir / f"acceptor-{args.id}.db")
    init = args.init
    if args.init_if_empty:
        # A fresh volume holds nothing; one that held our state and lost it is refused.
        init = init or args.db is not None or not (data_dir.exists() and any(data_dir.iterdir()))

    try:
        tls = _tls_files(args, "acceptor", str(args.id))
    except _UsageError as exc:
        print(f"paxos-commit acceptor: {exc}", file=sys.stderr)
        return 2

    if args.trace_file:
        tracing.enable(args.trace_file, f"acceptor-{args.id}")
    otel.configure(f"paxos-commit-acceptor-{args.id}")

    async def run() -> None:
        from acceptor.collect import CollectorConfig

        collect = CollectorConfig(interval=args.collect_interval, retention=args.collect_retention)
        async with serve_acceptor(
            args.id,
            url,
            args.listen,
            init=init,
            metrics_port=args.metrics_port,
            tls=tls,
            health_listen=_health_listen(args),
            collect=collect,
            cache_size=args.cache_size,
        ) as handle:
            tune_gc()
            write_port_file(
                args.port_file,
                {
                    "address": handle.address,
                    "pid": os.getpid(),
                    "metrics_port": handle.metrics_port,
                    "tls": handle.secure,
                },
            )
            print(f"acceptor {args.id} serving on {handle.address}", flush=True)
            await wait_for_signal()

    try:
        _run(run())
    except StorageError as exc:
        print(f"paxos-commit acceptor: {exc}", file=sys.stderr)
        return 1
    finally:
        otel.shutdown()
    return 0


def _coordinator(args: argparse.Namespace) -> int:
    from coordinator.service import CoordinatorConfig, serve_coordinator
    from paxos_commit.serving import wait_for_signal, write_port_file
    from rm_sdk import tune_gc

    acceptors = [a for a in (args.acceptors or "").split(",") if a]
    if not acceptors or len(acceptors) % 2 == 0:
        print(
            f"paxos-commit coordinator: --acceptors needs 2F+1 addresses (odd count), got {len(acceptors)}",
            file=sys.stderr,
        )
        return 2
    try:
        tls = _tls_files(args, "coordinator", args.name)
    except _UsageError as exc:
        print(f"paxos-commit coordinator: {exc}", file=sys.stderr)
        return 2
    config = CoordinatorConfig(
        acceptors=acceptors,
        name=args.name,
        vote_timeout=args.vote_timeout,
        recovery_timeout=args.recovery_timeout,
        recovery_interval=args.recovery_interval,
        txn_timeout=args.txn_timeout,
        tls=tls,
        ack_wait=args.ack_wait,
        keep_decided=args.keep_decided,
    )

    if args.trace_file:
        tracing.enable(args.trace_file, args.name)
    otel.configure(f"paxos-commit-{args.name}")

    async def run() -> None:
        async with serve_coordinator(
            config,
            args.listen,
            args.advertise_host,
            metrics_port=args.metrics_port,
            health_listen=_health_listen(args),
        ) as handle:
            tune_gc()
            write_port_file(
                args.port_file,
                {
                    "address": handle.address,
                    "pid": os.getpid(),
                    "metrics_port": handle.metrics_port,
                    "tls": handle.secure,
                },
            )
            print(f"coordinator serving on {handle.address}", flush=True)
            await wait_for_signal()

    try:
        _run(run())
    finally:
        otel.shutdown()
    return 0


def _up(args: argparse.Namespace) -> int:
    from paxos_commit.cluster import ClusterError, LocalCluster

    cluster = LocalCluster(
        Path(args.data_dir),
        n_acceptors=args.acceptors,
        n_coordinators=args.coordinators,
        base_port=args.base_port,
        tls=not args.insecure,
    )
    if args.insecure:
        logging.getLogger("paxos_commit").warning(
            "INSECURE: the cluster runs without TLS and without authentication (--insecure)"
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
    for p in [*cluster.acceptors, *cluster.coordinators]:
        print(f"  {p.name:<15} {p.address:<21} metrics http://127.0.0.1:{p.metrics_port}/metrics")
    if cluster.tls:
        print(
            f"  mTLS on; certificates in {cluster.certs_dir} (clients: `paxos-commit certs "
            f"{cluster.certs_dir} --issue app:NAME --issue rm:ID`)"
        )
    else:
        print("  WARNING: INSECURE: no TLS, no authentication")
    print(
        f"  operators: `paxos-commit txn list --attach {cluster.data_dir}` (as admin/local), "
        f"`paxos-commit console --attach {cluster.data_dir}`"
    )
    print(f"  logs in {cluster.data_dir / 'logs'}; Ctrl-C stops", flush=True)
    try:
        while not stop.wait(0.5):
            # A supervisor: a process that died (a crash, or the demo's SIGKILL) comes back
            # on its old ports; an acceptor finds its durable state, a coordinator starts as
            # a new incarnation.
            for p in [*cluster.acceptors, *cluster.coordinators]:
                if not p.alive() and not stop.is_set():
                    print(f"paxos-commit up: {p.name} exited; restarting it", flush=True)
                    try:
                        cluster.restart(p)
                    except ClusterError as exc:
                        print(f"paxos-commit up: {exc}", file=sys.stderr)
                        return 1
    finally:
        cluster.stop()
        print("paxos-commit: stopped", flush=True)
    return 0


def _certs(args: argparse.Namespace) -> int:
    from paxos_commit.certs import ensure_ca, ensure_cert, issue, make_ca
    from rm_sdk.identity import ROLES

    d = Path(args.dir)
    if args.new_ca:
        make_ca(d)
    else:
        ensure_ca(d)
    wanted: list[tuple[str, str]] = [("acceptor", str(i)) for i in range(args.acceptors)]
    wanted += [("coordinator", n) for n in (args.coordinators.split(",") if args.coordinators else [])]
    for spec in args.issue or ():
        role, _, name = spec.partition(":")
        if role not in ROLES or not name:
            print(
                f"paxos-commit certs: --issue ROLE:NAME, ROLE one of {', '.join(ROLES)}; got {spec!r}",
                file=sys.stderr,
            )
            return 2
        wanted.append((role, name))
    hosts = ["localhost", "127.0.0.1", "::1", *(args.host or ())]
    for role, name in wanted:
        files = issue(d, role, name, hosts) if args.force else ensure_cert(d, role, name, hosts)
        print(f"{role}/{name}: {files.cert} {files.key}")
    print(f"CA: {d / 'ca.pem'} (its key {d / 'ca-key.pem'} stays off the servers)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from paxos_commit.demo import run_demo

    return _run(run_demo(args))


def _bench(args: argparse.Namespace) -> int:
    if not args.default_gc:
        from rm_sdk import tune_gc

        tune_gc()
    if args.postgres:
        from paxos_commit.bench_postgres import run_postgres_bench

        main = run_postgres_bench(args)
    else:
        from paxos_commit.bench import run_bench

        main = run_bench(args)
    try:
        return _run(_until_sigterm(main))
    except asyncio.CancelledError:
        print("stopped by SIGTERM; cleaned up", file=sys.stderr)
        return 143


async def _until_sigterm(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``; SIGTERM cancels it, so its clean-up runs (a benchmark stops its
    cluster processes and drops its databases and prepared transactions) instead of the
    process dying with them left behind."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _txns(args: argparse.Namespace) -> int:
    import json as _json

    import sqlalchemy as sa

    from acceptor.collect import live_transactions
    from acceptor.storage import sqlite_url

    if args.db:
        url = args.db
    elif args.id is not None:
        url = sqlite_url(Path(args.data_dir) / f"acceptor-{args.id}.db")
    else:
        print("paxos-commit txns: --db or --id (with --data-dir) is required", file=sys.stderr)
        return 2
    engine = sa.create_engine(url)
    try:
        rows = live_transactions(engine, unacknowledged=args.unacknowledged, limit=args.limit)
    finally:
        engine.dispose()
    if args.json:
        print(_json.dumps(rows, indent=2))
        return 0
    for r in rows:
        missing = "set unknown" if r["unacknowledged"] is None else ",".join(r["unacknowledged"]) or "-"
        print(f"{r['txn_id']}  {r['outcome']:<9} first seen {r['first_seen_ms']}  waiting for: {missing}")
    return 0


def _soak(args: argparse.Namespace) -> int:
    from paxos_commit.soak import run_soak

    return _run(run_soak(args))


def _trace_check(args: argparse.Namespace) -> int:
    from paxos_commit.tracecheck import check_dir, find_jar

    try:
        jar = find_jar(args.jar)
    except FileNotFoundError as exc:
        print(f"paxos-commit trace-check: {exc}", file=sys.stderr)
        return 2
    results = check_dir(Path(args.folder), jar, args.acceptors, args.txn or ())
    if not results:
        print(f"paxos-commit trace-check: no events in {args.folder}/*.ndjson", file=sys.stderr)
        return 2
    for result, events in results:
        print(result.describe(events), flush=True)
    rejected = sum(not r.accepted for r, _ in results)
    print(f"{len(results) - rejected} accepted, {rejected} rejected")
    return 1 if rejected else 0


def _chaos(args: argparse.Namespace) -> int:
    from paxos_commit.chaos.run import config_from_args, print_summary, run_chaos

    cfg = config_from_args(args)
    # SIGTERM (and SIGINT, which a shell's background job ignores) unwind through the run's
    # cleanup: processes, namespaces and mounts are its own to remove.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    if not args.json:
        print(f"paxos-commit chaos: seed {cfg.seed}", flush=True)
    summary = run_chaos(cfg)
    print_summary(summary, args.json)
    return 0 if summary["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paxos-commit", description=__doc__)
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    p.add_argument("--log-format", choices=["text", "json"], default=_env("LOG_FORMAT", "text"))
    p.add_argument(
        "--trace-file",
        default=_env("TRACE_FILE"),
        help="append this process's protocol events (NDJSON, Lamport clocks) here, for trace validation",
    )
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("acceptor", help="run one acceptor (environment: PAXOS_COMMIT_*)")
    a.add_argument(
        "--id",
        type=_acceptor_id,
        default=_env("ACCEPTOR_ID"),
        help="acceptor id (its index in the acceptor list), or 'auto': the host name's trailing number",
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
    a.add_argument(
        "--init-if-empty",
        action="store_true",
        default=_env("INIT_IF_EMPTY") == "1",
        help="--init only if the data dir holds no files (a fresh volume); with --db, create tables if missing",
    )
    a.add_argument("--metrics-port", type=port, default=_env("METRICS_PORT"), help="serve /metrics here")
    a.add_argument("--port-file", default=None, help="write {address, pid, metrics_port} here once serving")
    _add_tls_arguments(a)
    a.add_argument(
        "--collect-retention",
        type=seconds(),
        default=_env("COLLECT_RETENTION", "3600"),
        help="seconds a collected transaction's compact outcome record is kept (late messages "
        "are answered from it)",
    )
    a.add_argument(
        "--collect-interval",
        type=seconds(positive=True),
        default=_env("COLLECT_INTERVAL", "1"),
        help="seconds between collection passes while there is nothing to collect",
    )
    a.add_argument(
        "--cache-size",
        type=count(1),
        default=_env("CACHE_SIZE", "10000"),
        help="transaction records kept in memory (a bounded cache of recent ones)",
    )
    a.set_defaults(func=_acceptor)

    c = sub.add_parser("coordinator", help="run one coordinator replica (environment: PAXOS_COMMIT_*)")
    c.add_argument(
        "--acceptors",
        type=addresses("acceptor", odd=True),
        default=_env("ACCEPTORS"),
        help="comma-separated acceptor addresses, in id order",
    )
    c.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:7800"))
    c.add_argument(
        "--advertise-host", default=_env("ADVERTISE_HOST"), help="host that RMs use to reach this replica"
    )
    c.add_argument("--name", default=_env("NAME", "coordinator"))
    c.add_argument("--vote-timeout", type=seconds(positive=True), default=_env("VOTE_TIMEOUT", "5"))
    c.add_argument("--recovery-timeout", type=seconds(positive=True), default=_env("RECOVERY_TIMEOUT", "10"))
    c.add_argument(
        "--recovery-interval",
        type=seconds(),
        default=_env("RECOVERY_INTERVAL", "1"),
        help="seconds between scans for others' stuck transactions (0: never)",
    )
    c.add_argument("--txn-timeout", type=seconds(positive=True), default=_env("TXN_TIMEOUT", "120"))
    c.add_argument(
        "--ack-wait",
        type=seconds(),
        default=_env("ACK_WAIT", "2"),
        help="seconds the owner waits for every RM's acknowledgement before recording the outcome without",
    )
    c.add_argument(
        "--keep-decided",
        type=count(0),
        default=_env("KEEP_DECIDED", "10000"),
        help="recent outcomes kept in memory (older ones are read from the acceptors)",
    )
    c.add_argument("--metrics-port", type=port, default=_env("METRICS_PORT"), help="serve /metrics here")
    c.add_argument("--port-file", default=None)
    _add_tls_arguments(c)
    c.set_defaults(func=_coordinator)

    k = sub.add_parser(
        "certs", help="a local CA and per-role certificates (spiffe://paxos-commit/<role>/<name>) for mTLS"
    )
    k.add_argument("dir", help="folder for ca.pem, ca-key.pem and <role>-<name>.pem / -key.pem")
    k.add_argument("--acceptors", type=count(0), default=0, help="issue acceptor/0 .. acceptor/N-1")
    k.add_argument("--coordinators", default="", help="comma-separated coordinator names to issue")
    k.add_argument(
        "--issue",
        action="append",
        metavar="ROLE:NAME",
        help="issue one more, e.g. rm:bank-a, app:shop, admin:me",
    )
    k.add_argument(
        "--host", action="append", help="an extra DNS name or IP for the certificates (repeatable)"
    )
    k.add_argument("--force", action="store_true", help="issue again even if a certificate exists (rotation)")
    k.add_argument("--new-ca", action="store_true", help="make a new CA even if one exists")
    k.set_defaults(func=_certs)

    u = sub.add_parser("up", help="a local cluster in the foreground")
    u.add_argument("--data-dir", default="./.paxos-commit")
    u.add_argument("--acceptors", type=odd_count, default=3, help="2F+1")
    u.add_argument("--coordinators", type=count(1), default=2)
    u.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no authentication (default: mTLS, certs in the data dir)",
    )
    u.add_argument(
        "--base-port",
        type=port,
        default=7700,
        help="acceptors listen on base+i, coordinators on base+100+i, their /metrics on base+200+i "
        "and base+300+i (0: any free ports)",
    )
    u.set_defaults(func=_up)

    d = sub.add_parser("demo", help="two banks, concurrent transfers, a coordinator killed mid-commit")
    d.add_argument("--data-dir", default=None, help="keep the demo's data here (default: a temporary folder)")
    d.add_argument(
        "--attach",
        default=None,
        metavar="UP_DATA_DIR",
        help="use the cluster that `paxos-commit up --data-dir UP_DATA_DIR` runs, instead of starting one",
    )
    d.add_argument("--insecure", action="store_true", help="run the demo's cluster without TLS")
    d.add_argument("--transfers", type=count(1), default=40)
    d.add_argument("--concurrency", type=count(1), default=8)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument(
        "--postgres",
        default=None,
        metavar="DSN",
        help="keep each bank in its own Postgres database (created from DSN, dropped at the end), "
        "with real prepared transactions (needs max_prepared_transactions > 0)",
    )
    d.set_defaults(func=_demo)

    t = sub.add_parser("trace-check", help="validate the protocol event logs of a run against the TLA+ spec")
    t.add_argument("folder", help="folder of *.ndjson logs (--trace-file of every process)")
    t.add_argument(
        "--acceptors", type=odd_count, default=None, help="2F+1 (default: acceptors that logged a start)"
    )
    t.add_argument("--txn", action="append", help="check only this transaction (repeatable)")
    t.add_argument("--jar", default=None, help="tla2tools.jar (default: $TLA2TOOLS_JAR)")
    t.set_defaults(func=_trace_check)

    b = sub.add_parser("bench", help="commits/s and latency for F=0 and F=1, in one run")
    b.add_argument("--json", action="store_true", help="print one JSON document")
    b.add_argument("--transactions", type=count(1), default=1000)
    b.add_argument(
        "--concurrency", type=count(1), default=None, help="one concurrency level (default: --levels)"
    )
    b.add_argument("--rms", type=count(0), default=2)
    b.add_argument(
        "--insecure",
        action="store_true",
        help="also measure every configuration without TLS, in the same run, and report TLS's cost",
    )
    b.add_argument(
        "--postgres",
        metavar="DSN",
        help="instead: a transfer between two Postgres databases (made on this server), "
        "hand-rolled 2PC vs F=0 vs F=1 with PostgresRM; --transactions per measurement",
    )
    b.add_argument(
        "--levels",
        type=levels,
        default=None,
        help="comma-separated concurrency levels (default 1,16,64; with --postgres 1,8,32)",
    )
    b.add_argument("--runs", type=count(1), default=3, help="with --postgres: runs of every configuration")
    b.add_argument("--accounts", type=count(1), default=1000, help="with --postgres: accounts per bank")
    b.add_argument("--warmup", type=count(0), default=50, help="with --postgres: unrecorded transfers first")
    b.add_argument(
        "--pool-size", type=count(2), default=28, help="with --postgres: each PostgresRM's pool max_size"
    )
    b.add_argument(
        "--default-gc",
        action="store_true",
        help="leave this process's garbage collector as CPython sets it (default: rm_sdk.tune_gc(), "
        "as the services and a throughput-minded application do)",
    )
    b.set_defaults(func=_bench)

    tx = sub.add_parser(
        "txns", help="transactions an acceptor still holds (live; --unacknowledged: decided, waiting for RMs)"
    )
    tx.add_argument("--db", default=_env("DB"), help="the acceptor's SQLAlchemy URL")
    tx.add_argument("--id", type=count(0), default=None, help="acceptor id (SQLite file under --data-dir)")
    tx.add_argument("--data-dir", default=_env("DATA_DIR", "./.paxos-commit"))
    tx.add_argument(
        "--unacknowledged", action="store_true", help="only decided ones an RM has not acknowledged"
    )
    tx.add_argument("--limit", type=count(1), default=1000)
    tx.add_argument("--json", action="store_true")
    tx.set_defaults(func=_txns)

    so = sub.add_parser(
        "soak", help="many F=1 transactions; every 10%%: commits/s, acceptor DB bytes and rows, RSS"
    )
    so.add_argument("--transactions", type=count(1), default=100_000)
    so.add_argument("--concurrency", type=count(1), default=16)
    so.add_argument(
        "--retention", type=seconds(), default=30.0, help="acceptors' compact outcome record retention (s)"
    )
    so.add_argument("--postgres", metavar="DSN", help="acceptors on Postgres (one database each, made here)")
    so.add_argument("--json", action="store_true", help="print one JSON document")
    so.set_defaults(func=_soak)

    from paxos_commit.chaos.run import add_arguments as add_chaos_arguments

    ch = sub.add_parser("chaos", help="a nemesis: faults from a seeded schedule, then an independent check")
    add_chaos_arguments(ch)
    ch.set_defaults(func=_chaos)

    from paxos_commit.txn_cli import add_txn_parser

    add_txn_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"paxos-commit {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
