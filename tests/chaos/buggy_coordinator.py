"""Test-only launcher: ``paxos-commit`` with a seeded bug in the coordinator, never a
switch in the shipped code.

The bug breaks pitfall 4 (DESIGN.md): in a free instance a leader must propose
``aborted``; this one proposes ``prepared``. It bites when an RM joined but never voted
(killed, paused or cut off before it prepared): the owner's recovery ballot after the vote
timeout then "chooses" a vote the RM never cast, the transaction commits, and the RM, which
never prepared, aborts its work when it comes back. The chaos checker must see that."""

from __future__ import annotations

import sys

import rm_sdk.ballots as ballots
from rm_sdk.protocol import Vote

_free_value = ballots.free_value


def _buggy_free_value(ins: object) -> object:
    v = _free_value(ins)  # type: ignore[arg-type]
    return Vote.PREPARED if v is Vote.ABORTED else v


ballots.free_value = _buggy_free_value  # type: ignore[assignment]

if __name__ == "__main__":
    from paxos_commit.cli import main

    raise SystemExit(main(sys.argv[1:]))
