"""``paxos-commit chaos``: build the cluster, run the workload under the nemesis, heal,
wait for resolution, check, report."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from paxos_commit.argtypes import CommandError, count, seconds

from .checker import check, load_history, owners_killed_mid_commit
from .cluster import COORDINATOR_PORT, FAKETIME_LIB, ChaosCluster, Timeouts
from .nemesis import KINDS, Nemesis, make_schedule
from .network import Network, network_available

__all__ = ["ChaosConfig", "add_arguments", "run_chaos"]


@dataclass
class ChaosConfig:
    transactions: int = 200
    seed: int = 0
    f: int = 1
    coordinators: int = 2
    rms: int = 3
    clients: int = 2
    concurrency: int = 6
    faults: int = 0  # 0: as many as the workload lasts
    kinds: tuple[str, ...] = KINDS
    safety_only: bool = False
    scale: float = 1.0
    max_seconds: float = 600.0
    resolution_window: float = 30.0
    data_dir: Path | None = None
    keep: bool = False
    #: role -> argv prefix standing in for ``python -m paxos_commit`` (tests inject bugs here).
    launchers: dict[str, list[str]] = field(default_factory=dict)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transactions", type=count(1), default=200)
    p.add_argument("--seed", type=count(0), default=None, help="default: a random seed (printed)")
    p.add_argument("--f", type=count(0), default=1, help="acceptors are 2F+1")
    p.add_argument("--coordinators", type=count(1), default=2)
    p.add_argument("--rms", type=count(1), default=3)
    p.add_argument("--clients", type=count(1), default=2)
    p.add_argument("--concurrency", type=count(1), default=6, help="transactions in flight per client")
    p.add_argument(
        "--faults", type=count(0), default=0, help="stop after this many faults (0: until the workload ends)"
    )
    p.add_argument("--kinds", default=",".join(KINDS), help=f"fault kinds, from {','.join(KINDS)}")
    p.add_argument(
        "--safety-only",
        action="store_true",
        help="also impair majorities of acceptors (liveness not expected)",
    )
    p.add_argument(
        "--scale", type=seconds(positive=True), default=1.0, help="stretch fault durations and gaps"
    )
    p.add_argument(
        "--max-seconds", type=seconds(positive=True), default=600.0, help="stop the faults after this long"
    )
    p.add_argument("--resolution-window", type=seconds(positive=True), default=30.0)
    p.add_argument("--data-dir", default=None, help="keep the run's files here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def config_from_args(args: argparse.Namespace) -> ChaosConfig:
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    return ChaosConfig(
        transactions=args.transactions, seed=seed, f=args.f, coordinators=args.coordinators, rms=args.rms,
        clients=args.clients, concurrency=args.concurrency, faults=args.faults,
        kinds=tuple(k for k in args.kinds.split(",") if k), safety_only=args.safety_only, scale=args.scale,
        max_seconds=args.max_seconds, resolution_window=args.resolution_window,
        data_dir=Path(args.data_dir) if args.data_dir else None, keep=args.data_dir is not None,
    )  # fmt: skip


def run_chaos(cfg: ChaosConfig) -> dict[str, object]:
    """Run one chaos test; returns the summary (``summary["ok"]`` is the verdict)."""
    bad = set(cfg.kinds) - set(KINDS)
    if bad:
        raise CommandError(f"unknown fault kinds {sorted(bad)}; choose from {','.join(KINDS)}")
    kinds = cfg.kinds
    notes: list[str] = []
    if "clock-jump" in kinds and not Path(FAKETIME_LIB).exists():
        kinds = tuple(k for k in kinds if k != "clock-jump")
        notes.append("clock-jump skipped: libfaketime not installed (apt-get install faketime)")
    if cfg.data_dir is not None and cfg.data_dir.exists() and any(cfg.data_dir.iterdir()):
        raise CommandError(f"--data-dir {cfg.data_dir.resolve()} is not empty: give a new or empty folder")
    why = network_available()
    if why:
        raise CommandError(f"needs network namespaces: {why}")
    root = (cfg.data_dir or Path(tempfile.mkdtemp(prefix="paxos-chaos-"))).resolve()
    net = Network(prefix=f"pcc{os.getpid()}-", subnet=1)
    timeouts = Timeouts()
    cluster = ChaosCluster(
        root, net, f=cfg.f, n_coordinators=cfg.coordinators, n_rms=cfg.rms, n_clients=cfg.clients,
        transactions=cfg.transactions, concurrency=cfg.concurrency, seed=cfg.seed, timeouts=timeouts,
        launchers=cfg.launchers, disk_mb=32 if "disk-full" in kinds else 0, faketime="clock-jump" in kinds,
    )  # fmt: skip
    started = time.monotonic()
    try:
        net.setup()
        cluster.build()
        roles = {name: node.role for name, node in cluster.nodes.items()}
        count = cfg.faults or max(50, cfg.transactions)
        schedule = make_schedule(
            cfg.seed, roles, cfg.f, count, kinds=kinds, safety_only=cfg.safety_only, scale=cfg.scale
        )
        cluster.start_all()
        nemesis = Nemesis(cluster, schedule, root / "faults.ndjson", cluster.clients_done)
        nemesis.run(cfg.max_seconds)
        nemesis.heal_all()
        healed = time.monotonic()
        (root / "stop").touch()  # begin nothing new; in-flight transactions finish
        while not cluster.clients_done() and time.monotonic() - healed < 60:
            time.sleep(0.2)
        rm_files = {n: cluster.data_dir(n) / "rm.db" for n in cluster.by_role("rm")}
        unresolved_at_10s: int | None = None
        resolved_after: float | None = None
        while True:
            cluster.supervise()
            waited = time.monotonic() - healed
            rep = check(load_history(root / "history", rm_files, root / "faults.ndjson"))
            if waited >= 10 and unresolved_at_10s is None:
                unresolved_at_10s = len(rep.unresolved)
            if not rep.unresolved:
                resolved_after = waited
                unresolved_at_10s = 0 if unresolved_at_10s is None else unresolved_at_10s
                break
            if waited > cfg.resolution_window:
                break
            time.sleep(0.5)
        live_after_heal = _live_on_acceptors(cluster)
        cluster.stop_all()
        history = load_history(root / "history", rm_files, root / "faults.ndjson")
        report = check(history, txn_timeout=timeouts.txn + 2)
        by_kind = Counter(str(f["kind"]) for f in nemesis.applied)
        by_shape = Counter(str(f["shape"]) for f in nemesis.applied if f["kind"] == "partition")
        summary: dict[str, object] = {
            "seed": cfg.seed,
            "replay": f"paxos-commit chaos --seed {cfg.seed} --transactions {cfg.transactions} --f {cfg.f}"
            + (" --safety-only" if cfg.safety_only else ""),
            "cluster": cluster.describe(),
            "mode": "safety-only" if cfg.safety_only else "liveness",
            "seconds": round(time.monotonic() - started, 1),
            "faults": len(nemesis.applied),
            "faults_by_kind": dict(sorted(by_kind.items())),
            "partitions_by_shape": dict(sorted(by_shape.items())),
            "owner_kills_mid_commit": owners_killed_mid_commit(
                history, {n: f"{a}:{COORDINATOR_PORT}" for n, a in net.nodes.items()}
            ),
            "tolerated_faults": sum(1 for f in nemesis.applied if f["tolerated"]),
            "unplanned_exits": {n: node.crashes for n, node in cluster.nodes.items() if node.crashes},
            # Not a verdict (a full disk is expected to raise), but a crashing handler shows here.
            "tracebacks_in_logs": _tracebacks(cluster),
            "unresolved_10s_after_heal": unresolved_at_10s,
            "resolved_seconds_after_heal": None if resolved_after is None else round(resolved_after, 1),
            # A figure, not a verdict: a transaction stays live (uncollected) until every RM
            # of its set acknowledged; an RM killed between applying and acknowledging
            # never does, so some may stay (visible in paxos-commit txns --unacknowledged).
            "live_on_acceptors_after_heal": live_after_heal,
            **report.summary(),
            "notes": notes,
            "schedule": [describe_fault(f) for f in nemesis.applied],
            "data_dir": str(root) if cfg.keep else None,
        }
        return summary
    finally:
        cluster.teardown()
        net.teardown()
        if not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)


def _live_on_acceptors(cluster: ChaosCluster, wait: float = 15.0) -> dict[str, dict[str, int]]:
    """Per acceptor, the transactions left live (collected ones leave no row) once
    collection had up to ``wait`` seconds to catch up after the run, by why: undecided
    there, its set unknown there, or the RM whose acknowledgement it lacks."""
    deadline = time.monotonic() + wait
    while True:
        out: dict[str, dict[str, int]] = {}
        for name in cluster.by_role("acceptor"):
            why: Counter[str] = Counter()
            for db in cluster.data_dir(name).glob("*.db"):
                try:
                    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
                        rows = c.execute("SELECT outcome, participants, acked FROM paxos_txn").fetchall()
                except sqlite3.Error:
                    why["unreadable"] += 1  # e.g. the disk-full fault's volume
                    continue
                for outcome, participants, acked in rows:
                    if outcome == "pending":
                        why["undecided"] += 1
                    elif participants is None:
                        why["set unknown"] += 1
                    else:
                        missing = set(json.loads(participants)) - set(json.loads(acked or "[]"))
                        why.update(f"no ack from {rm}" for rm in sorted(missing))
            out[name] = dict(sorted(why.items()))
        if not any(out.values()) or time.monotonic() >= deadline:
            return out
        time.sleep(0.5)


def _tracebacks(cluster: ChaosCluster) -> dict[str, dict[str, int]]:
    """Per process: how many tracebacks its log holds, by the exception's last line."""
    out: dict[str, dict[str, int]] = {}
    for name, node in cluster.nodes.items():
        if not node.log_file.exists():
            continue
        lines = node.log_file.read_text(errors="replace").splitlines()
        kinds: Counter[str] = Counter()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                j = i + 1
                while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                    j += 1
                if j < len(lines):
                    kinds[lines[j].split(":")[0][:80]] += 1
        if kinds:
            out[name] = dict(kinds.most_common(5))
    return out


def describe_fault(rec: dict[str, object]) -> str:
    """One line for a fault the nemesis applied (a record of ``faults.ndjson``)."""
    shape = f"/{rec['shape']}" if rec["shape"] else ""
    jump = f" +{rec['jump']}s" if rec["jump"] else ""
    targets = ",".join(str(t) for t in rec["targets"])  # type: ignore[attr-defined]
    return f"#{rec['i']} {rec['kind']}{shape} {targets}{jump} {rec['duration']}s"


def print_summary(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=1), flush=True)
        return
    print(f"seed {summary['seed']} ({summary['replay']})")
    for line in summary["schedule"]:  # type: ignore[attr-defined]
        print(f"  {line}")
    for key in (
        "mode", "seconds", "faults", "faults_by_kind", "partitions_by_shape", "owner_kills_mid_commit", "outcomes",
        "aborts_by_cause",
        "violations", "unresolved", "unresolved_10s_after_heal", "unnecessary_aborts", "uncaused_aborts",
        "untold_under_tolerated_faults",
        "unplanned_exits", "tracebacks_in_logs", "notes",
    ):  # fmt: skip
        print(f"{key}: {summary[key]}")
    for key in ("violation_examples", "unresolved_examples", "uncaused_examples", "unnecessary_examples"):
        for ex in summary[key]:  # type: ignore[attr-defined]
            print(f"  {key[:-9]}: {ex}")
    print("OK" if summary["ok"] else "FAILED", flush=True)
