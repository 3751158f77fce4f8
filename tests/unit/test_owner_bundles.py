"""Regression: an owner that gets a complete 2b bundle from one acceptor while another
stays silent must not ask the first again (it answers at once, again and again: a hot
loop until the answer timeout). Found by the golden scenario ``silent_acceptor``."""

from __future__ import annotations

from rm_sdk.core.coordinator import CoordinatorNode
from rm_sdk.core.messages import Begin, Bundle, BundleRequest, Commit, Join
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, InstanceState, RMSet, Vote


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
