"""The checker on small hand-made histories: it passes a clean one and catches each kind
of doctored one (issue 10: "it must fail on a doctored history")."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from paxos_commit.chaos.checker import check, load_history
from paxos_commit.chaos.nemesis import make_schedule
from paxos_commit.chaos.rm_process import open_db

T0 = 1_000_000.0


class Fixture:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "history").mkdir()
        self.log = (root / "history" / "client-0.ndjson").open("a")
        self.dbs: dict[str, sqlite3.Connection] = {}
        self.faults = root / "faults.ndjson"
        self.faults.touch()

    def db(self, rm: str) -> sqlite3.Connection:
        if rm not in self.dbs:
            self.dbs[rm] = open_db(self.root / f"{rm}.db")
        return self.dbs[rm]

    def ev(self, **doc: object) -> None:
        self.log.write(json.dumps(doc) + "\n")
        self.log.flush()

    def txn(
        self,
        txn: str,
        rms: list[str],
        told: str,
        applied: str | None = None,
        *,
        t: float = T0,
        refuse: str | None = None,
        cause: str = "",
    ) -> None:
        self.ev(ev="begin", txn=txn, client="client-0", rms=rms, refuse=refuse, t=t)
        for rm in rms:
            self.ev(ev="work", txn=txn, rm=rm, ok=True, t=t + 0.1)
            self.db(rm).execute("INSERT INTO joined VALUES (?, 'c', '[]', ?, ?)", (txn, int(rm == refuse), t))
            outcome = applied or told
            self.db(rm).execute(
                "INSERT INTO applied (txn_id, outcome, at, was_prepared) VALUES (?, ?, ?, ?)",
                (txn, outcome, t + 0.2, int(outcome == "committed")),
            )
        self.ev(ev="outcome", txn=txn, outcome=told, cause=cause, reason="", t=t + 0.3)

    def fault(self, kind: str, targets: list[str], start: float, end: float, tolerated: bool) -> None:
        with self.faults.open("a") as f:
            f.write(
                json.dumps(
                    {"kind": kind, "targets": targets, "start": start, "end": end, "tolerated": tolerated}
                )
                + "\n"
            )

    def report(self):  # type: ignore[no-untyped-def]
        return check(
            load_history(self.root / "history", {r: self.root / f"{r}.db" for r in self.dbs}, self.faults)
        )


def test_a_clean_history_passes(tmp_path: Path) -> None:
    fx = Fixture(tmp_path)
    fx.txn("t1", ["rm-0", "rm-1"], "committed")
    fx.txn("t2", ["rm-0", "rm-1"], "aborted", refuse="rm-1", cause="RMRefused")
    r = fx.report()
    assert r.ok, r.summary()
    assert r.outcomes == {"aborted": 1, "committed": 1}
    assert r.aborts_by_cause == {"refused": 1}


def test_one_flipped_applied_outcome_is_caught(tmp_path: Path) -> None:
    fx = Fixture(tmp_path)
    fx.txn("t1", ["rm-0", "rm-1"], "committed")
    fx.txn("t2", ["rm-0", "rm-1"], "committed")
    assert fx.report().ok
    fx.db("rm-1").execute("UPDATE applied SET outcome = 'aborted' WHERE txn_id = 't2'")
    r = fx.report()
    assert not r.ok
    whats = [v["what"] for v in r.violations if v["txn"] == "t2"]
    assert any(w.startswith("atomicity") for w in whats), whats
    assert any(w.startswith("acknowledged commit lost") for w in whats), whats


def test_an_outcome_told_to_the_client_and_applied_otherwise_everywhere_is_caught(tmp_path: Path) -> None:
    fx = Fixture(tmp_path)
    fx.txn("t1", ["rm-0", "rm-1"], "committed", applied="aborted")
    r = fx.report()
    assert [v["what"] for v in r.violations] == ["acknowledged commit lost: applied ['aborted']"]


def test_two_outcomes_at_one_rm_and_a_commit_never_prepared_are_caught(tmp_path: Path) -> None:
    fx = Fixture(tmp_path)
    fx.txn("t1", ["rm-0"], "committed")
    fx.db("rm-0").execute(
        "INSERT INTO applied (txn_id, outcome, at, was_prepared) VALUES ('t1', 'aborted', 0, 0)"
    )
    fx.txn("t2", ["rm-0"], "committed")
    fx.db("rm-0").execute("UPDATE applied SET was_prepared = 0 WHERE txn_id = 't2'")
    whats = {v["what"] for v in fx.report().violations}
    assert "rm-0 applied both commit and abort" in whats
    assert "rm-0 committed work it never prepared" in whats


def test_work_acknowledged_but_not_recorded_is_caught(tmp_path: Path) -> None:
    fx = Fixture(tmp_path)
    fx.txn("t1", ["rm-0", "rm-1"], "committed")
    fx.db("rm-1").execute("DELETE FROM joined")
    fx.db("rm-1").execute("DELETE FROM applied")
    whats = [v["what"] for v in fx.report().violations]
    assert whats == ["rm-1 acknowledged work but kept no record"]


def test_a_transaction_left_prepared_or_unapplied_is_unresolved(tmp_path: Path) -> None:
    fx = Fixture(tmp_path)
    fx.txn("t1", ["rm-0", "rm-1"], "committed")
    fx.db("rm-0").execute("INSERT INTO prepared VALUES ('t9', 'c', '[]')")
    fx.db("rm-0").execute("INSERT INTO joined VALUES ('t9', 'c', '[]', 0, 0)")
    fx.db("rm-1").execute("INSERT INTO joined VALUES ('t8', 'c', '[]', 0, 0)")
    r = fx.report()
    assert not r.ok
    assert {(u["txn"], u["what"]) for u in r.unresolved} == {
        ("t9", "still prepared"),
        ("t8", "joined, no outcome applied"),
    }


def test_aborts_are_blamed_on_faults_and_those_the_configuration_tolerates_are_unnecessary(
    tmp_path: Path,
) -> None:
    fx = Fixture(tmp_path)
    fx.fault("kill", ["acceptor-0"], T0 - 1, T0 + 1, tolerated=True)
    fx.txn("t1", ["rm-0", "rm-1"], "aborted", t=T0, cause="VoteTimeout")
    fx.fault("kill", ["rm-1"], T0 + 99, T0 + 101, tolerated=False)
    fx.txn("t2", ["rm-0", "rm-1"], "aborted", t=T0 + 100, cause="VoteTimeout")
    fx.txn("t3", ["rm-0", "rm-1"], "aborted", t=T0 + 500, cause="VoteTimeout")
    r = fx.report()
    assert r.aborts_by_cause == {"fault": 1, "uncaused": 1, "unnecessary": 1}
    assert [u.split()[0] for u in r.unnecessary_aborts] == ["t1"]
    assert [u.split()[0] for u in r.uncaused_aborts] == ["t3"]
    assert not r.ok  # an abort without a cause fails the run


ROLES = {
    **{f"acceptor-{i}": "acceptor" for i in range(3)},
    **{f"coord-{i}": "coordinator" for i in range(2)},
    **{f"rm-{i}": "rm" for i in range(3)},
    **{f"client-{i}": "client" for i in range(2)},
}


def test_a_seed_gives_one_schedule_and_liveness_schedules_impair_at_most_f_acceptors() -> None:
    a = make_schedule(42, ROLES, 1, 200)
    assert a == make_schedule(42, ROLES, 1, 200)
    assert a != make_schedule(43, ROLES, 1, 200)
    assert {f.kind for f in a} == {"kill", "pause", "partition", "disk-full", "clock-jump"}
    assert {f.shape for f in a if f.kind == "partition"} == {"isolate", "link", "one-way", "split"}
    for f in a:
        impaired = [t for t in f.targets if ROLES[t] == "acceptor"]
        if f.kind == "partition" and f.shape in ("link", "one-way"):
            continue  # one link: at most one acceptor is cut from one peer
        assert len(impaired) <= 1, f
    killed_roles = {ROLES[f.targets[0]] for f in a if f.kind == "kill"}
    assert killed_roles == {"acceptor", "coordinator", "rm", "client"}
    safety = make_schedule(42, ROLES, 1, 200, safety_only=True)
    assert any(sum(ROLES[t] == "acceptor" for t in f.targets) >= 2 for f in safety)
