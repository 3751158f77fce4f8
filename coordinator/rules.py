"""The registrar's protocol rules, pure (no I/O, clock or randomness), and the leader's,
which live in :mod:`rm_sdk.ballots` (resource managers run ballots too) and are
re-exported here.

Spec actions (``spec/PaxosCommit.tla``): ``Join``/``Close`` (registrar, paper section 6.2);
``Phase1a``, ``Phase2a`` and ``Decide`` in :mod:`rm_sdk.ballots`.
"""

from __future__ import annotations

from rm_sdk.ballots import (
    BallotRun,
    BallotSource,
    Tally,
    free_value,
    instances_to_recover,
    next_ballot,
    phase2a_value,
)
from rm_sdk.core.owner import Registration, RegistrationClosed

__all__ = [
    "BallotRun",
    "BallotSource",
    "Registration",
    "RegistrationClosed",
    "Tally",
    "free_value",
    "instances_to_recover",
    "next_ballot",
    "phase2a_value",
]
