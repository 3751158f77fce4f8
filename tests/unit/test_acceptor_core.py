"""The acceptor's pure request handlers (``acceptor.core``): all of a request or nothing,
refusals change nothing, trace events only for durable changes."""

from __future__ import annotations

import pytest

from acceptor import core
from rm_sdk.core.messages import BundleRequest, OutcomeRecorded, Phase1a, Phase2a, RecordOutcome
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


def test_outcome_recorded_names_the_acks_held_after_the_step() -> None:
    """The reply tells the coordinator which acknowledgements are durable here (the whole
    union, never one that is not stored): an RM's ack is answered once a majority hold it."""
    ack_a = RecordOutcome("t", Outcome.COMMITTED, None, frozenset({"a"}))
    # Unknown transaction: nothing created, so nothing held.
    r = core.record_outcome(0, None, ack_a, 1)
    assert r.reply == OutcomeRecorded("t", 0) and not r.reply.holds_ack("a")
    s = core.phase2a(0, None, Phase2a("t", RM_BALLOT, {"a": Vote.PREPARED, "b": Vote.PREPARED}), 1)
    r = core.record_outcome(0, s.record, ack_a, 2)
    assert r.reply.acked == {"a"} and not r.reply.collected
    full = RecordOutcome("t", Outcome.COMMITTED, frozenset({"a", "b"}), frozenset({"b"}))
    r2 = core.record_outcome(0, r.record, full, 3)
    assert r2.reply.acked == {"a", "b"}  # the union, not only the request's
    again = core.record_outcome(0, r2.record, ack_a, 4)  # nothing new: still the union
    assert again.record is None and again.reply.acked == {"a", "b"}
    assert r2.record is not None
    gone = core.collect(r2.record)
    late = core.record_outcome(0, gone, RecordOutcome("t", Outcome.COMMITTED, None, frozenset({"c"})), 5)
    assert late.record is None and late.reply.collected and late.reply.holds_ack("c")
    rec = core.record_outcome(0, gone, RecordOutcome("t", Outcome.COMMITTED, frozenset({"a"})), 5)
    assert rec.reply == OutcomeRecorded("t", 0, collected=True)


def test_a_record_that_says_every_rm_acknowledged_makes_a_lagging_acceptor_collectable() -> None:
    """An acceptor that has the votes but missed the outcome and every ack: the record of a
    decider that read a collected record elsewhere (``all_acked``) lets it collect."""
    s = core.phase2a(2, None, Phase2a("t", RM_BALLOT, {"a": Vote.PREPARED}), 1)
    plain = core.record_outcome(2, s.record, RecordOutcome("t", Outcome.COMMITTED, frozenset({"a", "b"})), 2)
    assert plain.record is not None and not core.collectable(plain.record)
    told = core.record_outcome(
        2, plain.record, RecordOutcome("t", Outcome.COMMITTED, None, all_acked=True), 3
    )
    assert told.record is not None and core.collectable(told.record) and told.reply.acked == {"a", "b"}
    # The set unknown here and in the request: nobody is left to wait for.
    unknown = core.record_outcome(2, s.record, RecordOutcome("t", Outcome.COMMITTED, None, all_acked=True), 3)
    assert unknown.record is not None and core.collectable(unknown.record)
    # A collected record's bundle says so (what lets a decider tell the others).
    b = core.bundle(2, core.collect(told.record), BundleRequest("t"), 4)
    assert b.collected and b.outcome is Outcome.COMMITTED
    live = core.bundle(2, told.record, BundleRequest("t"), 4)
    assert not live.collected and live.acked == {"a", "b"}  # the acks it holds, reported
    assert live.participants == {"a", "b"}  # and the set recorded with the outcome


def test_record_outcome_wire_carries_acks_and_collection() -> None:
    """The new wire fields survive the round trip (and are pinned by number)."""
    from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2 as pb
    from rm_sdk.wire import bundle_from_pb, record_outcome_from_pb, record_outcome_to_pb

    m = RecordOutcome("t", Outcome.ABORTED, frozenset({"a"}), frozenset({"a"}), all_acked=True)
    assert record_outcome_from_pb(record_outcome_to_pb(m)) == m
    assert pb.RecordOutcomeRequest.DESCRIPTOR.fields_by_name["all_acknowledged"].number == 6
    assert pb.RecordOutcomeReply.DESCRIPTOR.fields_by_name["acknowledged"].number == 2
    assert pb.RecordOutcomeReply.DESCRIPTOR.fields_by_name["collected"].number == 3
    assert pb.Phase2bBundle.DESCRIPTOR.fields_by_name["collected"].number == 7
    assert pb.Phase2bBundle.DESCRIPTOR.fields_by_name["acknowledged"].number == 8
    assert pb.Phase2bBundle.DESCRIPTOR.fields_by_name["participants"].number == 9
    assert pb.Phase2bBundle.DESCRIPTOR.fields_by_name["participants_known"].number == 10
    b = bundle_from_pb(
        1, pb.Phase2bBundle(txn_id="t", outcome=pb.OUTCOME_COMMITTED, collected=True, acknowledged=["a"])
    )
    assert b.collected and b.acceptor == 1 and b.acked == {"a"} and b.participants is None
    known = bundle_from_pb(1, pb.Phase2bBundle(txn_id="t", participants_known=True))
    assert known.participants == frozenset()  # an empty set is a set


def test_the_writers_sql_names_every_column_of_the_schema() -> None:
    """The group commit writes through SQL text (acceptor/storage.py ``_HotSQL``): its
    column lists must be the tables' own, in the schema's order, or a schema change would
    leave columns unwritten (or written from the wrong field)."""
    from acceptor.storage import _INSTANCE_COLUMNS, _TXN_COLUMNS, _HotSQL, instance_table, txn_table

    assert tuple(c.name for c in txn_table.c) == _TXN_COLUMNS
    assert tuple(c.name for c in instance_table.c) == _INSTANCE_COLUMNS
    lite, pg = _HotSQL("qmark"), _HotSQL("pyformat")
    assert lite.upsert_txn.count("?") == len(_TXN_COLUMNS) and "%s" not in lite.upsert_txn
    assert pg.upsert_instance.count("%s") == len(_INSTANCE_COLUMNS)
    assert (
        "ON CONFLICT (txn_id, instance) DO UPDATE SET mbal_round = excluded.mbal_round" in pg.upsert_instance
    )
    assert "txn_id = excluded" not in lite.upsert_txn  # keys are never rewritten
    assert lite.load_collected(3).endswith("IN (?, ?, ?)")
