"""Operators on the pure core: an abort an admin leader's ballot chose is explained as
OPERATOR; "recover now" (``CoordinatorNode.retry``, ``paxos-commit txn retry``): it starts the ballots a timeout would have started, earlier, and nothing
else (higher ballots are safe at any time; pitfall 9's wait is for progress only)."""

from __future__ import annotations

from rm_sdk.ballots import Tally
from rm_sdk.core.coordinator import CoordinatorNode, CoordinatorTimeouts
from rm_sdk.core.leader import evaluate
from rm_sdk.core.learner import LearnerTimeouts
from rm_sdk.core.messages import AbortCause, Begin, BundleRequest, Commit, Join, Phase1a
from rm_sdk.core.owner import OwnerTimeouts
from rm_sdk.protocol import (
    NO_SET,
    REGISTRAR,
    RM_BALLOT,
    Ballot,
    InstanceState,
    Outcome,
    ProtocolError,
    RMSet,
    Vote,
)

TIMEOUTS = CoordinatorTimeouts(
    owner=OwnerTimeouts(vote_timeout=60.0, txn_timeout=600.0, answer_timeout=1.0),
    learner=LearnerTimeouts(recovery_timeout=60.0, answer_timeout=1.0, max_attempts=5),
)


def _node() -> CoordinatorNode:
    return CoordinatorNode("c1", 3, TIMEOUTS)


def test_owner_retry_starts_recovery_ballots_before_the_vote_timeout() -> None:
    node = _node()
    node.request("t1", Begin("x"), 0.0)
    node.request("t2", Join("x", "rm1"), 0.0)
    node.request("t3", Commit("x"), 0.0)
    node.take_ready()
    what = node.retry("x", 1.0)
    assert what == "recovery ballots started by the owner"
    sends = node.take_ready().sends
    p1a = [m for _, m in sends if isinstance(m, Phase1a)]
    assert len(p1a) == 3 and all(m.ballot.round >= 1 and m.ballot.leader == "c1" for m in p1a)
    assert set(p1a[0].instances) == {REGISTRAR, "rm1"}


def test_owner_retry_while_registration_open_does_nothing() -> None:
    node = _node()
    node.request("t1", Begin("x"), 0.0)
    node.take_ready()
    assert "registration is open" in node.retry("x", 1.0)
    assert not node.take_ready().sends


def test_other_replica_retry_reads_the_acceptors_at_once() -> None:
    node = _node()
    what = node.retry("y", 0.0)
    assert what.startswith("reading the acceptors")
    sends = node.take_ready().sends
    assert sorted(i for i, m in sends if isinstance(m, BundleRequest)) == [0, 1, 2]
    assert node.learners["y"].first_asked <= -TIMEOUTS.learner.recovery_timeout


def test_retry_refuses_a_malformed_id() -> None:
    node = _node()
    try:
        node.retry("bad id", 0.0)
    except ProtocolError as exc:
        assert "transaction id" in str(exc)
    else:
        raise AssertionError("accepted a malformed id")


def _tally(states: dict[str, InstanceState]) -> Tally:
    t = Tally(3)
    for i in range(2):
        t.add(i, states)
    return t


def test_an_admin_ballots_abort_is_the_operators() -> None:
    admin, other = Ballot(1, "admin.abc"), Ballot(1, "coordinator-0.x")
    s = RMSet.of(["a", "b"])
    base = {
        REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, s),
        "a": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED),
    }
    d = evaluate(_tally({**base, "b": InstanceState(admin, admin, Vote.ABORTED)}), None)
    assert d is not None and d.outcome is Outcome.ABORTED
    assert d.cause is AbortCause.OPERATOR and d.rm_id == "b" and "admin.abc" in d.reason
    d2 = evaluate(_tally({**base, "b": InstanceState(other, other, Vote.ABORTED)}), None)
    assert d2 is not None and d2.cause is AbortCause.VOTE_TIMEOUT
    d3 = evaluate(_tally({REGISTRAR: InstanceState(admin, admin, NO_SET)}), None)
    assert d3 is not None and d3.cause is AbortCause.OPERATOR
    d4 = evaluate(_tally({REGISTRAR: InstanceState(other, other, NO_SET)}), None)
    assert d4 is not None and d4.cause is AbortCause.COORDINATOR_FAILED


def test_list_owned_names_what_this_replica_recovers_for_others() -> None:
    from coordinator.operations import RecentOutcomes, list_owned
    from rm_sdk.core.messages import Bundle
    from rm_sdk.wire import pb

    node = _node()
    node.retry("lost", 0.0)
    node.take_ready()
    s = RMSet.of(["a"])
    for i in range(3):
        node.acceptor_reply(
            Bundle("lost", i, {REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, s)}, age_ms=5), 0.1
        )
    assert node.learners["lost"].recovery is not None  # ballots started at once (no recovery timeout)
    reply = list_owned(node, RecentOutcomes(), pb.ListOwnedRequest(), 0.2)
    assert list(reply.recovering) == ["lost"] and not reply.owned
    assert list(list_owned(node, RecentOutcomes(), pb.ListOwnedRequest(txn_id="other"), 0.2).recovering) == []
