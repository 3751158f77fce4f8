"""The acceptor's pure request handlers (``acceptor.core``): all of a request or nothing,
refusals change nothing, trace events only for durable changes."""

from __future__ import annotations

import pytest

from acceptor import core
from rm_sdk.core.messages import BundleRequest, Phase1a, Phase2a, RecordOutcome
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Ballot, ConflictError, Outcome, ProtocolError, RMSet, Vote


def test_phase2a_is_all_or_nothing() -> None:
    s = core.phase2a(0, None, Phase2a("t", RM_BALLOT, {"rm1": Vote.PREPARED}), 5)
    assert s.record is not None and s.record.first_seen_ms == 5
    assert [e.name for e in s.trace] == ["Phase2b"]
    rec = s.record
    # rm2 would be fine, rm1 conflicts at ballot 0: nothing of the request is applied.
    with pytest.raises(ConflictError):
        core.phase2a(0, rec, Phase2a("t", RM_BALLOT, {"rm2": Vote.PREPARED, "rm1": Vote.ABORTED}), 6)
    assert "rm2" not in rec.instances
    again = core.phase2a(0, rec, Phase2a("t", RM_BALLOT, {"rm1": Vote.PREPARED}), 7)
    assert again.record is None and again.trace == ()  # a duplicate writes nothing


def test_phase1a_promises_and_nacks() -> None:
    b1, b2 = Ballot(1, "x"), Ballot(2, "y")
    s = core.phase1a(1, None, Phase1a("t", b2, (REGISTRAR,)), 0)
    assert s.record is not None and s.reply.states[REGISTRAR].mbal == b2
    nack = core.phase1a(1, s.record, Phase1a("t", b1, (REGISTRAR,)), 0)
    assert nack.record is None and nack.trace == () and nack.reply.states[REGISTRAR].mbal == b2


def test_record_outcome_refuses_the_other_outcome_and_bundle_reports_it() -> None:
    s = core.phase2a(2, None, Phase2a("t", RM_BALLOT, {REGISTRAR: RMSet.of(["a"])}), 10)
    assert not core.bundle_ready(s.record)
    r = core.record_outcome(2, s.record, RecordOutcome("t", Outcome.ABORTED), 20)
    assert r.record is not None and core.bundle_ready(r.record)
    with pytest.raises(ConflictError):
        core.record_outcome(2, r.record, RecordOutcome("t", Outcome.COMMITTED), 30)
    b = core.bundle(2, r.record, BundleRequest("t"), 40)
    assert b.outcome is Outcome.ABORTED and b.age_ms == 30
    assert core.bundle(2, None, BundleRequest("t"), 40).age_ms == 0


# ---------------------------------------------------------------- collection (pitfall 8)


def _decided(participants: frozenset[str] | None, acked: frozenset[str]) -> core.TxnRecord:
    s = core.phase2a(0, None, Phase2a("t", RM_BALLOT, {"a": Vote.PREPARED, "b": Vote.PREPARED}), 1)
    r = core.record_outcome(0, s.record, RecordOutcome("t", Outcome.COMMITTED, participants, acked), 2)
    assert r.record is not None
    return r.record


def test_collectable_needs_the_outcome_the_set_and_every_acknowledgement() -> None:
    """Spec ``Collect``: only once the outcome is recorded and every RM of the set
    (``AllAcknowledged``) acknowledged; each condition alone flips the answer."""
    ab = frozenset({"a", "b"})
    assert core.collectable(_decided(ab, ab))
    assert not core.collectable(_decided(ab, frozenset({"a"})))  # b has not acknowledged
    assert not core.collectable(_decided(None, ab))  # the set is not known here
    undecided = core.phase2a(0, None, Phase2a("t", RM_BALLOT, {"a": Vote.PREPARED}), 1).record
    assert undecided is not None and not core.collectable(undecided)
    assert not core.collectable(None)
    with pytest.raises(ProtocolError):
        core.collect(_decided(ab, frozenset({"a"})))
    rec = core.collect(_decided(ab, ab))
    assert rec.collected and rec.instances == {} and rec.outcome is Outcome.COMMITTED
    assert not core.collectable(rec)  # collected once


def test_acknowledgements_accumulate_and_the_first_set_stays() -> None:
    rec = _decided(frozenset({"a", "b"}), frozenset({"a"}))
    r = core.record_outcome(0, rec, RecordOutcome("t", Outcome.COMMITTED, None, frozenset({"b"})), 3)
    assert r.record is not None and r.record.acked == {"a", "b"} and r.record.participants == {"a", "b"}
    assert core.collectable(r.record)
    # A duplicate changes nothing: no write.
    assert (
        core.record_outcome(
            0, r.record, RecordOutcome("t", Outcome.COMMITTED, None, frozenset({"b"})), 4
        ).record
        is None
    )


def test_late_messages_for_a_collected_transaction_are_answered_from_the_record() -> None:
    """Spec ``AnswerFromRecord``: a late ballot-0 vote, 1a, 2a, bundle request (the
    acceptors' side of GetOutcome) or outcome record gets the recorded outcome, and no
    handler returns a record to write: no fresh instance state."""
    rec = core.collect(_decided(frozenset({"a", "b"}), frozenset({"a", "b"})))
    vote = core.phase2a(1, rec, Phase2a("t", RM_BALLOT, {"a": Vote.ABORTED}), 9)
    one_a = core.phase1a(1, rec, Phase1a("t", Ballot(1, "x"), ("a", REGISTRAR)), 9)
    two_a = core.phase2a(1, rec, Phase2a("t", Ballot(1, "x"), {"a": Vote.ABORTED}), 9)
    for step in (vote, one_a, two_a):
        assert step.record is None
        assert step.reply.outcome is Outcome.COMMITTED and step.reply.states == {}
        assert [e.name for e in step.trace] == ["AnswerFromRecord"]
    b = core.bundle(1, rec, BundleRequest("t"), 9)
    assert b.outcome is Outcome.COMMITTED and b.states == {}
    assert core.record_outcome(1, rec, RecordOutcome("t", Outcome.COMMITTED), 9).record is None
    with pytest.raises(ConflictError):
        core.record_outcome(1, rec, RecordOutcome("t", Outcome.ABORTED), 9)


def test_passed_on_acknowledgements_record_no_outcome_and_create_nothing() -> None:
    """An ack passed on by a replica that does not own the transaction is no decision (the
    RM may have aborted on its own before any): it records no outcome, and for a
    transaction the acceptor never saw it creates no state."""
    ack = RecordOutcome("t", Outcome.ABORTED, None, frozenset({"a"}))
    assert core.record_outcome(0, None, ack, 1).record is None
    s = core.phase2a(0, None, Phase2a("t", RM_BALLOT, {"a": Vote.ABORTED}), 1)
    r = core.record_outcome(0, s.record, ack, 2)
    assert r.record is not None and r.record.outcome is Outcome.PENDING and r.record.acked == {"a"}
    # The decider's record (with the set) still records the outcome, and keeps the ack.
    d = core.record_outcome(0, r.record, RecordOutcome("t", Outcome.ABORTED, frozenset({"a"})), 3)
    assert d.record is not None and d.record.outcome is Outcome.ABORTED and core.collectable(d.record)
