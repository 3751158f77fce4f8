"""Real processes under the nemesis (network namespaces: root and nftables needed).

- A bounded run of the shipped code passes the checker, and the same history with one
  applied outcome flipped fails it.
- A seeded bug injected by the test (a coordinator that proposes ``prepared`` in a free
  instance, see ``buggy_coordinator.py``) is caught by a kill schedule: first the one
  ``.ci/run`` runs (``--kinds kill --seed 1 --transactions 300``), then the next seeds,
  within a time budget.
"""

from __future__ import annotations

import itertools
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from paxos_commit.chaos.checker import check, load_history
from paxos_commit.chaos.network import network_available
from paxos_commit.chaos.run import ChaosConfig, run_chaos

pytestmark = pytest.mark.skipif(network_available() is not None, reason=str(network_available()))

BUGGY_COORDINATOR = [sys.executable, "-m", "tests.chaos.buggy_coordinator"]


def test_a_bounded_run_passes_and_its_history_doctored_fails(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = run_chaos(ChaosConfig(transactions=120, seed=3, data_dir=run, keep=True))
    assert summary["ok"], summary
    assert summary["violations"] == 0 and summary["unresolved"] == 0
    outcomes = summary["outcomes"]
    assert isinstance(outcomes, dict) and outcomes.get("committed", 0) > 0

    rm_files = {p.parent.name: p for p in (run / "data").glob("rm-*/rm.db")}
    assert check(load_history(run / "history", rm_files, run / "faults.ndjson")).ok
    # Flip one applied commit at one RM: the checker must see it.
    db = sqlite3.connect(rm_files["rm-0"])
    (txn,) = db.execute("SELECT txn_id FROM applied WHERE outcome = 'committed' LIMIT 1").fetchone()
    db.execute("UPDATE applied SET outcome = 'aborted' WHERE txn_id = ?", (txn,))
    db.commit()
    db.close()
    report = check(load_history(run / "history", rm_files, run / "faults.ndjson"))
    assert not report.ok
    assert any(v["txn"] == txn and v["what"].startswith("atomicity") for v in report.violations) or any(
        v["txn"] == txn and "lost" in v["what"] for v in report.violations
    ), report.violations


#: How long the kill schedules may run, one after another, to catch the seeded bug.
CATCH_BUDGET = 420.0


@pytest.mark.timeout(CATCH_BUDGET + 300)
def test_the_ci_kill_schedule_catches_a_coordinator_that_proposes_prepared_in_a_free_instance() -> None:
    # The bug bites only when an RM joined and never voted before its owner's recovery
    # ballot, which real-process timing decides: CI's schedule (seed 1) first, then the
    # next kill schedules, until one run catches it or the budget is spent. A run takes
    # 10-140 s; about 2 in 3 catch it (seeds 1-6 on the dev machine: 1, 2, 4, 5 did), but
    # under CI's load seeds 1-3 once all missed, so three fixed seeds were a flaky test.
    deadline = time.monotonic() + CATCH_BUDGET
    tried: list[int] = []
    for seed in itertools.count(1):
        tried.append(seed)
        summary = run_chaos(
            ChaosConfig(
                transactions=300, seed=seed, kinds=("kill",), launchers={"coordinator": BUGGY_COORDINATOR}
            )
        )
        if not summary["ok"] or time.monotonic() >= deadline:
            break
    assert not summary["ok"], (tried, summary)
    examples = summary["violation_examples"]
    assert isinstance(examples, list)
    assert any(
        v["what"].startswith(("atomicity", "acknowledged commit lost")) or "never prepared" in v["what"]
        for v in examples
    ), examples
