"""Leader rules, pure (no I/O, clock or randomness): ballots, 1b collection, value choice
and the 2b tally. Shared by coordinator replicas and by resource managers that recover a
transaction on their own when no coordinator answers.

Spec actions (``spec/PaxosCommit.tla``): ``Phase1a`` and ``Phase2a`` (a leader's ballot
> 0) and the decision ``Decide`` over what is chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rm_sdk.protocol import (
    NO_BALLOT,
    NO_SET,
    REGISTRAR,
    Ballot,
    Instance,
    InstanceState,
    NoValue,
    ProtocolError,
    RMSet,
    Value,
    Vote,
    check_ballot,
    chosen,
    majority,
    validate_id,
)

__all__ = [
    "ADMIN_LEADER_PREFIX",
    "BallotRun",
    "BallotSource",
    "Tally",
    "free_value",
    "instances_to_recover",
    "next_ballot",
    "phase2a_value",
]


#: Leader ids of operators' ballots (``paxos-commit txn resolve``) start with this; it
#: only explains an abort's cause (identities, not names, will say who may lead).
ADMIN_LEADER_PREFIX = "admin."


def next_ballot(leader: str, above: Ballot) -> Ballot:
    """A ballot of ``leader`` above ``above``: one round higher, so it beats every leader at that round.
    Past ``MAX_ROUND`` there is none (acceptors never promise beyond it): ProtocolError."""
    return check_ballot(Ballot(max(above.round, 0) + 1, leader))


class BallotSource:
    """The ballots of one leader incarnation: each strictly higher than every ballot it
    handed out before, whatever the transaction or the caller (pitfall 2: a leader must
    never send two different 2a's at one ballot, so it must never start a ballot twice)."""

    def __init__(self, leader: str) -> None:
        if not leader:
            raise ProtocolError("a leader needs a non-empty id")
        validate_id("leader id", leader)
        self.leader = leader
        self.last = NO_BALLOT

    def next(self, above: Ballot) -> Ballot:
        """A fresh ballot above ``above`` and above every earlier one of this source."""
        self.last = next_ballot(self.leader, max(above, self.last))
        return self.last


def free_value(ins: Instance) -> Value:
    """What a leader proposes in a free instance (pitfall 4): abort, never prepared."""
    return NO_SET if ins == REGISTRAR else Vote.ABORTED


def phase2a_value(ins: Instance, promises: Iterable[InstanceState]) -> Value:
    """Spec ``Phase2a`` value choice: the value of the highest ``bal`` among a majority's
    1b's, or the free value if none of them accepted anything."""
    best: InstanceState | None = None
    for st in promises:
        if st.accepted and (best is None or st.bal > best.bal):
            best = st
    if best is None or isinstance(best.val, NoValue):
        return free_value(ins)
    return best.val


class BallotRun:
    """One leader ballot over some instances of one transaction.

    Collects 1b's, counting each acceptor once and only those whose ``mbal`` equals the
    ballot (pitfall 4). Its proposals are computed once, so the leader never sends two
    different 2a's at one (instance, ballot) (pitfall 2).
    """

    def __init__(self, ballot: Ballot, instances: Iterable[Instance], n_acceptors: int) -> None:
        check_ballot(ballot)
        if not ballot.is_leader_ballot:
            raise ProtocolError(f"leaders never use ballot {ballot}")
        self.ballot = ballot
        self.instances = frozenset(instances)
        self.n_acceptors = n_acceptors
        self._promises: dict[int, dict[Instance, InstanceState]] = {}
        self._proposals: dict[Instance, Value] | None = None
        self.highest_seen: Ballot = NO_BALLOT

    def on_phase1b(self, acceptor: int, states: Mapping[Instance, InstanceState]) -> None:
        """Record one acceptor's 1b. A state with a higher ``mbal`` is a NACK."""
        if not 0 <= acceptor < self.n_acceptors:
            raise ProtocolError(f"no acceptor {acceptor}")
        for ins, st in states.items():
            if ins not in self.instances:
                continue
            if st.mbal > self.highest_seen:
                self.highest_seen = st.mbal
            if st.mbal == self.ballot:
                self._promises.setdefault(acceptor, {})[ins] = st

    @property
    def preempted(self) -> bool:
        """A higher ballot was promised somewhere: this ballot may never finish."""
        return self.highest_seen > self.ballot

    def proposals(self) -> dict[Instance, Value] | None:
        """The 2a values once a majority promised every instance, else None."""
        if self._proposals is not None:
            return dict(self._proposals)
        need = majority(self.n_acceptors)
        out: dict[Instance, Value] = {}
        for ins in self.instances:
            got = [p[ins] for p in self._promises.values() if ins in p]
            if len(got) < need:
                return None
            out[ins] = phase2a_value(ins, got)
        self._proposals = out
        return dict(out)


def instances_to_recover(tally: Tally, known_set: RMSet | None) -> set[Instance]:
    """What a recovery ballot covers: the registrar, every member of the set (if known),
    and every instance any acceptor reported, less those already chosen."""
    s = known_set or tally.known_set()
    decided = chosen(tally.reports, tally.n_acceptors)
    return ({REGISTRAR} | (set(s.rms) if s else set()) | tally.instances()) - set(decided)


class Tally:
    """A leader's view of the 2b's of one transaction: per acceptor, per instance, the
    highest-ballot state reported. Feed it every report (2b bundles, 2b replies, 1b's);
    :func:`rm_sdk.protocol.chosen` over it says what is chosen."""

    def __init__(self, n_acceptors: int) -> None:
        self.n_acceptors = n_acceptors
        self.reports: dict[int, dict[Instance, InstanceState]] = {}

    def add(self, acceptor: int, states: Mapping[Instance, InstanceState]) -> None:
        if not 0 <= acceptor < self.n_acceptors:
            raise ProtocolError(f"no acceptor {acceptor}")
        mine = self.reports.setdefault(acceptor, {})
        for ins, st in states.items():
            old = mine.get(ins)
            # An acceptor's bal never decreases; reordered messages must not roll it back.
            if old is None or st.bal > old.bal or (st.bal == old.bal and st.mbal > old.mbal):
                mine[ins] = st

    def known_set(self) -> RMSet | None:
        """The registrar's ballot-0 set if any acceptor reported accepting a set."""
        for states in self.reports.values():
            st = states.get(REGISTRAR)
            if st is not None and isinstance(st.val, RMSet):
                return st.val
        return None

    def instances(self) -> set[Instance]:
        return {ins for states in self.reports.values() for ins in states}
