"""The acceptor's pure request handlers (``acceptor.core``): all of a request or nothing,
refusals change nothing, trace events only for durable changes."""

from __future__ import annotations

import pytest

from acceptor import core
from rm_sdk.core.messages import BundleRequest, Phase1a, Phase2a, RecordOutcome
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Ballot, ConflictError, Outcome, RMSet, Vote


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
