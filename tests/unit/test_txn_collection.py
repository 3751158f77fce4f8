"""``txn show``'s collection line: what the acceptors' records say about collecting a
finished transaction (issue "Bounded state"), one case per condition."""

from __future__ import annotations

from paxos_commit.admin import TxnView
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Ballot, InstanceState, Outcome, RMSet, Vote


def _view(
    collection: dict[int, tuple[bool, frozenset[str] | None, frozenset[str]]], outcome: Outcome
) -> TxnView:
    v = TxnView("t", 3)
    for i, c in collection.items():
        v.collection[i] = c
        v.recorded[i] = outcome
        v.first_seen[i] = v.now
        v.states[i] = {}
    return v


def test_nothing_known_is_nothing_to_collect() -> None:
    assert TxnView("t", 3).collection_state() == "nothing here to collect"


def test_undecided_is_not_collectable() -> None:
    v = _view({0: (False, None, frozenset())}, Outcome.PENDING)
    assert v.collection_state() == "not collectable: undecided"


def test_decided_without_the_set_waits_for_it() -> None:
    v = _view({0: (False, None, frozenset({"a"}))}, Outcome.COMMITTED)
    assert "no acceptor has the participant set" in v.collection_state()


def test_waiting_for_acknowledgements_names_the_rms() -> None:
    rms = frozenset({"a", "b"})
    v = _view({0: (False, rms, frozenset({"a"})), 1: (False, rms, frozenset())}, Outcome.COMMITTED)
    assert v.collection_state() == "not collectable: waiting for acknowledgements from b"


def test_every_rm_acknowledged_is_collectable_and_acks_add_up_across_acceptors() -> None:
    rms = frozenset({"a", "b"})
    v = _view({0: (False, rms, frozenset({"a"})), 1: (False, None, frozenset({"b"}))}, Outcome.ABORTED)
    assert v.collection_state() == "collectable: every RM acknowledged"


def test_collected_everywhere_or_at_some() -> None:
    rms = frozenset({"a"})
    everywhere = _view({0: (True, None, frozenset()), 1: (True, None, frozenset())}, Outcome.COMMITTED)
    assert everywhere.collection_state() == "collected at acceptors 0, 1"
    some = _view({0: (True, None, frozenset()), 2: (False, rms, frozenset({"a"}))}, Outcome.COMMITTED)
    assert some.collection_state() == "collected at 0; collectable: every RM acknowledged"


def test_collected_at_some_means_every_rm_acknowledged() -> None:
    # The acks have reached acceptors 0 and 1 (they collected) but not yet acceptor 2, and
    # the collected ones no longer show the acks: not "waiting for acknowledgements".
    rms = frozenset({"a", "b"})
    v = _view(
        {0: (True, None, frozenset()), 1: (True, None, frozenset()), 2: (False, rms, frozenset())},
        Outcome.COMMITTED,
    )
    assert v.collection_state() == "collected at 0, 1; every RM acknowledged (acceptor 2 not told yet)"
    v.collection[0] = (False, rms, frozenset())  # none collected: the acks are missing
    v.collection[1] = (False, rms, frozenset({"a"}))
    assert v.collection_state() == "not collectable: waiting for acknowledgements from b"


def test_the_outcome_implied_by_the_votes_counts_as_decided() -> None:
    # No outcome recorded yet, but the registrar's set and every vote are chosen: decided.
    v = TxnView("t", 1)
    st = {
        REGISTRAR: InstanceState(Ballot(0, ""), RM_BALLOT, RMSet.of(["a"])),
        "a": InstanceState(Ballot(0, ""), RM_BALLOT, Vote.PREPARED),
    }
    v.states[0] = st
    v.first_seen[0] = v.now
    v.recorded[0] = Outcome.PENDING
    v.collection[0] = (False, None, frozenset())
    assert v.outcome is Outcome.COMMITTED
    assert "no acceptor has the participant set" in v.collection_state()
