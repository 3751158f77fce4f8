"""Issue 9: ballot rounds have one limit used everywhere, and no single message can wedge
an instance (a 1a at round 2^62 used to be promised, and the only ballot above it refused)."""

from __future__ import annotations

import pytest

from acceptor.rules import check_phase1a, check_phase2a, phase1b, phase2b
from rm_sdk.ballots import BallotRun, BallotSource, next_ballot
from rm_sdk.protocol import (
    MAX_ROUND,
    MAX_ROUND_STEP,
    RM_BALLOT,
    Ballot,
    ConflictError,
    InstanceState,
    ProtocolError,
    Vote,
    check_ballot,
)
from rm_sdk.wire import ballot_from_pb, pb


def test_a_round_far_above_the_promise_is_refused_before_anything_is_stored() -> None:
    st = InstanceState()
    with pytest.raises(ConflictError):
        phase1b(st, Ballot(2**62, "attacker"))
    with pytest.raises(ConflictError):
        phase2b(st, Ballot(MAX_ROUND_STEP + 1, "attacker"), Vote.ABORTED)
    # Within the step: promised, and the next leader's ballot still overtakes it.
    top = phase1b(st, Ballot(MAX_ROUND_STEP, "a"))
    assert top.mbal == Ballot(MAX_ROUND_STEP, "a")
    nxt = next_ballot("b", top.mbal)
    assert phase1b(top, nxt).mbal == nxt


def test_one_limit_on_every_path() -> None:
    over = Ballot(MAX_ROUND + 1, "x")
    for check in (
        lambda: check_ballot(over),
        lambda: check_phase1a(over, ["rm"]),
        lambda: check_phase2a(over, {"rm": Vote.ABORTED}, 1),
        lambda: ballot_from_pb(pb.Ballot(round=MAX_ROUND + 1, leader="x")),
        lambda: BallotRun(over, ["rm"], 3),
        lambda: next_ballot("x", Ballot(MAX_ROUND, "y")),
    ):
        with pytest.raises(ProtocolError, match="out of range"):
            check()
    assert not over.is_leader_ballot
    assert check_ballot(Ballot(MAX_ROUND, "x")).is_leader_ballot


def test_leader_ids_are_validated_alike_on_every_path() -> None:
    bad = Ballot(1, "has space")
    for check in (
        lambda: check_ballot(bad),
        lambda: check_phase1a(bad, ["rm"]),
        lambda: check_phase2a(bad, {"rm": Vote.ABORTED}, 1),
        lambda: ballot_from_pb(pb.Ballot(round=1, leader="has space")),
        lambda: BallotRun(bad, ["rm"], 3),
        lambda: BallotSource("has space"),
    ):
        with pytest.raises(ProtocolError, match="malformed leader id"):
            check()
    with pytest.raises(ProtocolError, match="round 0"):
        check_ballot(Ballot(0, "x"))
    assert check_ballot(RM_BALLOT) == RM_BALLOT
