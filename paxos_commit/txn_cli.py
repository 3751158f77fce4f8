"""``paxos-commit txn show|list|resolve|retry``: operators' commands (see
``docs/operations.md``). The work is :class:`paxos_commit.admin.Admin`'s; this module
parses arguments, finds the cluster, and prints."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paxos_commit.argtypes import addresses, count, seconds
from rm_sdk.protocol import Outcome, ProtocolError

if TYPE_CHECKING:
    from paxos_commit.admin import TxnView
    from paxos_commit.certs import TlsFiles

__all__ = [
    "add_cluster_arguments",
    "add_txn_parser",
    "admin_tls",
    "cluster_addresses",
    "format_list",
    "format_show",
]

#: The admin certificate `paxos-commit up` (and every local cluster) makes: admin/local.
DEFAULT_ADMIN = "local"


def _env(name: str) -> str | None:
    return os.environ.get(f"PAXOS_COMMIT_{name}") or None


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--acceptors",
        type=addresses("acceptor", odd=True),
        default=os.environ.get("PAXOS_COMMIT_ACCEPTORS"),
        help="comma-separated acceptor addresses in id order (env PAXOS_COMMIT_ACCEPTORS)",
    )
    p.add_argument(
        "--coordinators",
        type=addresses("coordinator"),
        default=os.environ.get("PAXOS_COMMIT_COORDINATORS"),
        help="comma-separated coordinator addresses (env PAXOS_COMMIT_COORDINATORS)",
    )
    p.add_argument(
        "--attach",
        default=None,
        metavar="UP_DATA_DIR",
        help="the cluster of `paxos-commit up --data-dir UP_DATA_DIR` (default: ./.paxos-commit "
        "when neither --acceptors nor the environment names one); its certificates too",
    )
    g = p.add_argument_group(
        "TLS (the cluster's mTLS: this tool presents an admin certificate from the cluster's CA)"
    )
    g.add_argument("--tls-cert", default=_env("TLS_CERT"), help="the admin certificate chain (PEM)")
    g.add_argument("--tls-key", default=_env("TLS_KEY"), help="its private key (PEM)")
    g.add_argument("--tls-ca", default=_env("TLS_CA"), help="the cluster's CA (PEM)")
    g.add_argument(
        "--certs",
        default=_env("CERTS"),
        help="a folder with tls.crt, tls.key, ca.crt (a Kubernetes TLS Secret of an admin "
        "certificate), or made by `paxos-commit certs` (its admin-NAME.pem; see --admin); "
        "default with --attach: the cluster's own (admin-local.pem)",
    )
    g.add_argument(
        "--admin",
        default=_env("ADMIN") or DEFAULT_ADMIN,
        metavar="NAME",
        help="which admin certificate of a --certs folder: admin-NAME.pem (default: local)",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        default=_env("INSECURE") == "1",
        help="no TLS: for a cluster run with --insecure",
    )


class UsageError(Exception):
    pass


def cluster_addresses(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Acceptor and coordinator addresses from flags, the environment or a local cluster."""
    acceptors, coordinators, _ = _find_cluster(args)
    return acceptors, coordinators


def _find_cluster(args: argparse.Namespace) -> tuple[list[str], list[str], Any]:
    """Addresses, and the attached local cluster (None when flags named the cluster)."""
    acceptors = [a for a in (args.acceptors or "").split(",") if a]
    coordinators = [c for c in (args.coordinators or "").split(",") if c]
    cluster = None
    if args.attach or not acceptors:
        from paxos_commit.cluster import ClusterError, LocalCluster

        folder = Path(args.attach or "./.paxos-commit")
        try:
            cluster = LocalCluster.attach(folder)
        except ClusterError as exc:
            raise UsageError(f"{exc}; or name the cluster with --acceptors (and --coordinators)") from None
        acceptors = acceptors or cluster.acceptor_addresses
        coordinators = coordinators or cluster.coordinator_addresses
    if len(acceptors) % 2 == 0:
        raise UsageError(f"--acceptors needs the 2F+1 addresses (an odd count), got {len(acceptors)}")
    return acceptors, coordinators, cluster


def admin_tls(args: argparse.Namespace, cluster: Any = None) -> TlsFiles | None:
    """This tool's certificate files: --tls-cert/--tls-key/--tls-ca, --certs DIR (a mounted
    TLS Secret, or a `paxos-commit certs` folder's admin-NAME.pem), else the attached local
    cluster's admin certificate (``up`` makes admin-local.pem); None with --insecure or for
    an attached cluster running without TLS. Nothing at all: a usage error."""
    from paxos_commit.certs import TlsFiles, ensure_cert

    explicit = [getattr(args, k, None) for k in ("tls_cert", "tls_key", "tls_ca")]
    certs = getattr(args, "certs", None)
    if getattr(args, "insecure", False):
        if any(explicit) or certs:
            raise UsageError("--insecure cannot be combined with --tls-* or --certs")
        return None
    name = getattr(args, "admin", None) or DEFAULT_ADMIN
    if any(explicit):
        if not all(explicit):
            raise UsageError("--tls-cert, --tls-key and --tls-ca go together")
        files = TlsFiles(*(Path(str(x)) for x in explicit))
    elif certs:
        d = Path(certs)
        files = TlsFiles.mounted(d) if (d / "tls.crt").exists() else TlsFiles.in_dir(d, "admin", name)
    elif cluster is not None:
        if not cluster.tls:
            return None
        files = ensure_cert(cluster.certs_dir, "admin", name)
    else:
        raise UsageError(
            "no certificates: give --certs DIR (an admin certificate; see `paxos-commit certs "
            "DIR --issue admin:NAME`) or --tls-cert/--tls-key/--tls-ca, or --attach an up's data "
            "dir; --insecure for a cluster without TLS"
        )
    for f in (files.cert, files.key, files.ca):
        if not f.exists():
            raise UsageError(f"certificate file {f} does not exist")
    return files


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _outcome_text(v: TxnView) -> str:
    o = v.outcome
    if o is Outcome.PENDING:
        return "PENDING (in doubt)" if v.in_doubt else "PENDING"
    text = str(o.value).upper()
    cause, reason = v.cause(), v.reason()
    if o is Outcome.ABORTED and (cause or reason):
        text += f" ({', '.join(x for x in (cause, reason) if x)})"
    return text


def _operator(v: TxnView) -> str:
    admins = v.operator_ballots()
    if not admins or v.cause() == "operator":
        return ""
    return f"; an operator's ballot ({', '.join(admins)}) took part"


def format_show(v: TxnView) -> str:
    from paxos_commit.admin import show_ballot, show_value

    lines = [f"transaction {v.txn_id}"]
    if v.owned is not None:
        owner = f"{v.owned.leader_id} at {v.owned.coordinator} ({v.owned.phase})"
    elif v.decided_by:
        owner = f"finished; decided by {v.decided_by}"
    else:
        owner = "no coordinator drives it (finished, or its owner died or restarted)"
    rows = [
        ("owner", owner),
        ("age", _age(v.age_s)),
        ("registrar", v.registrar()),
        ("outcome", _outcome_text(v) + _operator(v)),
        (
            "recorded",
            ", ".join(
                f"acceptor {i}: {v.recorded[i].value if i in v.recorded else 'unreachable' if i in v.unreachable else 'never heard of it'}"
                for i in range(v.n_acceptors)
            ),
        ),
    ]
    rows.append(("collection", v.collection_state()))
    for k, val in rows:
        lines.append(f"  {k:<11} {val}")
    waits = v.waits_for()
    if waits:
        lines.append(f"  {'waits for':<11} {waits[0]}")
        lines += [f"  {'':<11} {w}" for w in waits[1:]]
    ins = v.instances()
    if ins:
        lines.append("")
        lines.append(f"  {'instance':<24} {'acceptor':<9} {'mbal':<26} {'bal':<26} val")
        for name in ins:
            for i in range(v.n_acceptors):
                st_all = v.states.get(i)
                if st_all is None:
                    lines.append(f"  {name:<24} {i:<9} {'(unreachable)'}")
                    continue
                st = st_all.get(name)
                if st is None:
                    lines.append(f"  {name:<24} {i:<9} {'-':<26} {'-':<26} -")
                else:
                    lines.append(
                        f"  {name:<24} {i:<9} {show_ballot(st.mbal):<26} {show_ballot(st.bal):<26} {show_value(st.val)}"
                    )
    return "\n".join(lines)


def format_list(views: list[TxnView]) -> str:
    if not views:
        return "no transactions match"
    lines = [f"{'TXN':<34} {'AGE':>7}  {'OUTCOME':<10} {'PARTICIPANTS':<28} WAITS FOR / CAUSE"]
    for v in views:
        rms = ",".join(i for i in v.instances() if not i.startswith("@")) or "-"
        o = v.outcome
        outcome = "IN-DOUBT" if v.in_doubt else o.value.upper()
        tail = (
            "; ".join(v.waits_for()) if o is Outcome.PENDING else (v.cause() if o is Outcome.ABORTED else "")
        )
        lines.append(f"{v.txn_id:<34} {_age(v.age_s):>7}  {outcome:<10} {rms[:28]:<28} {tail}")
    return "\n".join(lines)


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


async def _run(args: argparse.Namespace) -> int:
    # The admin machinery loads here, not with the CLI: every service process builds the
    # parser, and none of them runs this.
    from paxos_commit.admin import Admin, Filters, parse_duration

    acceptors, coordinators, cluster = _find_cluster(args)
    async with Admin(acceptors, coordinators, tls=admin_tls(args, cluster)) as admin:
        if args.txn_command == "show":
            v = await admin.show(args.txn_id)
            if args.json:
                _print_json(v.to_json())
            else:
                print(format_show(v))
            return 0
        if args.txn_command == "list":
            outcome = Outcome(args.outcome) if args.outcome else None
            f = Filters(
                in_doubt=args.in_doubt,
                older_than=parse_duration(args.older_than) if args.older_than else 0.0,
                rm_id=args.rm or "",
                outcome=outcome,
                limit=args.limit,
            )
            views = await admin.list_transactions(f)
            if args.json:
                _print_json([v.to_json() for v in views])
            else:
                print(format_list(views))
            if admin.truncated:
                print(
                    f"paxos-commit txn list: more transactions may match than shown (--limit {args.limit}); "
                    "narrow the filters or raise --limit",
                    file=sys.stderr,
                )
            return 0
        if args.txn_command == "resolve":
            r = await admin.resolve_abort(args.txn_id, within=args.timeout)
            doc = {
                "txn_id": r.txn_id,
                "outcome": r.outcome.value,
                "changed": r.changed,
                "detail": r.detail,
                "ballots": r.ballots,
                "leader_id": r.leader_id,
            }
            if args.json:
                _print_json(doc)
            else:
                print(
                    f"{r.outcome.value.upper()}: {r.detail}"
                    + (f" ({r.ballots} ballot(s) as {r.leader_id})" if r.changed else "")
                )
            return 0
        if args.txn_command == "retry":
            if not coordinators:
                raise UsageError("txn retry needs --coordinators (or --attach)")
            done = await admin.retry(args.txn_id)
            if args.json:
                _print_json([{"coordinator": c, "action": a} for c, a in done])
            else:
                for c, a in done:
                    print(f"{c}: {a}")
            return 0 if any(not a.startswith("error:") for _, a in done) else 1
    raise UsageError(f"unknown txn command {args.txn_command!r}")


def _txn(args: argparse.Namespace) -> int:
    from paxos_commit.admin import TxnNotFound

    try:
        return asyncio.run(_run(args))
    except (UsageError, ValueError, ProtocolError) as exc:
        print(f"paxos-commit txn {args.txn_command}: {exc}", file=sys.stderr)
        return 2
    except TxnNotFound as exc:
        print(f"paxos-commit txn {args.txn_command}: {exc}", file=sys.stderr)
        return 1
    except (ConnectionError, TimeoutError) as exc:
        print(f"paxos-commit txn {args.txn_command}: {exc}", file=sys.stderr)
        return 1


def add_txn_parser(sub: Any) -> None:
    t = sub.add_parser("txn", help="inspect and settle transactions (operators)")
    ts = t.add_subparsers(dest="txn_command", required=True)

    s = ts.add_parser("show", help="one transaction: owner, age, registrar, each instance at each acceptor")
    s.add_argument("txn_id")
    s.add_argument("--json", action="store_true")
    add_cluster_arguments(s)

    ls = ts.add_parser("list", help="transactions on the acceptors (and open at coordinators), newest first")
    ls.add_argument("--in-doubt", action="store_true", help="only undecided ones whose commit started")
    ls.add_argument(
        "--older-than", default=None, metavar="AGE", help="only those at least this old (30s, 5m)"
    )
    ls.add_argument("--rm", default=None, metavar="RM_ID", help="only those this resource manager is part of")
    ls.add_argument("--outcome", choices=[o.value for o in Outcome], default=None)
    ls.add_argument("--limit", type=count(1), default=200)
    ls.add_argument("--json", action="store_true")
    add_cluster_arguments(ls)

    r = ts.add_parser(
        "resolve",
        help="settle a stuck transaction by a higher ballot: aborts unless commit was chosen",
    )
    r.add_argument("txn_id")
    r.add_argument(
        "--abort",
        action="store_true",
        required=True,
        help="required: the only settlement there is (a chosen commit is kept and reported)",
    )
    r.add_argument(
        "--timeout", type=seconds(positive=True), default=30.0, help="give up after this many seconds"
    )
    r.add_argument("--json", action="store_true")
    add_cluster_arguments(r)

    rt = ts.add_parser("retry", help="ask the coordinators to recover a transaction now")
    rt.add_argument("txn_id")
    rt.add_argument("--json", action="store_true")
    add_cluster_arguments(rt)
    t.set_defaults(func=_txn)

    c = sub.add_parser("console", help="serve the operators' web console")
    c.add_argument(
        "--listen",
        default=os.environ.get("PAXOS_COMMIT_CONSOLE_LISTEN", "127.0.0.1:8080"),
        help="host:port (port 0: any); it has no login: keep it on loopback or behind one",
    )
    c.add_argument(
        "--refresh", type=count(0), default=5, help="reload the overview every N seconds (0: never)"
    )
    c.add_argument("--port-file", default=None, help="write {address, pid} here once serving")
    add_cluster_arguments(c)
    c.set_defaults(func=_console)


def _console(args: argparse.Namespace) -> int:
    from paxos_commit.console import Console
    from paxos_commit.serving import write_port_file

    try:
        acceptors, coordinators, cluster = _find_cluster(args)
        tls = admin_tls(args, cluster)
    except (UsageError, ValueError) as exc:
        print(f"paxos-commit console: {exc}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    console = Console(
        acceptors, coordinators, (host or "127.0.0.1", int(port)), refresh=args.refresh, tls=tls
    )
    write_port_file(args.port_file, {"address": console.address, "pid": os.getpid()})
    print(
        f"console on {console.address} ({len(acceptors)} acceptors, {len(coordinators)} coordinators)",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=console.httpd.shutdown).start())
    try:
        console.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        console.close()
    return 0
