"""The coordinator's state machines (``rm_sdk.core``): owner, learner, recovery ballots.

Each test drives the real core with hand-made acceptor replies and checks one condition
of one rule (paper sections 4 and 6.2; ``spec/PaxosCommit.tla``), so flipping that
condition in the code fails it.
"""

from __future__ import annotations

from typing import Any

import pytest

from acceptor.core import TxnRecord, record_outcome
from acceptor.rules import bundle_complete, phase1b, phase2b
from rm_sdk.ballots import BallotSource, Tally
from rm_sdk.core.coordinator import CoordinatorNode, CoordinatorTimeouts, NotFound, Unavailable
from rm_sdk.core.leader import Recovery, RecoveryPhase, backoff
from rm_sdk.core.learner import LearnerTimeouts
from rm_sdk.core.messages import (
    Abort,
    AbortCause,
    Acknowledge,
    Acknowledged,
    AskOutcome,
    AwaitPrepare,
    Begin,
    Bundle,
    BundleRequest,
    Commit,
    Decided,
    Decision,
    Failed,
    Join,
    Joined,
    NoAnswer,
    OutcomeRecorded,
    Pending,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    Prepare,
    RecordOutcome,
    Refused,
    Unknown,
)
from rm_sdk.core.owner import OwnerTimeouts, RegistrationClosed
from rm_sdk.core.ready import Ready
from rm_sdk.protocol import (
    NO_SET,
    REGISTRAR,
    RM_BALLOT,
    Ballot,
    InstanceState,
    Outcome,
    RMSet,
    Vote,
)

N = 3
TIMEOUTS = CoordinatorTimeouts(
    owner=OwnerTimeouts(vote_timeout=5.0, txn_timeout=60.0, answer_timeout=1.0),
    learner=LearnerTimeouts(recovery_timeout=10.0, answer_timeout=1.0, max_attempts=5),
    keep_decided=3,
)


class Acceptors:
    """Three in-memory acceptors applying the real rules (acceptor/rules.py)."""

    def __init__(self, n: int = N) -> None:
        self.state: list[dict[str, dict[str, InstanceState]]] = [{} for _ in range(n)]
        #: Outcome records, through the acceptor's real handler (acceptor/core.py).
        self.records: list[dict[str, TxnRecord]] = [{} for _ in range(n)]
        #: How long the acceptors say they have known a transaction they know.
        self.age_ms = 1

    def states(self, i: int, txn: str) -> dict[str, InstanceState]:
        return self.state[i].setdefault(txn, {})

    def vote(self, i: int, txn: str, rm: str, vote: Vote) -> Phase2b:
        st = self.states(i, txn)
        st[rm] = phase2b(st.get(rm, InstanceState()), RM_BALLOT, vote)
        return Phase2b(txn, i, dict(st))

    def handle(self, i: int, msg: Any) -> Any:
        st = self.states(i, msg.txn_id)
        if isinstance(msg, Phase1a):
            for ins in msg.instances:
                st[ins] = phase1b(st.get(ins, InstanceState()), msg.ballot)
            return Phase1b(msg.txn_id, i, {ins: st[ins] for ins in msg.instances})
        if isinstance(msg, Phase2a):
            for ins, val in msg.proposals.items():
                st[ins] = phase2b(st.get(ins, InstanceState()), msg.ballot, val)
            return Phase2b(msg.txn_id, i, {ins: st[ins] for ins in msg.proposals})
        if isinstance(msg, BundleRequest):
            done = bundle_complete(st)
            if msg.wait > 0 and not done:
                return None  # a long poll: answered when the state changes (by the test)
            return Bundle(msg.txn_id, i, dict(st), age_ms=self.age_ms if st else 0)
        if isinstance(msg, RecordOutcome):
            # An acceptor that holds votes of the transaction has a record (pending).
            rec = self.records[i].get(msg.txn_id) or (TxnRecord(0) if st else None)
            step = record_outcome(i, rec, msg, 0)
            if step.record is not None:
                self.records[i][msg.txn_id] = step.record
            return step.reply
        return None


class Harness:
    def __init__(self) -> None:
        self.node = CoordinatorNode("L1", N, TIMEOUTS)
        self.acc = Acceptors()
        self.now = 0.0
        self.sent: list[tuple[int, Any]] = []
        self.replies: list[tuple[Any, Any]] = []
        self.log: list[tuple[str, str]] = []

    def take(self) -> Ready:
        r = self.node.take_ready()
        self.sent += r.sends
        self.replies += r.replies
        self.log += r.log
        return r

    def request(self, token: Any, msg: Any) -> Ready:
        self.node.request(token, msg, self.now)
        return self.take()

    def deliver(self, reply: Any) -> Ready:
        self.node.acceptor_reply(reply, self.now)
        return self.take()

    def deliver_all(self, sends: list[tuple[int, Any]], only: set[int] | None = None) -> None:
        """Answer every request (from acceptors in ``only``), and what that triggers."""
        queue = list(sends)
        while queue:
            i, msg = queue.pop(0)
            if only is not None and i not in only:
                continue
            reply = self.acc.handle(i, msg)
            if reply is not None:
                queue += self.deliver(reply).sends

    def advance(self, seconds: float) -> Ready:
        self.now += seconds
        self.node.tick(self.now)
        return self.take()

    def answer(self, token: Any) -> Any:
        got = [m for t, m in self.replies if t == token]
        assert got, f"no answer to {token}"
        return got[-1]

    def prepared_majority(self, txn: str = "t1", rms: tuple[str, ...] = ("a", "b")) -> None:
        """Acceptors 0 and 1 (a majority) accept every RM's prepared vote; their bundles
        reach the owner."""
        for i in (0, 1):
            for rm in rms:
                self.acc.vote(i, txn, rm, Vote.PREPARED)
        self.deliver(self.acc.handle(0, BundleRequest(txn, 5.0)))
        self.deliver(self.acc.handle(1, BundleRequest(txn, 5.0)))

    def begin(self, txn: str = "t1", rms: tuple[str, ...] = ("a", "b")) -> None:
        self.request("begin", Begin(txn))
        for rm in rms:
            self.request(f"join-{rm}", Join(txn, rm))


def test_begin_join_commit_failure_free_sends_the_registrar_2a_to_the_first_majority_only() -> None:
    """Paper section 4: 2a's go to F+1 acceptors, the rest only on failure."""
    h = Harness()
    h.begin()
    r = h.request("c", Commit("t1"))
    reg = [(i, m) for i, m in r.sends if isinstance(m, Phase2a)]
    assert sorted(i for i, _ in reg) == [0, 1]
    assert all(m.ballot == RM_BALLOT and m.proposals == {REGISTRAR: RMSet.of({"a", "b"})} for _, m in reg)
    assert sorted(i for i, m in r.sends if isinstance(m, BundleRequest)) == [0, 1]
    h.deliver_all(r.sends)
    for i in (0, 1):
        h.acc.vote(i, "t1", "a", Vote.PREPARED)
        h.acc.vote(i, "t1", "b", Vote.PREPARED)
    h.deliver(h.acc.handle(0, BundleRequest("t1", 5.0)))
    assert not [m for t, m in h.replies if t == "c"]
    r = h.deliver(h.acc.handle(1, BundleRequest("t1", 5.0)))
    d = h.answer("c")
    assert isinstance(d, Decided) and d.decision.outcome is Outcome.COMMITTED
    # The outcome is recorded on every acceptor once every RM acknowledged applying it
    # (pitfall 8): one RecordOutcome per acceptor carries the outcome and the acks.
    assert not [m for _, m in r.sends if isinstance(m, RecordOutcome)]
    r = h.request("ack-a", Acknowledge("t1", "a", Outcome.COMMITTED))
    assert not [m for _, m in r.sends if isinstance(m, RecordOutcome)]
    assert "t1" in h.node.owned
    r = h.request("ack-b", Acknowledge("t1", "b", Outcome.COMMITTED))
    rec = [(i, m) for i, m in r.sends if isinstance(m, RecordOutcome)]
    assert sorted(i for i, _ in rec) == [0, 1, 2]
    assert all(m.participants == m.acked == frozenset({"a", "b"}) for _, m in rec)
    assert "t1" not in h.node.owned and "t1" in h.node.decided


def test_the_outcome_is_recorded_without_the_missing_acks_after_the_ack_wait() -> None:
    """An RM that never acknowledges keeps the transaction live on the acceptors (its set
    is recorded, its ack is not), and does not keep it in the coordinator's memory."""
    h = Harness()
    h.begin()
    r = h.request("c", Commit("t1", wait_applied=True))
    h.deliver_all(r.sends)
    h.prepared_majority()
    assert not [m for t, m in h.replies if t == "c"]  # waits for the RMs to apply
    h.request("ack-a", Acknowledge("t1", "a", Outcome.COMMITTED))
    r = h.advance(1.9)
    assert not [m for _, m in r.sends if isinstance(m, RecordOutcome)]
    r = h.advance(0.2)
    rec = [m for _, m in r.sends if isinstance(m, RecordOutcome)]
    assert len(rec) == N and all(m.acked == frozenset({"a"}) for m in rec)
    d = h.answer("c")
    assert isinstance(d, Decided) and d.decision.outcome is Outcome.COMMITTED and not d.applied
    assert "t1" not in h.node.owned
    # A late ack reaches a replica that no longer owns it: passed on to every acceptor.
    r = h.request("ack-b", Acknowledge("t1", "b", Outcome.COMMITTED))
    late = [m for _, m in r.sends if isinstance(m, RecordOutcome)]
    assert len(late) == N and all(m.acked == frozenset({"b"}) and m.participants is None for m in late)


def test_commit_wait_applied_is_answered_once_every_rm_acknowledged() -> None:
    h = Harness()
    h.begin()
    r = h.request("c", Commit("t1", wait_applied=True))
    h.deliver_all(r.sends)
    h.prepared_majority()
    h.request("ack-a", Acknowledge("t1", "a", Outcome.COMMITTED))
    assert not [m for t, m in h.replies if t == "c"]
    h.request("ack-b", Acknowledge("t1", "b", Outcome.COMMITTED))
    d = h.answer("c")
    assert isinstance(d, Decided) and d.applied


@pytest.mark.parametrize("wait_applied", [False, True])
def test_rms_are_told_whether_a_commit_caller_waits_for_their_acks(wait_applied: bool) -> None:
    """Decided.ack_awaited, to every RM question (a waiting prepare, an outcome question
    before and after the decision), is true exactly when a Commit waits for the acks."""
    h = Harness()
    h.begin()
    h.request("early", AskOutcome("t1", 5.0))
    r = h.request("c", Commit("t1", wait_applied=wait_applied))
    h.deliver_all(r.sends)
    h.prepared_majority()
    h.request("late", AskOutcome("t1", 5.0))
    h.request("prep", AwaitPrepare("t1", "a", 5.0))
    for token in ("early", "late", "prep"):
        d = h.answer(token)
        assert isinstance(d, Decided) and d.decision.outcome is Outcome.COMMITTED
        assert d.ack_awaited is wait_applied, token
    if not wait_applied:
        assert isinstance(h.answer("c"), Decided)


def test_a_bundle_from_one_acceptor_does_not_decide() -> None:
    """Spec ``Decide``: chosen means a majority at one ballot; one acceptor is not one."""
    h = Harness()
    h.begin(rms=("a",))
    h.deliver_all(h.request("c", Commit("t1")).sends, only={0})
    h.acc.vote(0, "t1", "a", Vote.PREPARED)
    h.deliver(h.acc.handle(0, BundleRequest("t1")))
    assert not [m for t, m in h.replies if t == "c"]


def test_registration_closes_at_commit_and_prepare_is_sent_to_waiting_members() -> None:
    h = Harness()
    h.begin(rms=("a",))
    h.request("w", AwaitPrepare("t1", "a", 10.0))
    assert not [m for t, m in h.replies if t == "w"]
    h.request("c", Commit("t1"))
    assert h.answer("w") == Prepare("t1", "a")
    late = h.request("late", Join("t1", "z"))
    assert isinstance(h.answer("late"), Failed) and isinstance(h.answer("late").error, RegistrationClosed)
    assert late.sends == []


def test_await_prepare_for_an_rm_that_never_joined_is_a_failed_precondition() -> None:
    h = Harness()
    h.begin(rms=("a",))
    h.request("w", AwaitPrepare("t1", "stranger", 1.0))
    err = h.answer("w")
    assert isinstance(err, Failed) and getattr(err.error, "status", "") == "FAILED_PRECONDITION"


def test_prepare_wait_ends_with_prepare_false() -> None:
    h = Harness()
    h.begin(rms=("a",))
    h.request("w", AwaitPrepare("t1", "a", 2.0))
    h.advance(1.9)
    assert not [m for t, m in h.replies if t == "w"]
    h.advance(0.2)
    assert h.answer("w") == Prepare("t1", "a", prepare=False)


def test_unknown_transaction_is_not_found_for_owner_requests() -> None:
    h = Harness()
    h.request("c", Commit("nope"))
    err = h.answer("c")
    assert isinstance(err, Failed) and isinstance(err.error, NotFound)


def test_a_join_that_overtakes_its_begin_waits_for_it_and_then_joins() -> None:
    """The client does not wait for Begin's reply: an RM's join on another stream may
    arrive first. It is held, and answered as if it had followed the Begin."""
    h = Harness()
    h.request("j", Join("t1", "a"))
    assert not [m for t, m in h.replies if t == "j"] and h.node.parked_joins == 1
    assert "t1" not in h.node.owned
    h.advance(1.9)
    assert not [m for t, m in h.replies if t == "j"]
    h.request("begin", Begin("t1"))
    assert h.answer("j") == Joined("t1", "a") and h.node.parked_joins == 0
    r = h.request("c", Commit("t1"))
    reg = [m for _, m in r.sends if isinstance(m, Phase2a)]
    assert reg and all(m.proposals == {REGISTRAR: RMSet.of({"a"})} for m in reg)
    h.advance(1.0)  # the held join's deadline passes: nothing more is answered
    assert len([m for t, m in h.replies if t == "j"]) == 1


def test_a_held_join_is_not_found_once_the_park_time_passes_without_a_begin() -> None:
    h = Harness()
    h.request("j", Join("t1", "a"))
    h.advance(TIMEOUTS.park_join - 0.01)
    assert not [m for t, m in h.replies if t == "j"]
    h.advance(0.02)
    err = h.answer("j")
    assert isinstance(err, Failed) and isinstance(err.error, NotFound)
    assert h.node.parked_joins == 0 and "t1" not in h.node.owned
    # A Begin after that does not answer it again.
    h.request("begin", Begin("t1"))
    assert len([m for t, m in h.replies if t == "j"]) == 1


def test_joins_beyond_keep_parked_are_not_found_at_once() -> None:
    h = Harness()
    h.node.timeouts = CoordinatorTimeouts(keep_parked=1)
    h.request("j1", Join("t1", "a"))
    h.request("j2", Join("t2", "a"))
    assert not [m for t, m in h.replies if t == "j1"]
    err = h.answer("j2")
    assert isinstance(err, Failed) and isinstance(err.error, NotFound)


def test_only_joins_wait_for_a_begin_and_a_malformed_rm_id_is_refused_at_once() -> None:
    """The client's own Commit and Abort follow its Begin on one stream: for them an
    unknown transaction means a restarted owner, answered at once. An RM's prepare wait
    comes only after its join was answered."""
    h = Harness()
    for token, msg in [
        ("c", Commit("t1")),
        ("a", Abort("t1", "no")),
        ("w", AwaitPrepare("t1", "a", 1.0)),
        ("bad", Join("t1", "bad rm!")),
    ]:
        h.request(token, msg)
        assert isinstance(h.answer(token), Failed), token
    assert h.node.parked_joins == 0


def test_a_join_for_a_decided_transaction_is_not_held() -> None:
    h = Harness()
    h.node.decided["t1"] = (Decision(Outcome.ABORTED), RMSet.of({"a"}))
    h.request("j", Join("t1", "z"))
    err = h.answer("j")
    assert isinstance(err, Failed) and isinstance(err.error, RegistrationClosed)


def test_malformed_id_changes_nothing_and_fails() -> None:
    h = Harness()
    r = h.request("b", Begin("bad id!"))
    assert isinstance(h.answer("b"), Failed) and r.sends == [] and not h.node.owned


def test_silent_acceptor_after_the_registrar_2a_is_replaced_by_the_next_after_answer_timeout() -> None:
    """Issue 8 item 7: with F acceptors down, the owner asks the next acceptor at once,
    never waiting a vote timeout for a message another acceptor can give."""
    h = Harness()
    h.begin(rms=("a",))
    r = h.request("c", Commit("t1"))
    h.deliver_all(r.sends, only={0})  # acceptor 1 is silent
    r = h.advance(0.5)
    assert not any(i == 2 for i, _ in r.sends)
    r = h.advance(0.6)  # past answer_timeout
    assert {i for i, m in r.sends if isinstance(m, Phase2a)} == {2}
    h.deliver_all(r.sends, only={0, 2})
    h.acc.vote(0, "t1", "a", Vote.PREPARED)
    h.acc.vote(2, "t1", "a", Vote.PREPARED)
    h.deliver(h.acc.handle(0, BundleRequest("t1")))
    h.deliver(h.acc.handle(2, BundleRequest("t1")))
    d = h.answer("c")
    assert isinstance(d, Decided) and d.decision.outcome is Outcome.COMMITTED
    assert h.now < TIMEOUTS.owner.vote_timeout


@pytest.mark.parametrize("failure", ["no_answer", "refused"])
def test_a_failed_or_refused_registrar_2a_moves_on_at_once(failure: str) -> None:
    h = Harness()
    h.begin(rms=("a",))
    r = h.request("c", Commit("t1"))
    req = next(m for i, m in r.sends if i == 1 and isinstance(m, Phase2a))
    msg = NoAnswer("t1", 1, req) if failure == "no_answer" else Refused("t1", 1, req, "no")
    r = h.deliver(msg)
    assert {i for i, m in r.sends if isinstance(m, Phase2a)} == {2}


def test_votes_missing_after_the_vote_timeout_start_recovery_that_aborts_the_silent_rm() -> None:
    h = Harness()
    h.begin(rms=("a", "b"))
    h.deliver_all(h.request("c", Commit("t1")).sends)
    for i in (0, 1):
        h.acc.vote(i, "t1", "a", Vote.PREPARED)
    r = h.advance(4.9)
    assert not any(isinstance(m, Phase1a) for _, m in r.sends)
    r = h.advance(0.2)
    ones = [m for _, m in r.sends if isinstance(m, Phase1a)]
    assert len(ones) == N and ones[0].ballot.is_leader_ballot
    h.deliver_all(r.sends)
    d = h.answer("c")
    assert isinstance(d, Decided)
    assert d.decision.outcome is Outcome.ABORTED and d.decision.cause is AbortCause.VOTE_TIMEOUT
    assert d.decision.rm_id == "b"


def test_an_rm_that_voted_aborted_is_named_as_refusing() -> None:
    h = Harness()
    h.begin(rms=("a", "b"))
    h.deliver_all(h.request("c", Commit("t1")).sends)
    for i in (0, 1):
        h.acc.vote(i, "t1", "b", Vote.ABORTED)
    h.deliver(h.acc.handle(0, BundleRequest("t1")))
    h.deliver(h.acc.handle(1, BundleRequest("t1")))
    d = h.answer("c").decision
    assert (d.outcome, d.cause, d.rm_id) == (Outcome.ABORTED, AbortCause.RM_REFUSED, "b")


def test_an_abort_is_an_operator_log_line_with_its_reason_and_a_commit_is_none() -> None:
    """A line per committed transaction floods the operator's log at thousands a second;
    the commit is in ``decided`` instead. An abort says why."""
    h = Harness()
    h.begin(rms=("a", "b"))
    h.deliver_all(h.request("c", Commit("t1")).sends)
    h.prepared_majority()
    assert h.answer("c").decision.outcome is Outcome.COMMITTED
    assert h.log == []
    h.begin("t2", rms=("a", "b"))
    h.deliver_all(h.request("c2", Commit("t2")).sends)
    for i in (0, 1):
        h.acc.vote(i, "t2", "b", Vote.ABORTED)
    h.deliver(h.acc.handle(0, BundleRequest("t2")))
    h.deliver(h.acc.handle(1, BundleRequest("t2")))
    assert h.answer("c2").decision.outcome is Outcome.ABORTED
    assert h.log == [("t2", "aborted resource manager 'b' voted to abort")]


def test_transaction_timeout_aborts_with_no_set_and_its_cause() -> None:
    h = Harness()
    h.begin(rms=("a",))
    r = h.advance(59.0)
    assert r.sends == []
    r = h.advance(1.5)
    regs = [m for _, m in r.sends if isinstance(m, Phase2a)]
    assert regs and all(m.proposals == {REGISTRAR: NO_SET} for m in regs)
    h.deliver_all(r.sends)
    h.request("q", AskOutcome("t1", 0.0))
    d = h.answer("q").decision
    assert (d.outcome, d.cause) == (Outcome.ABORTED, AbortCause.TXN_TIMEOUT)


def test_application_abort_keeps_its_reason() -> None:
    h = Harness()
    h.begin(rms=("a",))
    h.deliver_all(h.request("x", Abort("t1", "changed my mind")).sends)
    d = h.answer("x").decision
    assert (d.outcome, d.cause, d.reason) == (Outcome.ABORTED, AbortCause.APPLICATION, "changed my mind")


def test_a_recorded_outcome_in_a_bundle_decides() -> None:
    h = Harness()
    h.begin(rms=("a",))
    h.request("c", Commit("t1"))
    h.deliver(Bundle("t1", 0, {}, Outcome.ABORTED, 5))
    assert h.answer("c").decision.outcome is Outcome.ABORTED


def test_decided_outcomes_are_kept_in_a_bounded_cache() -> None:
    h = Harness()
    for k in range(5):
        txn = f"t{k}"
        h.request("b", Begin(txn))
        h.deliver_all(h.request("x", Abort(txn)).sends)
    assert len(h.node.decided) == TIMEOUTS.keep_decided and not h.node.owned
    assert "t0" not in h.node.decided and "t4" in h.node.decided


def test_begin_of_an_existing_id_is_refused() -> None:
    h = Harness()
    h.request("b1", Begin("t1"))
    h.request("b2", Begin("t1"))
    assert isinstance(h.answer("b2"), Failed)


def test_owned_outcome_question_with_no_wait_is_pending() -> None:
    h = Harness()
    h.begin(rms=("a",))
    h.request("q", AskOutcome("t1", 0.0))
    assert isinstance(h.answer("q"), Pending)


def test_owned_outcome_question_with_a_wait_is_pending_once_the_wait_ends() -> None:
    """The wait is one of the owner's deadlines: answered Pending when it ends, not before
    and not at the (later) transaction timeout."""
    h = Harness()
    h.begin(rms=("a",))
    h.request("q", AskOutcome("t1", 2.0))
    assert not [m for t, m in h.replies if t == "q"]
    assert h.node.next_deadline() == 2.0
    h.advance(1.9)
    assert not [m for t, m in h.replies if t == "q"]
    h.advance(0.2)
    assert isinstance(h.answer("q"), Pending)


# ---------------------------------------------------------------- learner (other replicas)


def test_learner_says_unknown_when_a_majority_never_heard_of_it_whatever_the_wait() -> None:
    """Issue 9: an unknown id is NOT_FOUND with wait 0 and with a wait; nothing created."""
    for wait in (0.0, 3.0):
        h = Harness()
        r = h.request("q", AskOutcome("ghost", wait))
        assert {i for i, m in r.sends if isinstance(m, BundleRequest)} == {0, 1, 2}
        h.advance(0.0)
        assert not [m for t, m in h.replies if t == "q"], "answered before the read came back"
        h.deliver_all(r.sends)
        assert isinstance(h.answer("q"), Unknown)
        assert all(not s for s in h.acc.state[0].values())


def test_learner_waits_the_recovery_timeout_before_running_ballots() -> None:
    """Pitfall 9: a leader waits before starting ballots on someone else's instance."""
    h = Harness()
    h.acc.vote(0, "t9", "a", Vote.PREPARED)  # the owner died after one vote
    r = h.request("q", AskOutcome("t9", 30.0))
    h.deliver_all(r.sends)
    for _ in range(9):
        r = h.advance(1.0)
        assert not any(isinstance(m, Phase1a) for _, m in r.sends)
        h.deliver_all(r.sends)
    r = h.advance(1.5)
    h.deliver_all(r.sends)
    assert any(isinstance(m, Phase1a) for _, m in h.sent)
    d = h.answer("q").decision
    # The registrar instance was free: "no set" (pitfall 4) -> the owner failed.
    assert (d.outcome, d.cause) == (Outcome.ABORTED, AbortCause.COORDINATOR_FAILED)


def test_found_undecided_transactions_are_recovered_and_recorded() -> None:
    h = Harness()
    h.acc.vote(0, "old", "a", Vote.PREPARED)
    h.acc.age_ms = 60_000  # what ListUndecided finds is older than the recovery timeout
    h.node.found_undecided(["old"], h.now)
    r = h.take()
    h.deliver_all(r.sends)
    assert "old" in h.node.decided
    assert sum(1 for _, m in h.sent if isinstance(m, RecordOutcome)) == N


# ---------------------------------------------------------------- recovery ballots


def test_recovery_proposes_the_highest_accepted_value_not_the_free_one() -> None:
    """Spec ``Phase2a``: the value of the highest bal among the majority's 1b's."""
    h = Harness()
    s = RMSet.of({"a"})
    for i in (0, 1):
        st = h.acc.states(i, "t2")
        st[REGISTRAR] = phase2b(InstanceState(), RM_BALLOT, s)
    h.acc.vote(0, "t2", "a", Vote.PREPARED)
    h.acc.vote(1, "t2", "a", Vote.PREPARED)
    h.acc.age_ms = 60_000
    h.node.found_undecided(["t2"], 0.0)
    h.deliver_all(h.take().sends)
    assert h.node.decided["t2"][0].outcome is Outcome.COMMITTED
    assert not any(isinstance(m, Phase2a) and m.ballot.is_leader_ballot for _, m in h.sent)


def test_only_promises_at_the_current_ballot_count() -> None:
    """Pitfall 4: use only 1b's whose mbal equals the ballot; count each acceptor once."""
    out = Ready()
    rec = Recovery("t3", BallotSource("L1"), Tally(N), None, answer_timeout=1.0)
    rec.start(0.0, out)
    first = next(m for _, m in out.sends if isinstance(m, Phase1a))
    promise = {ins: InstanceState(mbal=first.ballot) for ins in first.instances}
    stale = {ins: InstanceState(mbal=Ballot(0, "")) for ins in first.instances}
    out = Ready()
    rec.on_reply(Phase1b("t3", 0, promise), 0.1, out)
    rec.on_reply(Phase1b("t3", 0, promise), 0.1, out)  # duplicated: still one acceptor
    rec.on_reply(Phase1b("t3", 1, stale), 0.1, out)  # not a promise of this ballot
    assert not any(isinstance(m, Phase2a) for _, m in out.sends)
    rec.on_reply(Phase1b("t3", 2, promise), 0.1, out)
    twos = [m for _, m in out.sends if isinstance(m, Phase2a)]
    assert len(twos) == N and twos[0].ballot == first.ballot
    # Nothing accepted anywhere: the free values (pitfall 4).
    assert twos[0].proposals == {REGISTRAR: NO_SET}


def test_preempted_ballot_backs_off_and_the_next_is_higher_than_the_preempting_one() -> None:
    """Pitfall 5: a NACK names the ballot to beat."""
    out = Ready()
    rec = Recovery("t4", BallotSource("L1"), Tally(N), None, answer_timeout=1.0)
    rec.start(0.0, out)
    first = next(m for _, m in out.sends if isinstance(m, Phase1a))
    high = Ballot(first.ballot.round + 5, "other")
    nack = {ins: InstanceState(mbal=high) for ins in first.instances}
    out = Ready()
    rec.on_reply(Phase1b("t4", 0, nack), 0.1, out)
    assert rec.phase is RecoveryPhase.BACKOFF and out.sends == []
    rec.tick(0.1 + backoff("L1", "t4", 0) - 0.001, out)
    assert out.sends == []
    rec.tick(5.0, out)
    nxt = next(m for _, m in out.sends if isinstance(m, Phase1a))
    assert nxt.ballot > high


def test_a_ballot_without_a_majority_in_time_is_abandoned_for_a_higher_one() -> None:
    out = Ready()
    rec = Recovery("t5", BallotSource("L1"), Tally(N), None, answer_timeout=1.0, max_attempts=2)
    rec.start(0.0, out)
    b1 = next(m for _, m in out.sends if isinstance(m, Phase1a)).ballot
    rec.tick(0.99, out)
    assert rec.phase is RecoveryPhase.PHASE1
    rec.tick(1.0, out)
    assert rec.phase is RecoveryPhase.BACKOFF
    out = Ready()
    rec.tick(10.0, out)
    b2 = next(m for _, m in out.sends if isinstance(m, Phase1a)).ballot
    assert b2 > b1
    rec.tick(11.0, out)
    rec.tick(20.0, out)
    assert rec.phase is RecoveryPhase.GAVE_UP and rec.next_deadline() is None


def test_one_leader_never_sends_two_different_2as_at_one_ballot() -> None:
    """Pitfall 2, over many ballots of one incarnation."""
    h = Harness()
    seen: dict[tuple[str, Ballot, str], object] = {}
    for k in range(4):
        txn = f"d{k}"
        h.acc.vote(k % N, txn, "a", Vote.PREPARED)
        h.node.found_undecided([txn], h.now)
        h.deliver_all(h.take().sends)
        h.deliver_all(h.advance(3.0).sends)
    for _, m in h.sent:
        if isinstance(m, Phase2a) and m.ballot.is_leader_ballot:
            for ins, v in m.proposals.items():
                assert seen.setdefault((m.txn_id, m.ballot, ins), v) == v


def test_backoff_is_deterministic_capped_and_differs_between_leaders() -> None:
    assert backoff("L1", "t", 3) == backoff("L1", "t", 3)
    assert backoff("L1", "t", 3) != backoff("L2", "t", 3)
    assert all(backoff("L", "t", a) <= 2.0 * 1.5 for a in range(40))
    assert backoff("L", "t", 0) < backoff("L", "t", 6)


def test_ballot_source_is_shared_by_every_transaction_of_an_incarnation() -> None:
    node = CoordinatorNode("L1", N, TIMEOUTS)
    assert isinstance(node.ballots, BallotSource) and node.ballots.leader == "L1"
    with pytest.raises(ValueError):
        CoordinatorNode("L1", 2, TIMEOUTS)


def test_join_is_idempotent_and_traced_once() -> None:
    h = Harness()
    h.request("b", Begin("t1"))
    r1 = h.request("j1", Join("t1", "a"))
    r2 = h.request("j2", Join("t1", "a"))
    assert h.answer("j1") == h.answer("j2") == Joined("t1", "a")
    assert [e.name for e in r1.trace] == ["Join"] and r2.trace == []


def test_deadlines_of_ended_transactions_are_dropped() -> None:
    """Memory bounded: no per-transaction timer outlives its transaction."""
    from rm_sdk.core.ready import Deadlines

    d: Deadlines[str] = Deadlines()
    for i in range(3000):
        d.at(100.0 + i, f"t{i}")
        d.at(200.0 + i, f"t{i}")
    for i in range(2990):
        d.discard(f"t{i}")
    assert len(d) == 20 and len(d._heap) < 3000  # compacted
    assert d.next() == 100.0 + 2990
    d.at(50.0, "t0")  # a key used again after discard is live again
    tail = [f"t{i}" for i in range(2990, 3000)]
    assert d.due(10_000.0) == ["t0", *tail, *tail]
    assert len(d) == 0 and not d._pending and not d._cut


def test_the_coordinator_keeps_no_timer_of_a_finished_transaction() -> None:
    h = Harness()
    for k in range(3):
        txn = f"t{k}"
        h.begin(txn, rms=("a",))
        r = h.request(f"c{k}", Commit(txn))
        h.deliver_all(r.sends)
        for i in (0, 1):
            h.acc.vote(i, txn, "a", Vote.PREPARED)
        h.deliver(h.acc.handle(0, BundleRequest(txn, 5.0)))
        h.deliver(h.acc.handle(1, BundleRequest(txn, 5.0)))
        h.deliver_all(h.request(f"ack{k}", Acknowledge(txn, "a", Outcome.COMMITTED)).sends)
        assert h.answer(f"ack{k}") == Acknowledged(txn, "a")
    assert not h.node.owned and not h.node._acks
    assert len(h.node._deadlines) == 0 and not h.node._planned
    # An acknowledgement that no acceptor confirms keeps its timer only until it expires.
    h.request("late", Acknowledge("t0", "a", Outcome.COMMITTED))
    assert len(h.node._deadlines) == 1
    h.advance(10.0)
    assert isinstance(h.answer("late"), Failed)
    assert not h.node._acks and len(h.node._deadlines) == 0 and not h.node._planned


def test_one_deadline_is_planned_per_transaction_and_a_later_one_once_the_earlier_came_due() -> None:
    """A step whose next deadline is no earlier than the planned one plans nothing; when
    the planned one comes due, the machine's next deadline is planned (never lost)."""
    h = Harness()
    h.begin(rms=("a", "b"))  # three steps, one deadline: the transaction timeout
    assert len(h.node._deadlines._heap) == 1
    assert h.node.next_deadline() == TIMEOUTS.owner.txn_timeout
    h.now = 1.0
    r = h.request("c", Commit("t1"))  # earlier: the registrar 2a's answer timeout
    assert h.node.next_deadline() == 1.0 + TIMEOUTS.owner.answer_timeout
    # The acceptors answer: what is left is the vote timeout, later than the one planned.
    h.deliver_all(r.sends)
    owner = h.node.owned["t1"]
    assert owner.next_deadline() == 1.0 + TIMEOUTS.owner.vote_timeout
    assert h.node.next_deadline() == 1.0 + TIMEOUTS.owner.answer_timeout  # stale: harmless
    h.advance(TIMEOUTS.owner.answer_timeout)  # the stale one comes due: the next is planned
    assert h.node.next_deadline() == 1.0 + TIMEOUTS.owner.vote_timeout
    r = h.advance(TIMEOUTS.owner.vote_timeout - TIMEOUTS.owner.answer_timeout)
    assert [m for _, m in r.sends if isinstance(m, Phase1a)], "the vote timeout was lost"


def _decided(h: Harness, txn: str = "t1", rms: tuple[str, ...] = ("a", "b")) -> None:
    h.begin(txn, rms=rms)
    r = h.request("c", Commit(txn))
    h.deliver_all(r.sends)
    for i in (0, 1):
        for rm in rms:
            h.acc.vote(i, txn, rm, Vote.PREPARED)
    h.deliver(h.acc.handle(0, BundleRequest(txn, 5.0)))
    h.deliver(h.acc.handle(1, BundleRequest(txn, 5.0)))
    d = h.answer("c")
    assert isinstance(d, Decided) and d.decision.outcome is Outcome.COMMITTED


def test_an_acknowledgement_is_answered_once_a_majority_of_acceptors_hold_it() -> None:
    """Nothing acknowledged is lost: an owner that crashes with the RMs' acks in memory
    (before or while it records them) has not told any RM its ack was taken, so the RM
    sends it again (to a replica that passes it on to the acceptors)."""
    h = Harness()
    _decided(h)
    r = h.request("ack-a", Acknowledge("t1", "a", Outcome.COMMITTED))
    assert not [m for t, m in h.replies if t == "ack-a"]  # held by the owner, in memory
    r = h.request("ack-b", Acknowledge("t1", "b", Outcome.COMMITTED))
    rec = [(i, m) for i, m in r.sends if isinstance(m, RecordOutcome)]
    assert len(rec) == N and not [m for t, m in h.replies if t in ("ack-a", "ack-b")]
    h.deliver(h.acc.handle(*rec[0]))
    assert not [m for t, m in h.replies if t in ("ack-a", "ack-b")]  # one acceptor: not yet
    h.deliver(h.acc.handle(*rec[1]))
    assert h.answer("ack-a") == Acknowledged("t1", "a") and h.answer("ack-b") == Acknowledged("t1", "b")
    assert not h.node._acks


def test_an_acceptor_reply_counts_only_for_the_acks_it_holds() -> None:
    h = Harness()
    _decided(h)
    h.request("ack-a", Acknowledge("t1", "a", Outcome.COMMITTED))
    h.advance(2.1)  # the ack wait ends: recorded with a's ack only
    # Replies that hold b's ack but not a's count for b only; a collected record for all.
    h.deliver(OutcomeRecorded("t1", 0, frozenset({"b"})))
    h.deliver(OutcomeRecorded("t1", 1, frozenset({"b"})))
    assert not [m for t, m in h.replies if t == "ack-a"]
    h.deliver(OutcomeRecorded("t1", 2, collected=True))
    assert not [m for t, m in h.replies if t == "ack-a"]
    h.deliver(OutcomeRecorded("t1", 0, frozenset({"a"})))
    assert h.answer("ack-a") == Acknowledged("t1", "a")


def test_the_same_acceptor_twice_is_not_a_majority() -> None:
    h = Harness()
    _decided(h, rms=("a",))
    r = h.request("ack-a", Acknowledge("t1", "a", Outcome.COMMITTED))
    assert [m for _, m in r.sends if isinstance(m, RecordOutcome)]
    h.deliver(OutcomeRecorded("t1", 0, frozenset({"a"})))
    h.deliver(OutcomeRecorded("t1", 0, frozenset({"a"})))
    assert not [m for t, m in h.replies if t == "ack-a"]
    h.deliver(OutcomeRecorded("t1", 2, frozenset({"a"})))
    assert h.answer("ack-a") == Acknowledged("t1", "a")


def test_an_acknowledgement_no_majority_confirms_fails_as_unavailable() -> None:
    """The RM is told to try again (UNAVAILABLE), never that its ack was taken."""
    h = Harness()
    _decided(h, rms=("a",))
    r = h.request("ack-a", Acknowledge("t1", "a", Outcome.COMMITTED))
    rec = [(i, m) for i, m in r.sends if isinstance(m, RecordOutcome)]
    h.deliver(h.acc.handle(*rec[0]))
    h.advance(TIMEOUTS.owner.ack_wait + 2 * TIMEOUTS.owner.answer_timeout - 0.01)
    assert not [m for t, m in h.replies if t == "ack-a"]
    h.advance(0.02)
    f = h.answer("ack-a")
    assert isinstance(f, Failed) and isinstance(f.error, Unavailable)
    assert Unavailable.status == "UNAVAILABLE"
    assert "1 of 3" in str(f.error)
    # The RM's next try at a replica that let go of the transaction: passed on, and
    # answered once a majority holds it.
    r = h.request("ack-a2", Acknowledge("t1", "a", Outcome.COMMITTED))
    late = [(i, m) for i, m in r.sends if isinstance(m, RecordOutcome)]
    assert len(late) == N and all(m.participants is None for _, m in late)
    h.deliver(h.acc.handle(*late[2]))  # knows nothing of t1: creates and holds nothing
    h.deliver(h.acc.handle(*late[0]))
    assert not [m for t, m in h.replies if t == "ack-a2"]
    h.deliver(h.acc.handle(*late[1]))
    assert h.answer("ack-a2") == Acknowledged("t1", "a")


def test_a_learner_reading_a_collected_record_says_every_rm_acknowledged() -> None:
    """An acceptor that missed the outcome and the acks (down while they were recorded)
    lists the transaction as undecided; the replica that recovers it reads the others'
    compact records, and its RecordOutcome lets that acceptor collect it too."""
    h = Harness()
    h.node.found_undecided(["t1"], h.now)
    reads = [(i, m) for i, m in h.take().sends if isinstance(m, BundleRequest)]
    assert len(reads) == N
    h.deliver(Bundle("t1", 0, {}, Outcome.COMMITTED, 60_000, collected=True))
    rec = [m for _, m in h.sent if isinstance(m, RecordOutcome)]
    assert len(rec) == N and all(m.all_acked and m.outcome is Outcome.COMMITTED for m in rec)


def test_a_learner_reading_a_live_record_claims_no_acknowledgement() -> None:
    h = Harness()
    h.node.found_undecided(["t1"], h.now)
    h.take()
    h.deliver(Bundle("t1", 0, {}, Outcome.COMMITTED, 60_000))
    rec = [m for _, m in h.sent if isinstance(m, RecordOutcome)]
    assert len(rec) == N and not any(m.all_acked or m.acked for m in rec)


def test_a_recovered_outcome_carries_the_acks_the_bundles_reported() -> None:
    """An acceptor with no record when an ack was passed on alone keeps none; the replica
    that records the outcome after a recovery passes the acks the others reported, or that
    acceptor could never collect the transaction. Without the set, no acks (they would
    read as a passed-on ack, which records no outcome)."""
    h = Harness()
    h.node.found_undecided(["t1"], h.now)
    h.take()
    reg = InstanceState(RM_BALLOT, RM_BALLOT, RMSet.of({"a", "b"}))
    votes = {REGISTRAR: reg, "a": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED)}
    votes["b"] = InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED)
    h.deliver(Bundle("t1", 0, votes, Outcome.PENDING, 60_000, acked=frozenset({"a"})))
    h.deliver(Bundle("t1", 1, votes, Outcome.PENDING, 60_000, acked=frozenset({"b"})))
    rec = [m for _, m in h.sent if isinstance(m, RecordOutcome)]
    assert len(rec) == N
    assert all(m.outcome is Outcome.COMMITTED and m.participants == {"a", "b"} for m in rec)
    assert all(m.acked == {"a", "b"} and not m.all_acked for m in rec)
    # Decided from a record: no instance states, but the set that acceptor recorded (and
    # its acks) go on to the others.
    h3 = Harness()
    h3.node.found_undecided(["t3"], h3.now)
    h3.take()
    h3.deliver(
        Bundle(
            "t3", 2, {}, Outcome.COMMITTED, 60_000, acked=frozenset({"a"}), participants=frozenset({"a", "b"})
        )
    )
    rec3 = [m for _, m in h3.sent if isinstance(m, RecordOutcome)]
    assert len(rec3) == N and all(m.participants == {"a", "b"} and m.acked == {"a"} for m in rec3)
    # The set unknown: the outcome is recorded, and no acks ride with it.
    h2 = Harness()
    h2.node.found_undecided(["t2"], h2.now)
    h2.take()
    h2.deliver(Bundle("t2", 0, {}, Outcome.ABORTED, 60_000, acked=frozenset({"a"})))
    rec2 = [m for _, m in h2.sent if isinstance(m, RecordOutcome)]
    assert len(rec2) == N and all(m.participants is None and not m.acked for m in rec2)
