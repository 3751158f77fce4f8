"""The independent checker: a verdict from what the clients logged, what each resource
manager's own SQLite file holds and when the nemesis's faults ran, and nothing else (no
coordinator or acceptor state, no protocol code).

Checks, once the faults healed and the resolution window passed:

- atomicity: every transaction has one outcome, the same at every RM that joined it, no
  RM applied two outcomes, and none committed work it had not prepared;
- acknowledged outcomes: what a client was told is what every RM applied (a commit told
  to a client and aborted anywhere is a lost acknowledgement);
- resolution: nothing stays prepared, and every RM that joined applied an outcome;
- every abort has a cause: a refusal the workload planned, or a fault around it. An abort
  around which only faults the configuration tolerates were active (at most F acceptors
  impaired) is counted as *unnecessary*; one with no fault near it is *uncaused*.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["History", "Report", "check", "load_history"]


@dataclass
class Txn:
    txn_id: str
    client: str = ""
    rms: list[str] = field(default_factory=list)
    refuse: str | None = None
    begin: float | None = None
    told: str | None = None  # committed | aborted | unknown | None (no outcome line)
    cause: str = ""
    reason: str = ""
    told_at: float | None = None
    work_ok: set[str] = field(default_factory=set)
    owner: str = ""  # the owning coordinator's address
    commit_at: float | None = None  # when the client asked to commit


@dataclass
class RMFile:
    joined: dict[str, bool] = field(default_factory=dict)  # txn -> refuse
    prepared: set[str] = field(default_factory=set)
    applied: dict[str, list[str]] = field(default_factory=dict)  # txn -> outcomes, in order
    committed_unprepared: set[str] = field(default_factory=set)


@dataclass
class History:
    txns: dict[str, Txn]
    rms: dict[str, RMFile]
    faults: list[dict[str, object]]
    problems: list[str] = field(default_factory=list)  # malformed or contradictory client logs


@dataclass
class Report:
    transactions: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    aborts_by_cause: dict[str, int] = field(default_factory=dict)
    violations: list[dict[str, str]] = field(default_factory=list)
    unresolved: list[dict[str, str]] = field(default_factory=list)
    unnecessary_aborts: list[str] = field(default_factory=list)
    uncaused_aborts: list[str] = field(default_factory=list)
    #: Clients left without an outcome (an error, a timeout) while only tolerated faults ran.
    untold_under_tolerated_faults: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.violations or self.unresolved or self.uncaused_aborts)

    def summary(self, limit: int = 20) -> dict[str, object]:
        return {
            "ok": self.ok,
            "transactions": self.transactions,
            "outcomes": self.outcomes,
            "aborts_by_cause": self.aborts_by_cause,
            "violations": len(self.violations),
            "violation_examples": self.violations[:limit],
            "unresolved": len(self.unresolved),
            "unresolved_examples": self.unresolved[:limit],
            "unnecessary_aborts": len(self.unnecessary_aborts),
            "unnecessary_examples": self.unnecessary_aborts[:limit],
            "uncaused_aborts": len(self.uncaused_aborts),
            "uncaused_examples": self.uncaused_aborts[:limit],
            "untold_under_tolerated_faults": len(self.untold_under_tolerated_faults),
            "untold_examples": self.untold_under_tolerated_faults[:limit],
        }


def load_rm(path: Path) -> RMFile:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rm = RMFile()
        for txn, refuse in db.execute("SELECT txn_id, refuse FROM joined"):
            rm.joined[txn] = bool(refuse)
        rm.prepared = {r[0] for r in db.execute("SELECT txn_id FROM prepared")}
        for txn, outcome, was_prepared in db.execute(
            "SELECT txn_id, outcome, was_prepared FROM applied ORDER BY seq"
        ):
            rm.applied.setdefault(txn, []).append(outcome)
            if outcome == "committed" and not was_prepared:
                rm.committed_unprepared.add(txn)
        return rm
    finally:
        db.close()


def load_history(history_dir: Path, rm_files: dict[str, Path], faults_file: Path | None) -> History:
    txns: dict[str, Txn] = {}
    problems: list[str] = []
    for path in sorted(history_dir.glob("*.ndjson")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"{path.name}:{n}: torn line (a client killed mid-write)")
                continue
            if "txn" not in ev:
                continue
            t = txns.setdefault(ev["txn"], Txn(ev["txn"]))
            if ev["ev"] == "begin":
                t.client, t.rms, t.refuse, t.begin = ev["client"], ev["rms"], ev["refuse"], ev["t"]
                t.owner = ev.get("owner", "")
            elif ev["ev"] == "commit":
                t.commit_at = ev["t"]
            elif ev["ev"] == "work" and ev["ok"]:
                t.work_ok.add(ev["rm"])
            elif ev["ev"] == "outcome":
                if t.told is not None and t.told != ev["outcome"]:
                    problems.append(f"{t.txn_id}: told {t.told} and then {ev['outcome']}")
                t.told, t.cause, t.reason, t.told_at = ev["outcome"], ev["cause"], ev["reason"], ev["t"]
    rms = {name: load_rm(p) for name, p in sorted(rm_files.items())}
    faults: list[dict[str, object]] = []
    if faults_file is not None and faults_file.exists():
        faults = [json.loads(line) for line in faults_file.read_text().splitlines() if line.strip()]
    return History(txns, rms, faults, problems)


def check(h: History, *, settle: float = 4.0, txn_timeout: float = 10.0) -> Report:
    """``settle``: how long after a fault healed an abort is still blamed on it;
    ``txn_timeout``: how long a transaction whose client never heard back may have run."""
    r = Report()
    ids = set(h.txns)
    for rm in h.rms.values():
        ids |= set(rm.joined) | set(rm.applied) | rm.prepared
    outcomes: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    for p in h.problems:
        r.violations.append({"txn": p.split(":")[0], "what": p})
    for txn_id in sorted(ids):
        t = h.txns.get(txn_id, Txn(txn_id))
        members = sorted(name for name, rm in h.rms.items() if txn_id in rm.joined or txn_id in rm.applied)
        applied: set[str] = set()
        for name in members:
            rm = h.rms[name]
            mine = set(rm.applied.get(txn_id, []))
            if len(mine) > 1:
                r.violations.append({"txn": txn_id, "what": f"{name} applied both commit and abort"})
            applied |= mine
            if txn_id in rm.committed_unprepared:
                r.violations.append({"txn": txn_id, "what": f"{name} committed work it never prepared"})
            if txn_id in rm.prepared:
                r.unresolved.append({"txn": txn_id, "rm": name, "what": "still prepared"})
            elif not mine:
                r.unresolved.append({"txn": txn_id, "rm": name, "what": "joined, no outcome applied"})
        if len(applied) > 1:
            r.violations.append(
                {
                    "txn": txn_id,
                    "what": "atomicity: "
                    + ", ".join(f"{n}={'/'.join(h.rms[n].applied.get(txn_id, ['-']))}" for n in members),
                }
            )
        for rm_name in sorted(t.work_ok):
            if rm_name in h.rms and txn_id not in h.rms[rm_name].joined:
                r.violations.append(
                    {"txn": txn_id, "what": f"{rm_name} acknowledged work but kept no record"}
                )
        if t.told in ("committed", "aborted") and applied and applied != {t.told}:
            what = "acknowledged commit lost" if t.told == "committed" else "client told abort, RMs committed"
            r.violations.append({"txn": txn_id, "what": f"{what}: applied {sorted(applied)}"})
        final = t.told if t.told in ("committed", "aborted") else (applied.pop() if len(applied) == 1 else "")
        if t.told not in ("committed", "aborted"):
            outcomes["unknown_to_client"] += 1
            if t.told == "unknown" and _cause(t, h, settle, txn_timeout) in ("unnecessary", "uncaused"):
                r.untold_under_tolerated_faults.append(f"{txn_id} ({t.cause})")
        if final == "committed":
            outcomes["committed"] += 1
        elif final == "aborted":
            outcomes["aborted"] += 1
            cause = _cause(t, h, settle, txn_timeout)
            causes[cause] += 1
            if cause == "unnecessary":
                r.unnecessary_aborts.append(f"{txn_id} ({t.cause} {t.reason})".strip())
            elif cause == "uncaused":
                r.uncaused_aborts.append(f"{txn_id} ({t.cause} {t.reason})".strip())
        else:
            outcomes["untold_and_unapplied"] += 1  # nothing to check: no RM holds any of it
    r.transactions = len(ids)
    r.outcomes = dict(sorted(outcomes.items()))
    r.aborts_by_cause = dict(sorted(causes.items()))
    return r


def owners_killed_mid_commit(h: History, addresses: dict[str, str]) -> int:
    """How many coordinator kills hit an owner with a commit in flight (asked, not yet
    answered): the kills that exercise recovery by another replica."""
    n = 0
    for f in h.faults:
        if f.get("kind") != "kill":
            continue
        start = float(str(f["start"]))
        owners = {addresses.get(str(t), "") for t in f["targets"]}  # type: ignore[attr-defined]
        if any(
            t.owner in owners
            and t.commit_at is not None
            and t.commit_at <= start
            and (t.told_at is None or t.told_at > start)
            for t in h.txns.values()
        ):
            n += 1
    return n


def _cause(t: Txn, h: History, settle: float, txn_timeout: float) -> str:
    if t.refuse is not None:
        return "refused"
    if t.begin is None:
        return "fault"  # the client died before logging it: a client fault
    end = t.told_at if t.told_at is not None else t.begin + txn_timeout
    near = [f for f in h.faults if float(str(f["start"])) <= end and float(str(f["end"])) + settle >= t.begin]
    if not near:
        return "uncaused"
    if all(f.get("tolerated") for f in near):
        return "unnecessary"
    return "fault"
