"""The wire's caches (rm_sdk/wire.py, rm_sdk/_streams.py): a message built or decoded
once serves every repeat, and never one that differs."""

from __future__ import annotations

import pytest

from rm_sdk import _streams, wire
from rm_sdk.core.messages import BundleRequest, Phase2a, RecordOutcome
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Ballot, InstanceState, ProtocolError, RMSet, Vote
from rm_sdk.wire import pb, states_from_pb, states_to_pb


def _encoded(states: dict[str, InstanceState]) -> list[pb.InstanceState]:
    return list(
        pb.Phase2bReply.FromString(pb.Phase2bReply(states=states_to_pb(states)).SerializeToString()).states
    )


def test_decoded_states_are_the_same_warm_or_cold_and_differ_when_the_states_do() -> None:
    wire._STATE_OF.clear()
    yes = {
        "a": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED),
        REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, RMSet.of(["a"])),
    }
    no = {
        "a": InstanceState(RM_BALLOT, RM_BALLOT, Vote.ABORTED),
        REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, RMSet.of(["a", "b"])),
    }
    promised = {"a": InstanceState(Ballot(2, "L"), RM_BALLOT, Vote.PREPARED)}
    for states in (yes, no, promised, yes, no, promised):
        assert states_from_pb(_encoded(states)) == states
    assert len(wire._STATE_OF) == 5


def test_a_malformed_state_is_refused_every_time_and_never_kept() -> None:
    wire._STATE_OF.clear()
    bad = pb.InstanceState(instance="a", mbal=pb.Ballot(round=0, leader="L"))
    for _ in range(2):
        with pytest.raises(ProtocolError, match="round 0"):
            states_from_pb([bad])
    assert not wire._STATE_OF


def test_the_state_cache_is_bounded_in_count_and_in_size() -> None:
    wire._STATE_OF.clear()
    for i in range(wire._STATE_OF_MAX + 10):
        states_from_pb(_encoded({f"rm-{i}": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED)}))
    assert len(wire._STATE_OF) <= wire._STATE_OF_MAX
    wire._STATE_OF.clear()
    big = RMSet.of([f"rm-{i:04d}" for i in range(100)])  # an encoding over the size bound
    states = {REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, big)}
    assert states_from_pb(_encoded(states)) == states
    assert not wire._STATE_OF


async def test_a_message_for_several_acceptors_is_converted_once_and_each_gets_its_own() -> None:
    links = _streams.StreamAcceptors(["127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9"], lambda _r: None)
    built: list[object] = []
    real = _streams.request_body

    def counting(msg: object) -> tuple[str, object]:
        built.append(msg)
        return real(msg)  # type: ignore[arg-type]

    _streams.request_body = counting  # type: ignore[assignment]
    try:
        vote = Phase2a("t1", RM_BALLOT, {"a": Vote.PREPARED})
        twoa = Phase2a("t1", RM_BALLOT, {REGISTRAR: RMSet.of(["a"])})
        bundle = BundleRequest("t1", 2.0)
        record = RecordOutcome("t2", wire.Outcome.COMMITTED, frozenset({"a"}), frozenset())
        for i in (0, 1):
            links.send(i, vote)
        for i in (0, 1):  # a registrar's 2a with its bundle request, acceptor by acceptor
            links.send(i, twoa)
            links.send(i, bundle)
        for i in (0, 1, 2):
            links.send(i, record)
        assert built == [vote, twoa, bundle, record]
        assert links._links is not None
        q0, q2 = links._links[0].queue, links._links[2].queue
        # The bundle request rides on its 2a.
        assert [r.WhichOneof("msg") for r in q0] == ["phase2a", "phase2a", "record_outcome"]
        assert q0[0].phase2a.proposals[0].instance == "a" and q0[1].phase2a.proposals[0].instance == REGISTRAR
        assert q0[1].then_bundle.wait_ms == 2000
        assert [r.WhichOneof("msg") for r in q2] == ["record_outcome"]
        assert len({r.seq for r in q0}) == len(q0)
        # Another message with equal content is its own message: built again.
        links.send(0, Phase2a("t1", RM_BALLOT, {"a": Vote.PREPARED}))
        assert len(built) == 5
    finally:
        _streams.request_body = real  # type: ignore[assignment]
        await links.close()
