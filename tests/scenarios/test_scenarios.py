"""Golden scenario runs (tests/scenarios/testdata/*.txt), diffed step by step.

Each file holds a script followed by ``----`` and the output it produced. Regenerate after
an intended change with ``PAXOS_COMMIT_REWRITE=1 pytest tests/scenarios`` and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.scenarios.harness import run_script

DATA = Path(__file__).parent / "testdata"
SEP = "----\n"


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    script, _, expected = path.read_text().partition(SEP)
    got = run_script(script)
    if os.environ.get("PAXOS_COMMIT_REWRITE"):
        path.write_text(script + SEP + got)
        return
    assert got == expected, f"{path.name} differs; PAXOS_COMMIT_REWRITE=1 regenerates it"


def test_the_six_scenarios_are_checked_in() -> None:
    names = {p.stem for p in DATA.glob("*.txt")}
    assert {
        "commit_f1",
        "rm_votes_abort",
        "owner_crash_recovery",
        "silent_acceptor",
        "txn_timeout",
        "dueling_leaders",
    } <= names
