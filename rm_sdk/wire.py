"""Translation between protobuf messages and the protocol vocabulary.

Services and the SDK use it so that no protobuf type reaches a protocol core. Decoding
validates: malformed input raises :class:`rm_sdk.protocol.ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2 as pb
from rm_sdk.core.messages import (
    AbortCause,
    Bundle,
    Decision,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    RecordOutcome,
)
from rm_sdk.protocol import (
    MAX_RMS,
    NO_BALLOT,
    NO_SET,
    NO_VALUE,
    Ballot,
    Instance,
    InstanceState,
    NoValue,
    Outcome,
    ProtocolError,
    RMSet,
    Value,
    Vote,
    check_ballot,
    validate_id,
)

__all__ = [
    "bundle_from_pb",
    "cause_from_pb",
    "cause_to_pb",
    "decision_from_pb",
    "phase1a_to_pb",
    "phase1b_from_pb",
    "phase2a_to_pb",
    "phase2b_from_pb",
    "record_outcome_from_pb",
    "record_outcome_to_pb",
    "ballot_from_pb",
    "ballot_to_pb",
    "outcome_from_pb",
    "outcome_to_pb",
    "pb",
    "states_from_pb",
    "states_to_pb",
    "value_from_pb",
    "value_to_pb",
]

_VOTE_TO_PB = {Vote.PREPARED: pb.VOTE_PREPARED, Vote.ABORTED: pb.VOTE_ABORTED}
_VOTE_FROM_PB = {v: k for k, v in _VOTE_TO_PB.items()}
_OUTCOME_TO_PB = {
    Outcome.PENDING: pb.OUTCOME_PENDING,
    Outcome.COMMITTED: pb.OUTCOME_COMMITTED,
    Outcome.ABORTED: pb.OUTCOME_ABORTED,
}
_OUTCOME_FROM_PB = {v: k for k, v in _OUTCOME_TO_PB.items()}


def ballot_to_pb(b: Ballot) -> pb.Ballot:
    return pb.Ballot(round=b.round, leader=b.leader)


def ballot_from_pb(m: pb.Ballot) -> Ballot:
    return check_ballot(Ballot(m.round, m.leader))


def value_to_pb(v: Value) -> pb.Value:
    if isinstance(v, Vote):
        return pb.Value(vote=_VOTE_TO_PB[v])
    if isinstance(v, RMSet):
        return pb.Value(rm_set=pb.RMSet(rm_ids=sorted(v.rms)))
    return pb.Value(no_set=pb.NoSet())


def value_from_pb(m: pb.Value) -> Value:
    kind = m.WhichOneof("kind")
    if kind == "vote":
        if m.vote not in _VOTE_FROM_PB:
            raise ProtocolError("vote must be VOTE_PREPARED or VOTE_ABORTED")
        return _VOTE_FROM_PB[m.vote]
    if kind == "rm_set":
        ids = list(m.rm_set.rm_ids)
        if len(ids) > MAX_RMS:
            raise ProtocolError(f"participant set of {len(ids)}; at most {MAX_RMS}")
        if len(set(ids)) != len(ids):
            raise ProtocolError("participant set names an RM twice")
        return RMSet.of(validate_id("rm id", i) for i in ids)
    if kind == "no_set":
        return NO_SET
    raise ProtocolError("value is empty: set vote, rm_set or no_set")


def _state_to_pb(ins: Instance, st: InstanceState) -> pb.InstanceState:
    # Sub-messages passed to the constructor: no CopyFrom (this runs for every state of
    # every reply, and showed in the acceptor's profile).
    mbal = pb.Ballot(round=st.mbal.round, leader=st.mbal.leader)
    bal = None if st.bal == NO_BALLOT else pb.Ballot(round=st.bal.round, leader=st.bal.leader)
    val = None if isinstance(st.val, NoValue) else value_to_pb(st.val)
    return pb.InstanceState(instance=ins, mbal=mbal, bal=bal, val=val)


#: Built messages of recent (instance, state) pairs: the failure-free path repeats a few
#: (each RM's ballot-0 vote, the registrar's set), and a message placed in a reply is
#: copied there, so one built message serves every reply. Bounded: cleared when full.
_STATE_PB: dict[tuple[Instance, InstanceState], pb.InstanceState] = {}
_STATE_PB_MAX = 4096


def _cached_state_pb(ins: Instance, st: InstanceState) -> pb.InstanceState:
    key = (ins, st)
    m = _STATE_PB.get(key)
    if m is None:
        if len(_STATE_PB) >= _STATE_PB_MAX:
            _STATE_PB.clear()
        m = _STATE_PB[key] = _state_to_pb(ins, st)
    return m


def states_to_pb(states: Mapping[Instance, InstanceState]) -> list[pb.InstanceState]:
    """The states as InstanceState messages, for a reply's constructor (which copies them:
    never change the returned messages)."""
    return [_cached_state_pb(ins, st) for ins, st in sorted(states.items())]


def _state_from_pb(m: pb.InstanceState) -> tuple[Instance, InstanceState]:
    bal = ballot_from_pb(m.bal) if m.HasField("bal") else NO_BALLOT
    val: Value | NoValue = value_from_pb(m.val) if m.HasField("val") else NO_VALUE
    return m.instance, InstanceState(mbal=ballot_from_pb(m.mbal), bal=bal, val=val)


#: Decoded states by their encoding: the failure-free path repeats a few (each RM's
#: ballot-0 vote, the registrar's set), and decoding one was 13 us for a bundle of three,
#: against 2 us to encode and look it up. Only what decoded (and so validated) is kept;
#: bounded in count (cleared when full) and in size (longer encodings, e.g. a large
#: participant set, are decoded every time).
_STATE_OF: dict[bytes, tuple[Instance, InstanceState]] = {}
_STATE_OF_MAX = 4096
_STATE_OF_KEY_MAX = 512


def states_from_pb(ms: Iterable[pb.InstanceState]) -> dict[Instance, InstanceState]:
    out: dict[Instance, InstanceState] = {}
    for m in ms:
        key = m.SerializeToString()
        got = _STATE_OF.get(key)
        if got is None:
            got = _state_from_pb(m)
            if len(key) <= _STATE_OF_KEY_MAX:
                if len(_STATE_OF) >= _STATE_OF_MAX:
                    _STATE_OF.clear()
                _STATE_OF[key] = got
        out[got[0]] = got[1]
    return out


def outcome_to_pb(o: Outcome) -> pb.Outcome.ValueType:
    return _OUTCOME_TO_PB[o]


def outcome_from_pb(o: pb.Outcome.ValueType) -> Outcome:
    if o not in _OUTCOME_FROM_PB:
        raise ProtocolError("outcome is unspecified")
    return _OUTCOME_FROM_PB[o]


# ---------------------------------------------------------------- core messages

_CAUSE_TO_PB = {
    AbortCause.UNKNOWN: pb.ABORT_CAUSE_UNKNOWN,
    AbortCause.RM_REFUSED: pb.ABORT_CAUSE_RM_REFUSED,
    AbortCause.VOTE_TIMEOUT: pb.ABORT_CAUSE_VOTE_TIMEOUT,
    AbortCause.TXN_TIMEOUT: pb.ABORT_CAUSE_TXN_TIMEOUT,
    AbortCause.COORDINATOR_FAILED: pb.ABORT_CAUSE_COORDINATOR_FAILED,
    AbortCause.APPLICATION: pb.ABORT_CAUSE_APPLICATION,
    AbortCause.OPERATOR: pb.ABORT_CAUSE_OPERATOR,
}
_CAUSE_FROM_PB = {v: k for k, v in _CAUSE_TO_PB.items()}


def cause_to_pb(c: AbortCause | None) -> pb.AbortCause.ValueType:
    return pb.ABORT_CAUSE_UNSPECIFIED if c is None else _CAUSE_TO_PB[c]


def cause_from_pb(c: pb.AbortCause.ValueType) -> AbortCause | None:
    """None for UNSPECIFIED; an unknown number (a newer server) reads as UNKNOWN."""
    if c == pb.ABORT_CAUSE_UNSPECIFIED:
        return None
    return _CAUSE_FROM_PB.get(c, AbortCause.UNKNOWN)


def decision_from_pb(
    outcome: pb.Outcome.ValueType, reason: str, cause: pb.AbortCause.ValueType, rm_id: str
) -> Decision:
    o = outcome_from_pb(outcome)
    c = cause_from_pb(cause)
    if o is Outcome.ABORTED and c is None:
        c = AbortCause.UNKNOWN
    return Decision(o, c if o is Outcome.ABORTED else None, rm_id, reason)


def phase1a_to_pb(m: Phase1a) -> pb.Phase1aRequest:
    return pb.Phase1aRequest(txn_id=m.txn_id, ballot=ballot_to_pb(m.ballot), instances=list(m.instances))


def phase2a_to_pb(m: Phase2a) -> pb.Phase2aRequest:
    return pb.Phase2aRequest(
        txn_id=m.txn_id,
        ballot=ballot_to_pb(m.ballot),
        proposals=[pb.Proposal(instance=i, value=value_to_pb(v)) for i, v in sorted(m.proposals.items())],
    )


def phase1b_from_pb(acceptor: int, r: pb.Phase1bReply) -> Phase1b:
    return Phase1b(r.txn_id, acceptor, states_from_pb(r.states), _recorded(r.outcome))


def phase2b_from_pb(acceptor: int, r: pb.Phase2bReply) -> Phase2b:
    return Phase2b(r.txn_id, acceptor, states_from_pb(r.states), _recorded(r.outcome))


def bundle_from_pb(acceptor: int, r: pb.Phase2bBundle) -> Bundle:
    acked = frozenset(validate_id("rm id", a) for a in r.acknowledged)
    participants = (
        frozenset(validate_id("rm id", p) for p in r.participants) if r.participants_known else None
    )
    states = states_from_pb(r.states)
    return Bundle(
        r.txn_id, acceptor, states, _recorded(r.outcome), r.age_ms, r.collected, acked, participants
    )


def _recorded(o: pb.Outcome.ValueType) -> Outcome:
    return Outcome.PENDING if o == pb.OUTCOME_UNSPECIFIED else outcome_from_pb(o)


def record_outcome_to_pb(m: RecordOutcome) -> pb.RecordOutcomeRequest:
    return pb.RecordOutcomeRequest(
        txn_id=m.txn_id,
        outcome=outcome_to_pb(m.outcome),
        participants=sorted(m.participants or ()),
        participants_known=m.participants is not None,
        acked=sorted(m.acked),
        all_acknowledged=m.all_acked,
    )


def record_outcome_from_pb(r: pb.RecordOutcomeRequest) -> RecordOutcome:
    """The core message; the outcome is checked by the acceptor's handler."""
    for rm in [*r.participants, *r.acked]:
        validate_id("rm id", rm)
    return RecordOutcome(
        r.txn_id,
        outcome_from_pb(r.outcome),
        frozenset(r.participants) if r.participants_known else None,
        frozenset(r.acked),
        r.all_acknowledged,
    )
