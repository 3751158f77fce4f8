"""The acceptor's protocol rules, pure: (state, message) -> (new state, reply).

Spec actions (``spec/PaxosCommit.tla``): ``Phase1b`` answers a leader's 1a and ``Phase2b``
answers any 2a. The caller persists every new state before replying (DESIGN.md pitfall 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rm_sdk.protocol import (
    MAX_RMS,
    MAX_ROUND_STEP,
    NO_SET,
    REGISTRAR,
    RM_BALLOT,
    Ballot,
    ConflictError,
    Instance,
    InstanceState,
    NoValue,
    ProtocolError,
    RMSet,
    Value,
    Vote,
    bundle_complete,
    check_ballot,
    validate_id,
)

__all__ = [
    "bundle_complete",
    "check_instance",
    "check_phase1a",
    "check_phase2a",
    "phase1b",
    "phase2b",
]


def check_instance(ins: Instance) -> Instance:
    return ins if ins == REGISTRAR else validate_id("instance", ins)


def check_phase1a(bal: Ballot, instances: Sequence[Instance]) -> None:
    """Reject a malformed 1a before any state is touched."""
    check_ballot(bal)
    if not bal.is_leader_ballot:
        raise ProtocolError(f"phase1a ballot {bal} is not a leader ballot (round >= 1, leader id)")
    if not instances:
        raise ProtocolError("phase1a names no instance")
    if len(instances) > MAX_RMS + 1:
        raise ProtocolError(f"phase1a names {len(instances)} instances; at most {MAX_RMS + 1}")
    if len(set(instances)) != len(instances):
        raise ProtocolError("phase1a names an instance twice")
    for ins in instances:
        check_instance(ins)


def check_phase2a(bal: Ballot, proposals: Mapping[Instance, Value], n_proposals: int) -> None:
    """Reject a malformed 2a: wrong value kind for the instance, bad ballot, bad ids."""
    check_ballot(bal)
    if bal != RM_BALLOT and not bal.is_leader_ballot:
        raise ProtocolError(f"phase2a ballot {bal} is neither ballot 0 nor a leader ballot")
    if not proposals:
        raise ProtocolError("phase2a proposes nothing")
    if n_proposals != len(proposals):
        raise ProtocolError("phase2a proposes for an instance twice")
    if len(proposals) > MAX_RMS + 1:
        raise ProtocolError(f"phase2a has {len(proposals)} proposals; at most {MAX_RMS + 1}")
    for ins, val in proposals.items():
        check_instance(ins)
        if ins == REGISTRAR:
            if not isinstance(val, RMSet) and val is not NO_SET:
                raise ProtocolError("the registrar instance takes a participant set or no-set")
            if isinstance(val, RMSet):
                if len(val.rms) > MAX_RMS:
                    raise ProtocolError(f"participant set of {len(val.rms)}; at most {MAX_RMS}")
                for rm in val.rms:
                    validate_id("rm id", rm)
        elif not isinstance(val, Vote):
            raise ProtocolError(f"instance {ins!r} is an RM's: it takes a vote")


def phase1b(state: InstanceState, bal: Ballot) -> InstanceState:
    """Spec ``Phase1b``: promise ``bal`` if it is above ``mbal``; else ignore.

    The reply is the resulting state either way: ``mbal == bal`` is a promise, a higher
    ``mbal`` is a NACK that tells the leader which ballot to beat (pitfall 5).
    """
    if bal > state.mbal:
        _check_step(state, bal)
        return InstanceState(mbal=bal, bal=state.bal, val=state.val)
    return state


def _check_step(state: InstanceState, bal: Ballot) -> None:
    """Refuse a leader ballot implausibly far above the promise (``MAX_ROUND_STEP``), so
    that no single message can promise a round nothing can overtake."""
    if bal.round > max(state.mbal.round, 0) + MAX_ROUND_STEP:
        raise ConflictError(
            f"ballot round {bal.round} is more than {MAX_ROUND_STEP} above the promise {state.mbal}"
        )


def phase2b(state: InstanceState, bal: Ballot, val: Value) -> InstanceState:
    """Spec ``Phase2b``: accept ``val`` at ``bal`` unless a higher ballot was promised.

    A 2a below ``mbal`` is ignored (the reply's ``mbal`` is the NACK). A different value at
    the ballot already accepted is refused with :class:`ConflictError`: only a faulty owner
    or leader sends one (pitfalls 2 and 3), and accepting it could choose two values.
    """
    if bal < state.mbal:
        return state
    if bal > state.mbal:
        _check_step(state, bal)
    if bal == state.bal and state.val != val and not isinstance(state.val, NoValue):
        raise ConflictError(f"ballot {bal} already accepted {_show(state.val)}; refusing {_show(val)}")
    return InstanceState(mbal=bal, bal=bal, val=val)


def _show(val: Value | NoValue) -> str:
    if isinstance(val, RMSet):
        return "set{" + ",".join(sorted(val.rms)) + "}"
    return str(val.value)
