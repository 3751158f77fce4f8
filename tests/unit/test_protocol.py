"""Unit tests for the shared vocabulary (``rm_sdk.protocol``).

Each test cites what it checks: a section of Gray & Lamport, "Consensus on Transaction
Commit" (TODS 2006), or an action/operator of our TLA+ spec ``spec/PaxosCommit.tla`` (which
follows the code where it differs from the tlaplus Examples' ``PaxosCommit``). Tests named
``test_pitfallN_*`` would fail if DESIGN.md section 2, pitfall N, were broken in the core.
"""

from __future__ import annotations

import pytest

from rm_sdk.protocol import (
    NO_BALLOT,
    NO_SET,
    NO_VALUE,
    REGISTRAR,
    RM_BALLOT,
    Ballot,
    InstanceState,
    Outcome,
    ProtocolError,
    RMSet,
    Value,
    Vote,
    chosen,
    decide,
    is_registrar_value,
    is_rm_value,
    majority,
    validate_id,
)

B1A = Ballot(1, "a")
B1B = Ballot(1, "b")
B2A = Ballot(2, "a")


def accepted(bal: Ballot, val: Value) -> InstanceState:
    """An acceptor's state right after Phase2b at ``bal`` (spec: mbal = bal = m.bal)."""
    return InstanceState(mbal=bal, bal=bal, val=val)


# --- Ballots -------------------------------------------------------------------------


def test_ballot_sentinels_are_below_every_leader_ballot() -> None:
    """Spec: ``NoBallot == <<-1, 0>>`` until something is accepted; ``Ballot0 == <<0, 0>>``
    is the owner's (RMPrepare, Close); leaders use ``LeaderBallots(l) == {<<r, l>> : r \\in
    1..MaxRound}``, all above ``Ballot0`` under ``BallotLT``."""
    assert NO_BALLOT < RM_BALLOT < B1A
    assert Ballot(0, "zzz") < B1A  # the round dominates the leader id


def test_ballot_order_is_round_then_leader() -> None:
    """Spec ``BallotLT``: lexicographic on <<round, leader>>, so ballots are partitioned
    among leaders and totally ordered."""
    assert B1A < B1B < B2A
    assert Ballot(1, "zzz") < Ballot(2, "a")
    assert B1A != B1B
    assert sorted([B2A, NO_BALLOT, B1B, RM_BALLOT, B1A]) == [NO_BALLOT, RM_BALLOT, B1A, B1B, B2A]


def test_ballot_is_hashable_and_frozen() -> None:
    assert len({Ballot(1, "a"), Ballot(1, "a"), B1B}) == 2
    with pytest.raises(AttributeError):
        B1A.round = 5  # type: ignore[misc]


def test_only_rounds_from_one_with_a_leader_id_are_leader_ballots() -> None:
    """Pitfall 2: leaders never use ballot 0 (spec Phase1a/Phase2a: ``b \\in
    LeaderBallots(l)``, round >= 1 and a leader id)."""
    assert B1A.is_leader_ballot
    assert not RM_BALLOT.is_leader_ballot
    assert not NO_BALLOT.is_leader_ballot
    assert not Ballot(0, "a").is_leader_ballot
    assert not Ballot(1, "").is_leader_ballot


def test_ballot_str() -> None:
    assert str(NO_BALLOT) == "-1"
    assert str(RM_BALLOT) == "0"
    assert str(Ballot(3, "L")) == "3/L"


# --- Instance state, values ----------------------------------------------------------


def test_initial_instance_state_is_spec_PCInit() -> None:
    """Spec PCInit: ``aState[i][a] = [mbal |-> Ballot0, bal |-> NoBallot, val |-> None]``."""
    st = InstanceState()
    assert st.mbal == RM_BALLOT
    assert st.bal == NO_BALLOT
    assert st.val is NO_VALUE
    assert not st.accepted


def test_accepted_iff_bal_is_not_minus_one() -> None:
    assert accepted(RM_BALLOT, Vote.PREPARED).accepted
    assert not InstanceState(mbal=B1A).accepted


def test_value_kinds() -> None:
    assert is_rm_value(Vote.PREPARED) and is_rm_value(Vote.ABORTED)
    assert not is_rm_value(NO_SET) and not is_rm_value(RMSet.of(["x"]))
    assert is_registrar_value(NO_SET) and is_registrar_value(RMSet.of([]))
    assert not is_registrar_value(Vote.PREPARED)


def test_rmset_equality_ignores_order_and_duplicates() -> None:
    assert RMSet.of(["a", "b", "a"]) == RMSet.of(["b", "a"])
    assert hash(RMSet.of(["a", "b"])) == hash(RMSet.of(["b", "a"]))


@pytest.mark.parametrize(("n", "need"), [(1, 1), (3, 2), (5, 3), (7, 4)])
def test_majority_of_2F_plus_1_is_F_plus_1(n: int, need: int) -> None:
    """Paper section 4: 2F+1 acceptors, any F+1 form a majority."""
    assert majority(n) == need


# --- validate_id ---------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "0", "rm-1", "tx.2024:07_x", "A" * 128, "a" + "-" * 127])
def test_validate_id_accepts_well_formed_ids(good: str) -> None:
    assert validate_id("rm id", good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a" * 129,
        "@",
        REGISTRAR,  # reserved: no RM id can spell the registrar instance
        "rm@host",
        "rm 1",
        " rm",
        "rm\n",  # fullmatch, not match: a trailing newline is not allowed
        "rm\t1",
        "-rm",
        ".rm",
        "_rm",
        "rm/1",
        "ré",
        "١٢",  # non-ASCII digits
    ],
)
def test_validate_id_rejects_malformed_ids(bad: str) -> None:
    with pytest.raises(ProtocolError):
        validate_id("rm id", bad)


@pytest.mark.parametrize("bad", [None, 5, b"rm1", ["rm1"], 1.5])
def test_validate_id_rejects_non_strings(bad: object) -> None:
    with pytest.raises(ProtocolError):
        validate_id("rm id", bad)  # type: ignore[arg-type]


def test_validate_id_error_message_is_bounded() -> None:
    with pytest.raises(ProtocolError) as err:
        validate_id("txn id", "x" * 5000 + "@")
    assert len(str(err.value)) < 300
    assert "txn id" in str(err.value)


# --- chosen --------------------------------------------------------------------------


def test_chosen_needs_a_majority_with_the_same_ballot_and_value() -> None:
    """Spec ``ChosenAt(i, b, v) == IsMajority({m.acc : m \\in {n \\in Votes(i) : n.bal = b /\\
    n.val = v}})``."""
    reports = {0: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)}, 1: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)}}
    assert chosen(reports, 3) == {"rm1": Vote.PREPARED}


def test_chosen_same_value_at_different_ballots_is_not_a_majority() -> None:
    """Spec ``ChosenAt(i, b, v)`` fixes one ballot ``b`` for the whole majority: two
    acceptors that accepted the same value at different ballots have not (yet) chosen it."""
    reports = {0: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)}, 1: {"rm1": accepted(B1A, Vote.PREPARED)}}
    assert chosen(reports, 3) == {}


def test_chosen_minority_is_not_chosen() -> None:
    reports = {0: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)}}
    assert chosen(reports, 3) == {}
    reports5 = {i: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)} for i in range(2)}
    assert chosen(reports5, 5) == {}


def test_chosen_with_one_acceptor_is_two_phase_commit() -> None:
    """Paper section 5: Paxos Commit with F=0 is 2PC; one acceptor is a majority."""
    assert chosen({0: {"rm1": accepted(RM_BALLOT, Vote.ABORTED)}}, 1) == {"rm1": Vote.ABORTED}


def test_chosen_ignores_promises_without_an_accepted_value() -> None:
    reports = {i: {"rm1": InstanceState(mbal=B1A)} for i in range(3)}
    assert chosen(reports, 3) == {}


def test_chosen_is_per_instance() -> None:
    reports = {
        0: {"rm1": accepted(RM_BALLOT, Vote.PREPARED), REGISTRAR: accepted(RM_BALLOT, RMSet.of(["rm1"]))},
        1: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)},
        2: {REGISTRAR: accepted(B1A, NO_SET)},
    }
    assert chosen(reports, 3) == {"rm1": Vote.PREPARED}


def test_chosen_later_ballot_majority_beside_a_minority_at_ballot_0() -> None:
    """A value accepted by a minority at ballot 0 can be overridden by a leader's ballot;
    only the majority's (ballot, value) counts."""
    reports = {
        0: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)},
        1: {"rm1": accepted(RM_BALLOT, Vote.PREPARED)},
        2: {"rm1": accepted(B2A, Vote.ABORTED)},
        3: {"rm1": accepted(B2A, Vote.ABORTED)},
        4: {"rm1": accepted(B2A, Vote.ABORTED)},
    }
    assert chosen(reports, 5) == {"rm1": Vote.ABORTED}


# --- decide --------------------------------------------------------------------------

S = RMSet.of(["rm1", "rm2"])


def test_decide_commits_iff_registrar_chose_S_and_all_of_S_prepared() -> None:
    """Paper section 6.2 / spec ``CommitRule``: the registrar chose a set ``s # NoSet`` and
    ``\\A r \\in s : "prepared" \\in ChosenValues(r)``."""
    vals: dict[str, Value] = {REGISTRAR: S, "rm1": Vote.PREPARED, "rm2": Vote.PREPARED}
    assert decide(vals) == (Outcome.COMMITTED, "")


def test_decide_pending_while_a_member_of_S_has_not_chosen() -> None:
    assert decide({REGISTRAR: S, "rm1": Vote.PREPARED})[0] is Outcome.PENDING


def test_decide_pending_without_the_registrar_even_if_all_known_rms_prepared() -> None:
    """Without the registrar's choice nobody knows S: it may still become NO_SET, or a set
    containing an RM we have not heard of. Never commit on a guess."""
    vals: dict[str, Value] = {"rm1": Vote.PREPARED, "rm2": Vote.PREPARED}
    assert decide(vals)[0] is Outcome.PENDING
    assert decide(vals, known_set=S)[0] is Outcome.PENDING


def test_decide_aborts_on_no_set() -> None:
    """Spec ``AbortRule``: ``NoSet \\in ChosenValues(Registrar)`` (paper section 6.2: a free
    registrar instance gets "no set"; spec ApplicationAbort proposes it at ballot 0)."""
    outcome, reason = decide({REGISTRAR: NO_SET, "rm1": Vote.PREPARED, "rm2": Vote.PREPARED})
    assert outcome is Outcome.ABORTED
    assert reason


def test_decide_aborts_when_a_member_of_S_chose_aborted() -> None:
    """Spec ``AbortRule``: some member of the set chose "aborted"."""
    outcome, reason = decide({REGISTRAR: S, "rm1": Vote.PREPARED, "rm2": Vote.ABORTED})
    assert outcome is Outcome.ABORTED
    assert "rm2" in reason


def test_decide_abort_reason_is_deterministic() -> None:
    vals: dict[str, Value] = {REGISTRAR: S, "rm2": Vote.ABORTED, "rm1": Vote.ABORTED}
    assert decide(vals) == decide(dict(reversed(list(vals.items()))))
    assert "rm1" in decide(vals)[1]


def test_decide_rm_outside_S_voting_aborted_does_not_abort() -> None:
    """Paper section 6.2: only the RMs of the chosen set S matter; an RM that tried to join
    after registration closed (or never joined) cannot abort the transaction."""
    vals: dict[str, Value] = {REGISTRAR: S, "rm1": Vote.PREPARED, "rm2": Vote.PREPARED, "late": Vote.ABORTED}
    assert decide(vals) == (Outcome.COMMITTED, "")


def test_decide_rm_outside_known_set_voting_aborted_stays_pending() -> None:
    vals: dict[str, Value] = {"rm1": Vote.PREPARED, "late": Vote.ABORTED}
    assert decide(vals, known_set=S)[0] is Outcome.PENDING
    assert decide(vals)[0] is Outcome.PENDING


def test_decide_known_set_short_cuts_abort() -> None:
    """Spec ``AbortRule``: ``\\E s \\in SetsSeen : \\E r \\in s : "aborted" \\in
    ChosenValues(r)``. The registrar can only choose its ballot-0 set or NoSet; both abort
    when a member of that set chose aborted, so the leader need not wait."""
    vals: dict[str, Value] = {"rm1": Vote.ABORTED}
    assert decide(vals, known_set=S)[0] is Outcome.ABORTED
    assert decide(vals)[0] is Outcome.PENDING  # without S nothing is known


def test_decide_chosen_set_wins_over_known_set() -> None:
    vals: dict[str, Value] = {REGISTRAR: RMSet.of(["rm1"]), "rm1": Vote.PREPARED, "rm2": Vote.ABORTED}
    assert decide(vals, known_set=S) == (Outcome.COMMITTED, "")


def test_decide_never_commits_on_no_set_even_if_everything_prepared() -> None:
    assert decide({REGISTRAR: NO_SET}, known_set=RMSet.of([]))[0] is Outcome.ABORTED


def test_state_messages_are_copied_into_replies_never_shared() -> None:
    """states_to_pb hands out cached messages: a reply built from them holds copies, so
    changing one reply changes neither the cache nor another reply."""
    from rm_sdk.protocol import RM_BALLOT, InstanceState, Vote
    from rm_sdk.wire import pb, states_from_pb, states_to_pb

    states = {"a": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED)}
    r1 = pb.Phase2bReply(txn_id="t", states=states_to_pb(states))
    r2 = pb.Phase2bReply(txn_id="t", states=states_to_pb(states))
    r1.states[0].instance = "b"
    r1.states[0].mbal.round = 7
    assert states_from_pb(r2.states) == states
    assert states_from_pb(pb.Phase2bReply(states=states_to_pb(states)).states) == states
