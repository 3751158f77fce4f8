"""Unit tests for the acceptor's pure rules (``acceptor.rules``).

Each test cites what it checks: a section of Gray & Lamport, "Consensus on Transaction
Commit" (TODS 2006), or an action/operator of our TLA+ spec ``spec/PaxosCommit.tla`` (which
follows the code where it differs from the tlaplus Examples' ``PaxosCommit``). Tests named
``test_pitfallN_*`` would fail if DESIGN.md section 2, pitfall N, were broken in the core.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acceptor.rules import (
    bundle_complete,
    check_instance,
    check_phase1a,
    check_phase2a,
    phase1b,
    phase2b,
)
from rm_sdk.protocol import (
    MAX_RMS,
    NO_BALLOT,
    NO_SET,
    NO_VALUE,
    REGISTRAR,
    RM_BALLOT,
    Ballot,
    ConflictError,
    InstanceState,
    NoValue,
    ProtocolError,
    RMSet,
    Value,
    Vote,
)

B1A = Ballot(1, "a")
B1B = Ballot(1, "b")
B2A = Ballot(2, "a")
B3A = Ballot(3, "a")
FRESH = InstanceState()


def accepted(bal: Ballot, val: Value, mbal: Ballot | None = None) -> InstanceState:
    return InstanceState(mbal=bal if mbal is None else mbal, bal=bal, val=val)


# --- Phase1b -------------------------------------------------------------------------


def test_phase1b_promises_a_higher_ballot() -> None:
    """Spec Phase1b: ``BallotLT(aState[i][a].mbal, m.bal)`` => ``mbal' = m.bal``; bal and
    val are unchanged."""
    assert phase1b(FRESH, B1A) == InstanceState(mbal=B1A, bal=NO_BALLOT, val=NO_VALUE)


def test_phase1b_reply_reports_what_was_accepted() -> None:
    """Spec Phase1b sends ``bal |-> aState[i][a].bal, val |-> aState[i][a].val``: the leader
    learns any value this acceptor accepted, so it cannot propose a conflicting one."""
    st0 = accepted(RM_BALLOT, Vote.PREPARED)
    assert phase1b(st0, B1A) == InstanceState(mbal=B1A, bal=RM_BALLOT, val=Vote.PREPARED)
    st1 = accepted(B1A, RMSet.of(["rm1"]))
    assert phase1b(st1, B2A) == InstanceState(mbal=B2A, bal=B1A, val=RMSet.of(["rm1"]))


def test_pitfall5_acceptor_ignores_1a_below_mbal_and_nacks_with_mbal() -> None:
    """Pitfall 5 / spec Phase1b is enabled only if ``BallotLT(mbal, m.bal)``. The state
    does not change, and its reply carries the higher ``mbal`` (a NACK) so the leader can
    pick a ballot above it."""
    st = accepted(B2A, Vote.ABORTED)
    reply = phase1b(st, B1A)
    assert reply == st
    assert reply.mbal == B2A and reply.mbal > B1A


def test_pitfall5_acceptor_ignores_1a_equal_to_mbal() -> None:
    """Pitfall 5: ``bal <= mbal`` is ignored, including ``bal == mbal`` (a duplicated 1a):
    no state change, so re-promising cannot roll back what was accepted at that ballot."""
    promised = phase1b(FRESH, B1A)
    assert phase1b(promised, B1A) == promised
    acc = phase2b(promised, B1A, Vote.ABORTED)
    assert phase1b(acc, B1A) == acc


def test_pitfall5_1a_at_ballot_zero_never_changes_state() -> None:
    """A ballot-0 1a (which check_phase1a refuses anyway) must not be a promise: mbal starts
    at ``Ballot0`` (spec PCInit)."""
    assert phase1b(FRESH, RM_BALLOT) == FRESH
    assert phase1b(FRESH, NO_BALLOT) == FRESH


def test_phase1b_same_round_higher_leader_is_higher() -> None:
    assert phase1b(phase1b(FRESH, B1A), B1B).mbal == B1B
    assert phase1b(phase1b(FRESH, B1B), B1A).mbal == B1B


# --- Phase2b -------------------------------------------------------------------------


def test_phase2b_accepts_the_rms_ballot_0_vote_on_a_fresh_instance() -> None:
    """Spec RMPrepare sends ``[type |-> "phase2a", ins |-> r, bal |-> Ballot0, val |->
    "prepared"]``; Phase2b accepts it since ``BallotLE(Ballot0, Ballot0)``."""
    assert phase2b(FRESH, RM_BALLOT, Vote.PREPARED) == accepted(RM_BALLOT, Vote.PREPARED)
    assert phase2b(FRESH, RM_BALLOT, Vote.ABORTED) == accepted(RM_BALLOT, Vote.ABORTED)


def test_phase2b_accepts_2a_with_bal_equal_to_mbal() -> None:
    """Spec Phase2b: ``BallotLE(mbal, m.bal)`` (not LT): the 2a of the ballot just promised."""
    promised = phase1b(FRESH, B1A)
    assert phase2b(promised, B1A, Vote.ABORTED) == accepted(B1A, Vote.ABORTED)


def test_phase2b_accepts_2a_above_mbal_without_a_promise() -> None:
    """Spec Phase2b needs no prior 1b: a 2a above mbal is accepted and raises mbal."""
    st = phase2b(accepted(RM_BALLOT, Vote.PREPARED), B2A, Vote.PREPARED)
    assert st == accepted(B2A, Vote.PREPARED)


def test_pitfall5_acceptor_ignores_2a_below_mbal() -> None:
    """Pitfall 5 / spec Phase2b is disabled unless ``BallotLE(mbal, m.bal)``: state unchanged
    and the reply carries mbal (the NACK)."""
    promised = phase1b(FRESH, B2A)
    reply = phase2b(promised, B1A, Vote.ABORTED)
    assert reply == promised
    assert reply.mbal == B2A
    assert not reply.accepted


def test_pitfall3_rm_vote_after_a_leader_promise_is_ignored() -> None:
    """Pitfall 3 / paper section 4: once an acceptor promised a leader's ballot, the RM's
    ballot-0 vote (e.g. a late ``prepared``) is ignored: the leader may already have
    proposed aborted for the free instance."""
    promised = phase1b(FRESH, B1A)
    assert phase2b(promised, RM_BALLOT, Vote.PREPARED) == promised


def test_pitfall2_different_value_at_same_accepted_ballot_is_a_conflict() -> None:
    """Pitfall 2 (spec ``FreshBallot``): at most one 2a per (instance, ballot). Spec Phase2b
    takes no step when ``aState[m.ins][a].bal = m.bal``; the code refuses a second, different
    value with ConflictError rather than risk choosing two values."""
    st = phase2b(phase1b(FRESH, B1A), B1A, Vote.ABORTED)
    with pytest.raises(ConflictError):
        phase2b(st, B1A, Vote.PREPARED)
    assert st == accepted(B1A, Vote.ABORTED)


def test_pitfall3_rm_cannot_change_its_ballot_0_vote() -> None:
    """Pitfall 3: an RM's ``prepared`` is final; a later ballot-0 ``aborted`` (spec
    ``CanAbortUnilaterally(r) == rmState[r] = "working"``) is refused."""
    st = phase2b(FRESH, RM_BALLOT, Vote.PREPARED)
    with pytest.raises(ConflictError):
        phase2b(st, RM_BALLOT, Vote.ABORTED)


def test_pitfall2_registrar_cannot_send_two_sets_at_ballot_0() -> None:
    st = phase2b(FRESH, RM_BALLOT, RMSet.of(["rm1"]))
    with pytest.raises(ConflictError):
        phase2b(st, RM_BALLOT, RMSet.of(["rm1", "rm2"]))
    with pytest.raises(ConflictError):
        phase2b(st, RM_BALLOT, NO_SET)


def test_phase2b_duplicate_2a_is_idempotent() -> None:
    """Messages are duplicated (pitfall 6): the same 2a twice changes nothing."""
    st = phase2b(FRESH, RM_BALLOT, RMSet.of(["rm2", "rm1"]))
    assert phase2b(st, RM_BALLOT, RMSet.of(["rm1", "rm2"])) == st
    st1 = phase2b(phase1b(st, B1A), B1A, RMSet.of(["rm1", "rm2"]))
    assert phase2b(st1, B1A, RMSet.of(["rm1", "rm2"])) == st1


def test_phase2b_a_different_value_at_a_higher_ballot_is_accepted() -> None:
    """Paxos: a minority's ballot-0 value may be replaced at a higher ballot (the leader's
    majority of 1b's did not report it, so it was not chosen)."""
    st = phase2b(FRESH, RM_BALLOT, Vote.PREPARED)
    assert phase2b(st, B1A, Vote.ABORTED) == accepted(B1A, Vote.ABORTED)


def test_phase2b_stale_2a_below_accepted_ballot_is_ignored_not_a_conflict() -> None:
    st = phase2b(phase1b(FRESH, B2A), B2A, Vote.ABORTED)
    assert phase2b(st, B1A, Vote.PREPARED) == st
    assert phase2b(st, RM_BALLOT, Vote.PREPARED) == st


# --- check_phase1a -------------------------------------------------------------------


@pytest.mark.parametrize("bal", [RM_BALLOT, NO_BALLOT, Ballot(0, "a"), Ballot(1, ""), Ballot(-1, "a")])
def test_pitfall2_check_phase1a_rejects_non_leader_ballots(bal: Ballot) -> None:
    """Pitfall 2 / spec Message: ``[type : {"phase1a"}, bal : LeaderBallot]``; leaders never
    use ballot 0."""
    with pytest.raises(ProtocolError):
        check_phase1a(bal, ["rm1"])


def test_check_phase1a_accepts_a_leader_ballot() -> None:
    check_phase1a(B1A, ["rm1", "rm2", REGISTRAR])
    check_phase1a(B1A, [f"rm{i}" for i in range(MAX_RMS)] + [REGISTRAR])


@pytest.mark.parametrize(
    "instances",
    [
        [],
        ["rm1", "rm1"],
        ["rm 1"],
        ["@other"],
        [""],
        [f"rm{i}" for i in range(MAX_RMS + 2)],
    ],
)
def test_check_phase1a_rejects_malformed_instances(instances: list[str]) -> None:
    with pytest.raises(ProtocolError):
        check_phase1a(B1A, instances)


def test_check_instance() -> None:
    assert check_instance(REGISTRAR) == REGISTRAR
    assert check_instance("rm1") == "rm1"
    with pytest.raises(ProtocolError):
        check_instance("@registrar2")


# --- check_phase2a -------------------------------------------------------------------


def test_check_phase2a_accepts_ballot_0_and_leader_ballots() -> None:
    check_phase2a(RM_BALLOT, {"rm1": Vote.PREPARED}, 1)
    check_phase2a(RM_BALLOT, {REGISTRAR: RMSet.of(["rm1", "rm2"])}, 1)
    check_phase2a(B1A, {"rm1": Vote.ABORTED, REGISTRAR: NO_SET}, 2)
    check_phase2a(B1A, {REGISTRAR: RMSet.of([])}, 1)


def test_check_phase2a_accepts_the_owners_no_set_at_ballot_0() -> None:
    """Spec ApplicationAbort: the owner's ballot-0 2a may propose ``NoSet`` (the application
    or the transaction timeout aborts before close)."""
    check_phase2a(RM_BALLOT, {REGISTRAR: NO_SET}, 1)


@pytest.mark.parametrize("bal", [NO_BALLOT, Ballot(0, "a"), Ballot(1, ""), Ballot(-1, "a")])
def test_pitfall2_check_phase2a_rejects_ballots_that_are_neither_0_nor_a_leaders(bal: Ballot) -> None:
    with pytest.raises(ProtocolError):
        check_phase2a(bal, {"rm1": Vote.ABORTED}, 1)


@pytest.mark.parametrize(
    ("proposals", "n"),
    [
        ({}, 0),
        ({"rm1": Vote.PREPARED}, 2),  # the wire message named an instance twice
        ({"rm1": NO_SET}, 1),
        ({"rm1": RMSet.of(["rm1"])}, 1),
        ({"rm1": NO_VALUE}, 1),
        ({REGISTRAR: Vote.PREPARED}, 1),
        ({REGISTRAR: NO_VALUE}, 1),
        ({REGISTRAR: RMSet.of(["ok", "not ok"])}, 1),
        ({REGISTRAR: RMSet.of([REGISTRAR])}, 1),
        ({REGISTRAR: RMSet.of([f"rm{i}" for i in range(MAX_RMS + 1)])}, 1),
        ({"bad id": Vote.PREPARED}, 1),
        ({f"rm{i}": Vote.PREPARED for i in range(MAX_RMS + 2)}, MAX_RMS + 2),
    ],
)
def test_check_phase2a_rejects_malformed_proposals(proposals: dict[str, Value], n: int) -> None:
    """Spec ``Value(i)``: an RM instance takes {"prepared", "aborted"}; the registrar (paper
    section 6.2) takes ``{NoSet} \\cup SUBSET RM``."""
    with pytest.raises(ProtocolError):
        check_phase2a(RM_BALLOT, proposals, n)


def test_check_phase2a_size_limits_are_inclusive() -> None:
    check_phase2a(RM_BALLOT, {REGISTRAR: RMSet.of([f"rm{i}" for i in range(MAX_RMS)])}, 1)
    props: dict[str, Value] = {f"rm{i}": Vote.PREPARED for i in range(MAX_RMS)}
    props[REGISTRAR] = NO_SET
    check_phase2a(B1A, props, MAX_RMS + 1)


def test_errors_name_their_grpc_status() -> None:
    """A malformed message is INVALID_ARGUMENT; one that contradicts durable state (a second
    value at one ballot) is FAILED_PRECONDITION."""
    assert issubclass(ConflictError, ProtocolError)
    assert ProtocolError.status == "INVALID_ARGUMENT"
    assert ConflictError.status == "FAILED_PRECONDITION"


# --- bundle_complete -----------------------------------------------------------------

S = RMSet.of(["rm1", "rm2"])


def test_bundle_incomplete_without_a_registrar_value() -> None:
    assert not bundle_complete({})
    assert not bundle_complete({"rm1": accepted(RM_BALLOT, Vote.PREPARED)})
    assert not bundle_complete({REGISTRAR: InstanceState(mbal=B1A)})


def test_bundle_complete_on_no_set() -> None:
    assert bundle_complete({REGISTRAR: accepted(B1A, NO_SET)})


def test_bundle_complete_when_every_member_voted() -> None:
    states = {
        REGISTRAR: accepted(RM_BALLOT, S),
        "rm1": accepted(RM_BALLOT, Vote.PREPARED),
        "rm2": accepted(B1A, Vote.ABORTED),
    }
    assert bundle_complete(states)


def test_bundle_incomplete_while_a_member_has_not_voted() -> None:
    states = {REGISTRAR: accepted(RM_BALLOT, S), "rm1": accepted(RM_BALLOT, Vote.PREPARED)}
    assert not bundle_complete(states)
    states["rm2"] = InstanceState(mbal=B1A)
    assert not bundle_complete(states)
    # votes of RMs outside S do not count
    states["other"] = accepted(RM_BALLOT, Vote.PREPARED)
    assert not bundle_complete(states)


def test_bundle_complete_as_soon_as_a_member_aborted() -> None:
    states = {REGISTRAR: accepted(RM_BALLOT, S), "rm2": accepted(RM_BALLOT, Vote.ABORTED)}
    assert bundle_complete(states)


def test_bundle_an_abort_outside_S_does_not_complete() -> None:
    states = {REGISTRAR: accepted(RM_BALLOT, S), "late": accepted(RM_BALLOT, Vote.ABORTED)}
    assert not bundle_complete(states)


# --- Properties ----------------------------------------------------------------------

ballots = st.one_of(
    st.just(NO_BALLOT),
    st.just(RM_BALLOT),
    st.builds(Ballot, st.integers(min_value=1, max_value=4), st.sampled_from(["a", "b", "c"])),
)
values = st.sampled_from([Vote.PREPARED, Vote.ABORTED, NO_SET, RMSet.of(["rm1"])])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("1b"), ballots, st.none()),
        st.tuples(st.just("2b"), ballots, values),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, database=None)
@given(steps)
def test_property_mbal_never_decreases_and_bounds_bal(seq: list[tuple[str, Ballot, Value | None]]) -> None:
    """Invariants of spec Phase1b/Phase2b on one acceptor's ``aState[i][a]``: ``mbal``
    never decreases, ``bal <= mbal`` always, ``bal`` never decreases, and the value accepted
    at one ballot never changes (what a 1b reported stays true)."""
    state = InstanceState()
    at_ballot: dict[Ballot, Value] = {}
    for kind, bal, val in seq:
        before = state
        if kind == "1b":
            state = phase1b(state, bal)
        else:
            assert val is not None
            try:
                state = phase2b(state, bal, val)
            except ConflictError:
                assert before.bal == bal and before.val != val
                state = before
        assert state.mbal >= before.mbal
        assert state.bal >= before.bal
        assert state.mbal >= state.bal
        assert state.accepted == (not isinstance(state.val, NoValue))
        if not isinstance(state.val, NoValue):
            assert at_ballot.setdefault(state.bal, state.val) == state.val
