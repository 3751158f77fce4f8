"""An operator's "recover now" (``CoordinatorNode.retry``, ``paxos-commit txn retry``) on
the pure core: it starts the ballots a timeout would have started, earlier, and nothing
else (higher ballots are safe at any time; pitfall 9's wait is for progress only)."""

from __future__ import annotations

from rm_sdk.core.coordinator import CoordinatorNode, CoordinatorTimeouts
from rm_sdk.core.learner import LearnerTimeouts
from rm_sdk.core.messages import Begin, BundleRequest, Commit, Join, Phase1a
from rm_sdk.core.owner import OwnerTimeouts
from rm_sdk.protocol import REGISTRAR, ProtocolError

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
