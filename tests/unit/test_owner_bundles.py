"""Regression: an owner that gets a complete 2b bundle from one acceptor while another
stays silent must not ask the first again (it answers at once, again and again: a hot
loop until the answer timeout). Found by the golden scenario ``silent_acceptor``."""

from __future__ import annotations

from rm_sdk.core.coordinator import CoordinatorNode
from rm_sdk.core.messages import Begin, Bundle, BundleRequest, Commit, Failed, Join
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, InstanceState, Outcome, RMSet, Vote


def test_a_complete_bundle_is_not_asked_for_again() -> None:
    node = CoordinatorNode("c0.1", 3)
    node.request("app", Begin("t1"), 0.0)
    node.request("rm1", Join("t1", "rm1"), 0.0)
    node.request("app", Commit("t1"), 0.0)
    node.take_ready()
    complete = {
        REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, RMSet.of(["rm1"])),
        "rm1": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED),
    }
    node.acceptor_reply(Bundle("t1", 0, complete), 0.1)
    ready = node.take_ready()
    assert not [s for s in ready.sends if isinstance(s[1], BundleRequest)], ready.sends
    # An incomplete bundle (its wait ended) is asked for again, for the rest of the vote timeout.
    node.acceptor_reply(Bundle("t1", 1, {REGISTRAR: complete[REGISTRAR]}), 0.2)
    assert [i for i, m in node.take_ready().sends if isinstance(m, BundleRequest)] == [1]


def _owner_with_joined_rm() -> CoordinatorNode:
    node = CoordinatorNode("c0.1", 3)
    node.request("app", Begin("t2"), 0.0)
    node.request("rm", Join("t2", "victim"), 0.0)
    node.request("app", Commit("t2"), 0.0)
    node.take_ready()
    return node


def test_an_owner_never_commits_on_someone_elses_registrar_set() -> None:
    """Issue 9: a forged ballot-0 registrar 2a with an empty set reached every acceptor
    before the owner's own (which they refused: "ballot 0 already accepted set{}"). The
    empty set, all of whose (zero) RMs prepared, would commit without the joined RM's
    vote; the owner refuses to decide rather than commit on a set it did not propose."""
    node = _owner_with_joined_rm()
    forged = {REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, RMSet.of([]))}
    for acc in range(3):
        node.acceptor_reply(Bundle("t2", acc, forged), 0.1)
    ready = node.take_ready()
    assert not ready.decided, ready.decided
    replies = [m for tok, m in ready.replies if tok == "app"]
    assert replies and all(isinstance(m, Failed) for m in replies), replies
    assert "did not propose" in str(replies[0].error) or "not set{victim}" in str(replies[0].error)
    # Later questions are refused too, and no timer spins.
    node.request("app2", Commit("t2"), 0.2)
    assert all(isinstance(m, Failed) for _, m in node.take_ready().replies)
    node.tick(100.0)
    assert not node.take_ready().decided


def test_an_owner_ignores_a_recorded_commit_that_contradicts_the_votes() -> None:
    """Issue 9: one forged RecordOutcome(COMMITTED) at one acceptor, after the joined RM
    voted aborted at a majority: the owner decides from the votes (aborted), not the record."""
    node = _owner_with_joined_rm()
    mine = RMSet.of(["victim"])
    states = {
        REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, mine),
        "victim": InstanceState(RM_BALLOT, RM_BALLOT, Vote.ABORTED),
    }
    node.acceptor_reply(Bundle("t2", 1, states), 0.1)
    node.acceptor_reply(Bundle("t2", 0, states, Outcome.COMMITTED), 0.1)
    node.acceptor_reply(Bundle("t2", 2, states), 0.1)
    decided = node.take_ready().decided
    assert [d.outcome for _, d, _ in decided] == [Outcome.ABORTED], decided
