"""The registrar's protocol rules, pure (no I/O, clock or randomness), and the leader's,
which live in :mod:`rm_sdk.ballots` (resource managers run ballots too) and are
re-exported here.

Spec actions (``spec/PaxosCommit.tla``): ``Join``/``Close`` (registrar, paper section 6.2);
``Phase1a``, ``Phase2a`` and ``Decide`` in :mod:`rm_sdk.ballots`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rm_sdk.ballots import (
    BallotRun,
    BallotSource,
    Tally,
    free_value,
    instances_to_recover,
    next_ballot,
    phase2a_value,
)
from rm_sdk.protocol import ProtocolError, RMSet, validate_id

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


class RegistrationClosed(ProtocolError):
    """A join after the registrar closed registration (paper section 6.2)."""

    status = "FAILED_PRECONDITION"


@dataclass
class Registration:
    """The registrar's soft state of one transaction: who joined, and whether it closed."""

    joined: set[str] = field(default_factory=set)
    closed: RMSet | None = None

    def join(self, rm: str) -> None:
        """Spec ``Join``. Idempotent: a duplicated join changes nothing."""
        validate_id("rm id", rm)
        if self.closed is not None:
            if rm in self.closed.rms:
                return
            raise RegistrationClosed(f"registration closed; {rm!r} cannot join any more")
        self.joined.add(rm)

    def close(self) -> RMSet:
        """Spec ``Close``: fix the participant set, the registrar's ballot-0 value."""
        if self.closed is None:
            self.closed = RMSet.of(self.joined)
        return self.closed
