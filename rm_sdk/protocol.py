"""The shared vocabulary of Paxos Commit: ballots, values, instance state, decision rule.

Pure: no I/O, no clock, no randomness. Names follow Gray & Lamport, "Consensus on
Transaction Commit" (TODS 2006), and our TLA+ spec (``spec/``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "ID_PATTERN",
    "MAX_RMS",
    "MAX_ROUND",
    "MAX_ROUND_STEP",
    "NO_BALLOT",
    "bundle_complete",
    "check_ballot",
    "NO_SET",
    "NO_VALUE",
    "REGISTRAR",
    "RM_BALLOT",
    "Ballot",
    "ConflictError",
    "InstanceState",
    "Instance",
    "NoSet",
    "NoValue",
    "Outcome",
    "ProtocolError",
    "RMSet",
    "Value",
    "Vote",
    "chosen",
    "decide",
    "is_rm_value",
    "is_registrar_value",
    "majority",
    "validate_id",
]

#: Transaction and RM ids: short, printable, no "@" (reserved for the registrar).
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: The registrar's instance (paper section 6.2); no RM id can spell it.
REGISTRAR: Final = "@registrar"
#: Upper bound on participants of one transaction; larger sets are refused.
MAX_RMS: Final = 1024
#: The one limit on ballot rounds, on every path (wire decoding, acceptor rules, leaders):
#: a round above it is refused before anything is stored (it fits a signed 64-bit column).
MAX_ROUND: Final = 2**62
#: A leader ballot more than this many rounds above an instance's promise is refused
#: before anything is stored. Leaders go one round above the highest they have seen, so
#: they never come near it; without it one forged 1a at MAX_ROUND would leave no ballot
#: that can overtake the promise (the instance wedged for good). With it, reaching
#: MAX_ROUND takes 2^30 successive ballots, each answered.
MAX_ROUND_STEP: Final = 2**32

Instance: TypeAlias = str


class ProtocolError(ValueError):
    """A message that breaks the protocol's rules. Nothing changed. ``status`` names the
    gRPC status code that adapters answer with."""

    status = "INVALID_ARGUMENT"


class ConflictError(ProtocolError):
    """A message that contradicts durable state (e.g. a second, different value at one
    ballot). Nothing changes."""

    status = "FAILED_PRECONDITION"


def validate_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a well-formed transaction or RM id, else raise."""
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        shown = value if isinstance(value, str) and len(value) <= 40 else f"{str(value)[:40]}..."
        raise ProtocolError(
            f"malformed {kind} {shown!r}: expected 1-128 characters of [A-Za-z0-9._:-], "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, order=True, slots=True)
class Ballot:
    """A Paxos ballot, ordered by (round, leader).

    Round 0 with leader "" is the instance owner's own ballot (an RM's vote, the
    registrar's set). Leaders use rounds >= 1 with their incarnation id, so ballots are
    partitioned among leaders and no two incarnations share one.
    """

    round: int
    leader: str

    @property
    def is_leader_ballot(self) -> bool:
        return 1 <= self.round <= MAX_ROUND and self.leader != ""

    def __str__(self) -> str:
        if self == NO_BALLOT:
            return "-1"
        return f"{self.round}" if self.round == 0 else f"{self.round}/{self.leader}"


def check_ballot(b: Ballot) -> Ballot:
    """``b`` if it is a ballot a message may carry, else raise :class:`ProtocolError`:
    round 0 with no leader (the owner's), or a round in 1..MAX_ROUND with a well-formed
    leader id. The one check of ballots and leader ids, on every path (wire decoding,
    acceptor rules, leaders' ballot sources), so no path admits what another refuses."""
    if b.round == 0:
        if b.leader:
            raise ProtocolError("ballot round 0 belongs to the instance owner: leader must be empty")
        return b
    if not 1 <= b.round <= MAX_ROUND:
        raise ProtocolError(f"ballot round {b.round} out of range (1..{MAX_ROUND})")
    validate_id("leader id", b.leader)
    return b


#: The spec's -1: "nothing accepted yet". Lower than every real ballot.
NO_BALLOT: Final = Ballot(-1, "")
#: Ballot 0, owned by each instance's owner.
RM_BALLOT: Final = Ballot(0, "")


class Vote(enum.Enum):
    """The value of an RM's instance."""

    PREPARED = "prepared"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class RMSet:
    """The registrar's value: the RMs that joined before registration closed."""

    rms: frozenset[str]

    @staticmethod
    def of(rms: Iterable[str]) -> RMSet:
        return RMSet(frozenset(rms))


class NoSet(enum.Enum):
    """The registrar's "no set" value (the paper's bottom): the transaction aborts."""

    NO_SET = "noset"


class NoValue(enum.Enum):
    """The spec's "none": an acceptor that has accepted nothing."""

    NO_VALUE = "none"


NO_SET: Final = NoSet.NO_SET
NO_VALUE: Final = NoValue.NO_VALUE

Value: TypeAlias = Vote | RMSet | NoSet


class Outcome(enum.Enum):
    PENDING = "pending"
    COMMITTED = "committed"
    ABORTED = "aborted"


def is_rm_value(val: Value) -> bool:
    return isinstance(val, Vote)


def is_registrar_value(val: Value) -> bool:
    return isinstance(val, (RMSet, NoSet))


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One acceptor's durable state of one instance (spec: aState[ins][acc])."""

    mbal: Ballot = RM_BALLOT
    bal: Ballot = NO_BALLOT
    val: Value | NoValue = NO_VALUE

    @property
    def accepted(self) -> bool:
        return self.bal != NO_BALLOT


def majority(n_acceptors: int) -> int:
    """Smallest majority of 2F+1 acceptors: F+1."""
    return n_acceptors // 2 + 1


def chosen(
    reports: Mapping[int, Mapping[Instance, InstanceState]], n_acceptors: int
) -> dict[Instance, Value]:
    """Values chosen per instance: accepted by a majority with the same ballot.

    ``reports`` maps each acceptor id to the instance states it reported (its 2b's); an
    acceptor is counted once per instance however many messages it sent.
    """
    votes: dict[Instance, dict[tuple[Ballot, Value], int]] = {}
    for states in reports.values():
        for ins, st in states.items():
            if st.accepted and not isinstance(st.val, NoValue):
                key = (st.bal, st.val)
                per = votes.setdefault(ins, {})
                per[key] = per.get(key, 0) + 1
    need = majority(n_acceptors)
    out: dict[Instance, Value] = {}
    for ins, per in votes.items():
        for (_, val), count in per.items():
            if count >= need:
                out[ins] = val
    return out


def decide(chosen_values: Mapping[Instance, Value], known_set: RMSet | None = None) -> tuple[Outcome, str]:
    """The Paxos Commit decision rule with a registrar (paper sections 4 and 6.2).

    Commit iff the registrar chose a set S and every RM in S chose PREPARED. Abort iff
    the registrar chose NO_SET, or some RM in S chose ABORTED. ``known_set`` is the set
    the registrar proposed at ballot 0, if known: the registrar instance can only ever
    choose that set or NO_SET, so an RM of that set choosing ABORTED already decides.
    Returns the outcome and, for an abort, the reason.
    """
    reg = chosen_values.get(REGISTRAR)
    if reg is NO_SET:
        return Outcome.ABORTED, "registration ended without a participant set"
    members = reg.rms if isinstance(reg, RMSet) else known_set.rms if known_set else None
    if members is not None:
        refused = sorted(rm for rm in members if chosen_values.get(rm) is Vote.ABORTED)
        if refused:
            return Outcome.ABORTED, f"resource manager {refused[0]!r} voted to abort"
    if isinstance(reg, RMSet) and all(chosen_values.get(rm) is Vote.PREPARED for rm in reg.rms):
        return Outcome.COMMITTED, ""
    return Outcome.PENDING, ""


def bundle_complete(states: Mapping[Instance, InstanceState]) -> bool:
    """Whether this acceptor's 2b's, if a majority agrees, let a leader decide."""
    reg = states.get(REGISTRAR)
    if reg is None or isinstance(reg.val, NoValue):
        return False
    if reg.val is NO_SET:
        return True
    assert isinstance(reg.val, RMSet)
    rm_vals = [states[rm].val if rm in states else None for rm in reg.val.rms]
    if any(v is Vote.ABORTED for v in rm_vals):
        return True
    return all(isinstance(v, Vote) for v in rm_vals)
