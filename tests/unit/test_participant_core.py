"""Unit tests for the resource manager as a state machine (``rm_sdk.core.participant``).

Each test cites what it checks: a section of Gray & Lamport, "Consensus on Transaction
Commit" (TODS 2006), an action of the spec ``spec/PaxosCommit.tla`` (``RMPrepare``,
``RMChooseToAbort``, ``RMRcvCommitMsg``, ``RMRcvAbortMsg``), or a pitfall of DESIGN.md
section 2 (``test_pitfallN_*``). No I/O: every event is fed by hand, time is a number.
"""

from __future__ import annotations

from typing import Any

import pytest

from rm_sdk.core.messages import (
    AbortCause,
    Acknowledge,
    Acknowledged,
    AskOutcome,
    AwaitPrepare,
    Bundle,
    BundleRequest,
    Decided,
    Decision,
    NoAnswer,
    Pending,
    Phase1a,
    Phase2a,
    Phase2b,
    Prepare,
    Refused,
    Unknown,
)
from rm_sdk.core.participant import (
    Applied,
    CallCoordinator,
    CallResource,
    Ended,
    ParticipantCore,
    ParticipantTimeouts,
    ResourceOp,
    RMState,
    Unreachable,
)
from rm_sdk.core.ready import Ready
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Ballot, InstanceState, Outcome, RMSet, Vote

T = "t1"
RM = "rm1"
COORD = "c:1"
COMMIT = Decision(Outcome.COMMITTED)
ABORT = Decision(Outcome.ABORTED, AbortCause.UNKNOWN)


class Harness:
    """A core and what it asked for, step by step."""

    def __init__(self, n: int = 3, **timeouts: Any) -> None:
        self.core = ParticipantCore(RM, "rm-rm1-test", ParticipantTimeouts(**timeouts))
        self.n = n
        self.now = 0.0
        self.out = Ready()

    def step(self, fn: Any, *args: Any) -> Ready:
        out = Ready()
        fn(*args, self.now, out)
        return out

    def join(self) -> Ready:
        return self.step(self.core.join, T, COORD, self.n)

    def coord(self, request: Any, reply: Any) -> Ready:
        return self.step(self.core.on_coordinator, T, request, reply)

    def coord_txn(self, txn: str, request: Any, reply: Any) -> Ready:
        return self.step(self.core.on_coordinator, txn, request, reply)

    def acc(self, reply: Any) -> Ready:
        return self.step(self.core.on_acceptor, reply)

    def tick(self, to: float) -> Ready:
        self.now = to
        return self.step(self.core.tick)

    def prepared(self) -> Ready:
        """Joined, asked to prepare, the resource prepared (durably)."""
        r = self.join()
        self.coord(await_req(r), Prepare(T, RM))
        return self.step(self.core.on_prepared, T, Vote.PREPARED)


def effects(r: Ready, kind: type) -> list[Any]:
    return [e for e in r.effects if isinstance(e, kind)]


def ack_req(r: Ready) -> Acknowledge:
    (c,) = [e for e in effects(r, CallCoordinator) if isinstance(e.request, Acknowledge)]
    assert isinstance(c.request, Acknowledge)
    return c.request


def await_req(r: Ready) -> AwaitPrepare:
    (c,) = [e for e in effects(r, CallCoordinator) if isinstance(e.request, AwaitPrepare)]
    assert isinstance(c.request, AwaitPrepare)
    return c.request


def ask_req(r: Ready) -> AskOutcome:
    (c,) = [e for e in effects(r, CallCoordinator) if isinstance(e.request, AskOutcome)]
    assert isinstance(c.request, AskOutcome)
    return c.request


def votes(r: Ready) -> dict[int, Vote]:
    out = {}
    for i, m in r.sends:
        if isinstance(m, Phase2a) and m.ballot == RM_BALLOT:
            v = m.proposals[RM]
            assert isinstance(v, Vote)
            out[i] = v
    return out


def names(r: Ready) -> list[str]:
    return [e.name for e in r.trace]


def accepted(i: int, vote: Vote = Vote.PREPARED) -> Phase2b:
    return Phase2b(T, i, {RM: InstanceState(mbal=RM_BALLOT, bal=RM_BALLOT, val=vote)})


def resource_calls(r: Ready) -> list[ResourceOp]:
    return [e.op for e in effects(r, CallResource)]


# --- working -> prepared (spec RMPrepare) ----------------------------------------------


def test_join_waits_for_prepare_and_prepare_calls_the_resource() -> None:
    """Paper section 6.2: an RM joins, then votes when asked (the paper's Prepare)."""
    h = Harness()
    r = h.join()
    assert await_req(r).rm_id == RM and h.core.states[T] is RMState.WORKING
    assert not r.sends
    r = h.coord(await_req(r), Prepare(T, RM))
    assert resource_calls(r) == [ResourceOp.PREPARE]
    assert not r.sends  # nothing leaves before prepare() returned


def test_pitfall3_prepared_vote_leaves_only_after_prepare_returned() -> None:
    """Pitfall 3: the prepared vote is durable before the 2a leaves; spec RMPrepare sends
    phase2a(ins=r, bal=0, val="prepared")."""
    h = Harness()
    r = h.join()
    r = h.coord(await_req(r), Prepare(T, RM))
    assert votes(r) == {}
    r = h.step(h.core.on_prepared, T, Vote.PREPARED)
    assert names(r) == ["RMPrepare"] and r.trace[0].fields == {"rm": RM}
    assert votes(r) == {0: Vote.PREPARED, 1: Vote.PREPARED}
    assert h.core.states[T] is RMState.PREPARED


def test_prepare_not_asked_again_while_waiting() -> None:
    """A Prepare(prepare=False) is the end of a long poll: ask again, nothing else."""
    h = Harness()
    r = h.join()
    r = h.coord(await_req(r), Prepare(T, RM, prepare=False))
    assert await_req(r) and not r.sends and not resource_calls(r)


# --- the vote: ballot-0 2a to F+1, the next on failure (paper section 4) ------------------


def test_vote_goes_to_first_majority_only() -> None:
    """Paper section 4 / Fig. 4: the RM sends its 2a to F+1 acceptors, the rest only on
    failure."""
    h = Harness(n=5)
    r = h.prepared()
    assert sorted(votes(r)) == [0, 1, 2]


@pytest.mark.parametrize("failure", ["noanswer", "refused"])
def test_vote_replaces_failed_acceptor_at_once(failure: str) -> None:
    """Issue 8 item 7: an acceptor that fails is replaced by the next one at once."""
    h = Harness()
    r = h.prepared()
    msg = r.sends[0][1]
    reply: Any = NoAnswer(T, 1, msg) if failure == "noanswer" else Refused(T, 1, msg, "no")
    r = h.acc(reply)
    assert votes(r) == {2: Vote.PREPARED}


def test_vote_replaces_silent_acceptor_after_answer_timeout() -> None:
    """Issue 8 item 7: an acceptor that does not answer within the answer timeout (1 s,
    not the 5 s RPC deadline) is replaced by the next one."""
    h = Harness(answer_timeout=1.0)
    h.prepared()
    h.acc(accepted(0))
    assert votes(h.tick(0.9)) == {}
    assert votes(h.tick(1.0)) == {2: Vote.PREPARED}


def test_late_answer_of_a_replaced_acceptor_still_counts() -> None:
    """Pitfall 6 (messages are delayed): a slow acceptor's late 2b is still a 2b; a
    majority of ballot-0 2b's settles the vote (spec Phase2b)."""
    h = Harness()
    h.prepared()
    h.acc(accepted(0))
    h.tick(1.0)  # acceptor 1 replaced by 2
    h.acc(accepted(1))
    assert h.tick(5.0).sends == []  # settled: no further votes


def test_vote_settles_on_majority_and_stops() -> None:
    """Decision rule: a majority of acceptors with ballot-0 2b is enough."""
    h = Harness()
    h.prepared()
    h.acc(accepted(0))
    h.acc(accepted(1))
    assert votes(h.tick(1.5)) == {}


def test_vote_settles_when_a_leader_took_over() -> None:
    """Spec Phase2a/Phase2b: an acceptor with mbal > 0 ignores ballot 0; the instance is
    a leader's now, so resending our vote is pointless."""
    h = Harness()
    h.prepared()
    h.acc(Phase2b(T, 0, {RM: InstanceState(mbal=Ballot(1, "x"))}))
    assert votes(h.tick(1.5)) == {}


def test_vote_retries_a_round_with_backoff_when_all_acceptors_fail() -> None:
    """Messages are lost (pitfall 6): when no majority answered, try again later."""
    h = Harness()
    r = h.prepared()
    for i in range(3):
        r = h.acc(NoAnswer(T, i, Phase2a(T, RM_BALLOT, {RM: Vote.PREPARED})))
    assert votes(r) == {}
    assert sorted(votes(h.tick(0.1))) == [0, 1]


def test_acceptor_failure_of_someone_elses_request_is_ignored() -> None:
    """Each reply is counted for what it answers (pitfall 6)."""
    h = Harness()
    h.prepared()
    r = h.acc(NoAnswer(T, 1, BundleRequest(T)))
    assert votes(r) == {}


# --- working -> aborted (spec RMChooseToAbort) ------------------------------------------


@pytest.mark.parametrize("result", [Vote.ABORTED, None])
def test_prepare_refused_or_failed_aborts_and_votes_aborted(result: Vote | None) -> None:
    """Spec RMChooseToAbort: a working RM may abort, sending phase2a(bal=0, "aborted")."""
    h = Harness()
    r = h.join()
    h.coord(await_req(r), Prepare(T, RM))
    r = h.step(h.core.on_prepared, T, result)
    assert names(r) == ["RMChooseToAbort"]
    assert resource_calls(r) == [ResourceOp.ABORT]
    assert votes(r) == {0: Vote.ABORTED, 1: Vote.ABORTED}


def test_owner_not_found_aborts_on_its_own() -> None:
    """Pitfall 3 allows it while working: the owner is gone (NOT_FOUND) before Prepare."""
    h = Harness()
    r = h.join()
    r = h.coord(await_req(r), Unknown(T))
    ask = ask_req(r)
    r = h.coord(ask, Pending(T))
    assert names(r) == ["RMChooseToAbort"] and votes(r)


def test_owner_unreachable_aborts_only_after_owner_timeout() -> None:
    """The owner unreachable: keep asking for owner_timeout, then abort on its own."""
    h = Harness(owner_timeout=5.0, retry_delay=0.2)
    r = h.join()
    r = h.coord(await_req(r), Unreachable(T))
    r = h.coord(ask_req(r), Pending(T))
    assert names(r) == [] and not votes(r)
    r = h.tick(0.2)
    h.now = 5.5
    r = h.coord(await_req(r), Unreachable(T))
    r = h.coord(ask_req(r), Pending(T))
    assert names(r) == ["RMChooseToAbort"]


def test_owner_unreachable_but_outcome_known_applies_it() -> None:
    """Learn the outcome when it is known elsewhere, rather than choosing."""
    h = Harness()
    r = h.join()
    r = h.coord(await_req(r), Unreachable(T))
    r = h.coord(ask_req(r), Decided(T, ABORT))
    assert names(r) == ["RMRcvAbortMsg"] and not votes(r)


def test_abort_before_prepare_is_applied_without_voting() -> None:
    """Spec RMRcvAbortMsg: a working RM may receive the abort."""
    h = Harness()
    r = h.join()
    r = h.coord(await_req(r), Decided(T, ABORT))
    assert names(r) == ["RMRcvAbortMsg"] and resource_calls(r) == [ResourceOp.ABORT] and not r.sends


def test_refuse_while_working_votes_aborted_at_once() -> None:
    """Issue 13: an RM whose work failed votes aborted now (spec RMChooseToAbort)."""
    h = Harness()
    h.join()
    r = h.step(h.core.refuse, T, "work failed")
    assert names(r) == ["RMChooseToAbort"] and set(votes(r).values()) == {Vote.ABORTED}


def test_refuse_once_prepare_began_changes_nothing_and_the_vote_stands() -> None:
    """One RM never sends two different ballot-0 votes (pitfall 2): once its prepare()
    runs, refuse() is a no-op and the vote is what prepare() returns."""
    h = Harness()
    r = h.join()
    h.coord(await_req(r), Prepare(T, RM))
    out = Ready()
    assert h.core.refuse(T, "", h.now, out) is False
    assert not out.sends and not out.effects
    r = h.step(h.core.on_prepared, T, Vote.PREPARED)
    assert "RMChooseToAbort" not in names(r) and set(votes(r).values()) == {Vote.PREPARED}


def test_refuse_while_awaiting_prepare_votes_aborted() -> None:
    """Spec ``RMChooseToAbort``: a working RM that was not asked to prepare may abort."""
    h = Harness()
    h.join()
    out = Ready()
    assert h.core.refuse(T, "failed", h.now, out) is True
    assert "RMChooseToAbort" in [e.name for e in out.trace]
    assert set(votes(out).values()) == {Vote.ABORTED}


def test_pitfall3_never_aborts_on_its_own_once_prepared() -> None:
    """Pitfall 3: once prepared, an RM may not abort unilaterally: refuse fails, and no
    timeout (owner or recovery) makes it choose."""
    h = Harness(owner_timeout=1.0, recovery_timeout=2.0)
    r = h.prepared()
    assert h.core.refuse(T, "", h.now, Ready()) is False
    r = h.coord(ask_req(r), Unreachable(T))
    for t in range(1, 100):
        r = h.tick(t * 0.5)
        assert "RMChooseToAbort" not in names(r)
        assert all(v is Vote.PREPARED for v in votes(r).values())
        assert not resource_calls(r)


# --- prepared -> committed | aborted (spec RMRcvCommitMsg / RMRcvAbortMsg) -------------


@pytest.mark.parametrize(("d", "event", "op"), [
    (COMMIT, "RMRcvCommitMsg", ResourceOp.COMMIT),
    (ABORT, "RMRcvAbortMsg", ResourceOp.ABORT),
])  # fmt: skip
def test_prepared_applies_the_outcome_it_learns(d: Decision, event: str, op: ResourceOp) -> None:
    """Spec RMRcvCommitMsg / RMRcvAbortMsg."""
    h = Harness()
    r = h.prepared()
    r = h.coord(ask_req(r), Decided(T, d))
    assert names(r) == [event] and resource_calls(r) == [op]
    r = h.step(h.core.on_applied, T, True)
    assert effects(r, Applied) == [Applied(T, RMState.COMMITTED if d is COMMIT else RMState.ABORTED)]
    # Spec RMAck: once applied durably, the RM acknowledges (pitfall 8); it ends once a
    # coordinator took the acknowledgement.
    assert names(r) == ["RMAck"] and not effects(r, Ended)
    r = h.coord(ack_req(r), Acknowledged(T, RM))
    assert effects(r, Ended)
    assert not h.core.active(T)


def test_the_acknowledgement_is_sent_only_after_the_outcome_is_applied() -> None:
    """Pitfall 8: an RM acknowledges only what it applied durably: a failed commit() sends
    none; the retry that succeeds does."""
    h = Harness(apply_backoff=0.1)
    r = h.prepared()
    r = h.coord(ask_req(r), Decided(T, COMMIT))
    assert not [e for e in effects(r, CallCoordinator) if isinstance(e.request, Acknowledge)]
    r = h.step(h.core.on_applied, T, False)
    assert not [e for e in effects(r, CallCoordinator) if isinstance(e.request, Acknowledge)]
    h.tick(0.1)
    r = h.step(h.core.on_applied, T, True)
    assert ack_req(r) == Acknowledge(T, RM, Outcome.COMMITTED)


@pytest.mark.parametrize("awaited", [False, True])
@pytest.mark.parametrize("via", ["outcome", "prepare"])
def test_the_acknowledgement_is_urgent_exactly_when_the_outcome_said_a_caller_waits(
    awaited: bool, via: str
) -> None:
    """Decided.ack_awaited (to the outcome question, or to the wait for Prepare) makes the
    Acknowledge urgent: its driver sends it at once instead of lazily."""
    h = Harness()
    if via == "outcome":
        r = h.prepared()
        r = h.coord(ask_req(r), Decided(T, COMMIT, ack_awaited=awaited))
        r = h.step(h.core.on_applied, T, True)
    else:
        r = h.join()
        r = h.coord(await_req(r), Decided(T, ABORT, ack_awaited=awaited))
        r = h.step(h.core.on_applied, T, True)
    assert ack_req(r).urgent is awaited


def test_an_unanswered_acknowledgement_is_retried_then_given_up() -> None:
    """No coordinator answering: a few tries with backoff, then the RM lets go (the
    transaction then stays live on the acceptors, visible in their metrics)."""
    h = Harness(ack_attempts=2, retry_delay=0.1)
    r = h.prepared()
    h.coord(ask_req(r), Decided(T, COMMIT))
    ack = ack_req(h.step(h.core.on_applied, T, True))
    r = h.coord(ack, Unreachable(T))
    assert not effects(r, Ended)
    start = h.now
    assert not effects(h.tick(start + 0.1), CallCoordinator)
    r = h.tick(start + 0.25)  # retry_delay * 2 ** tries
    assert ack_req(r) == ack
    r = h.coord(ack, Unreachable(T))
    assert effects(r, Ended)


def test_finished_states_are_a_bounded_cache() -> None:
    """Memory bounded: ``states`` keeps every live transaction and the last
    ``keep_finished`` finished ones."""
    h = Harness(keep_finished=2)
    for k in range(4):
        txn = f"x{k}"
        h.step(h.core.abandon, txn, 1)
        h.step(h.core.on_applied, txn, True)
        h.step(h.core.on_acceptor, Phase2b(txn, 0, {RM: InstanceState(RM_BALLOT, RM_BALLOT, Vote.ABORTED)}))
    # Each waits for its acknowledgement: all live.
    assert set(h.core.states) == {"x0", "x1", "x2", "x3"}
    for k in range(4):
        h.coord_txn(f"x{k}", Acknowledge(f"x{k}", RM, Outcome.ABORTED), Acknowledged(f"x{k}", RM))
    assert set(h.core.states) == {"x2", "x3"}


def test_applies_each_outcome_once() -> None:
    """Pitfall 6 (duplicates): an outcome told twice (by a coordinator and the
    acceptors) is applied once."""
    h = Harness(recovery_timeout=1.0)
    r = h.prepared()
    ask = ask_req(r)
    r = h.coord(ask, Decided(T, COMMIT))
    assert resource_calls(r) == [ResourceOp.COMMIT]
    r = h.coord(ask, Decided(T, COMMIT))
    assert resource_calls(r) == [] and names(r) == []
    h.step(h.core.on_applied, T, True)
    assert h.coord(ask, Decided(T, COMMIT)).effects == []


def test_failed_commit_is_retried_with_backoff() -> None:
    """A decided outcome is never dropped: commit() raising is retried, capped backoff."""
    h = Harness(apply_backoff=0.1, apply_backoff_cap=0.3)
    r = h.prepared()
    h.coord(ask_req(r), Decided(T, COMMIT))
    r = h.step(h.core.on_applied, T, False)
    assert resource_calls(r) == []
    assert resource_calls(h.tick(0.05)) == []
    assert resource_calls(h.tick(0.1)) == [ResourceOp.COMMIT]
    h.step(h.core.on_applied, T, False)
    assert resource_calls(h.tick(0.25)) == []
    assert resource_calls(h.tick(0.31)) == [ResourceOp.COMMIT]
    h.step(h.core.on_applied, T, False)
    assert resource_calls(h.tick(0.6)) == []
    assert resource_calls(h.tick(0.62)) == [ResourceOp.COMMIT]  # capped at 0.3
    r = h.step(h.core.on_applied, T, True)
    r = h.coord(ack_req(r), Acknowledged(T, RM))
    assert h.core.states[T] is RMState.COMMITTED and effects(r, Ended)


def test_commit_without_prepare_is_never_applied() -> None:
    """Decision rule: commit needs this RM's prepared; a working RM told "committed"
    (a bug elsewhere) does not apply it."""
    h = Harness()
    r = h.join()
    r = h.coord(await_req(r), Decided(T, COMMIT))
    assert resource_calls(r) == []


# --- pitfall 7: a prepared RM learns, never guesses --------------------------------------


def learner_reads(r: Ready) -> list[int]:
    return [i for i, m in r.sends if isinstance(m, BundleRequest)]


def test_pitfall7_learns_from_acceptors_only_after_recovery_timeout() -> None:
    """Pitfall 7 and 9: ask the acceptors only after recovery_timeout without an answer."""
    h = Harness(recovery_timeout=3.0)
    r = h.prepared()
    h.acc(accepted(0))
    h.acc(accepted(1))
    r = h.coord(ask_req(r), Pending(T))
    assert ask_req(r)
    assert learner_reads(h.tick(2.9)) == []
    assert learner_reads(h.tick(3.0)) == [0, 1, 2]


def test_pitfall7_learns_commit_from_acceptor_bundles() -> None:
    """Pitfall 7 / paper section 4: what a majority accepted decides; the RM applies it
    (a Decide step by this RM, then RMRcvCommitMsg)."""
    h = Harness(recovery_timeout=1.0)
    h.prepared()
    h.tick(1.0)
    st = {
        RM: InstanceState(mbal=RM_BALLOT, bal=RM_BALLOT, val=Vote.PREPARED),
    }
    st[REGISTRAR] = InstanceState(mbal=RM_BALLOT, bal=RM_BALLOT, val=RMSet.of([RM]))
    h.acc(Bundle(T, 0, st))
    r = h.acc(Bundle(T, 1, st))
    assert names(r) == ["Decide", "RMRcvCommitMsg"]
    assert resource_calls(r) == [ResourceOp.COMMIT]


def test_pitfall7_undecided_runs_recovery_ballots_not_a_guess() -> None:
    """Pitfall 7 / paper section 4: if the acceptors' reports decide nothing, the RM
    runs a higher ballot (never ballot 0, pitfall 2) with its own leader id."""
    h = Harness(recovery_timeout=1.0)
    h.prepared()
    h.tick(1.0)
    st = {RM: InstanceState(mbal=RM_BALLOT, bal=RM_BALLOT, val=Vote.PREPARED)}
    h.acc(Bundle(T, 0, st, age_ms=5000))
    h.acc(Bundle(T, 1, st, age_ms=5000))
    r = h.acc(Bundle(T, 2, {}, age_ms=5000))
    p1a = [m for _, m in r.sends if isinstance(m, Phase1a)]
    assert p1a and all(m.ballot > RM_BALLOT and m.ballot.leader == "rm-rm1-test" for m in p1a)
    assert resource_calls(r) == []


def test_learn_answers_its_token() -> None:
    """learn(): the acceptors alone; a recorded outcome is an answer."""
    h = Harness()
    r = h.step(h.core.learn, "tok", T, 3)
    assert learner_reads(r) == [0, 1, 2]
    r = h.acc(Bundle(T, 0, {}, Outcome.COMMITTED))
    assert [tok for tok, _ in r.replies] == ["tok"]
    ((_, msg),) = r.replies
    assert isinstance(msg, Decided) and msg.decision.outcome is Outcome.COMMITTED


# --- restart (paper section 6.3, pitfall 7) ----------------------------------------------


def test_resume_votes_again_and_learns() -> None:
    """Pitfall 7: a restarted prepared RM resends its vote (harmless) and asks."""
    h = Harness()
    r = h.step(h.core.resume, T, COORD, 3)
    assert votes(r) == {0: Vote.PREPARED, 1: Vote.PREPARED}
    assert ask_req(r) and names(r) == []  # RMPrepare happened in the earlier incarnation
    assert h.core.states[T] is RMState.PREPARED


def test_abandon_aborts_and_votes_aborted() -> None:
    """Pitfall 3: a restarted RM that never prepared may abort on its own."""
    h = Harness()
    r = h.step(h.core.abandon, T, 3)
    assert names(r) == ["RMChooseToAbort"] and set(votes(r).values()) == {Vote.ABORTED}
    r = h.step(h.core.on_applied, T, True)
    assert not effects(r, Ended)  # the vote is not settled yet
    h.coord(ack_req(r), Acknowledged(T, RM))
    h.acc(accepted(0, Vote.ABORTED))
    r = h.acc(accepted(1, Vote.ABORTED))
    assert effects(r, Ended) == [Ended(T, RMState.ABORTED)]


def test_join_is_idempotent() -> None:
    """Pitfall 6: a duplicate join does nothing."""
    h = Harness()
    h.join()
    assert h.join().effects == []
