"""The acceptor as pure request handlers: (durable record, request) -> (new record, reply,
trace events).

One handler per request of :mod:`rm_sdk.core.messages` (``Phase1a``, ``Phase2a``,
``RecordOutcome``, ``BundleRequest``). Each checks the request, applies the rules of
:mod:`acceptor.rules` to every instance it names, all of them or none (a refusal raises and
changes nothing), and says what to persist before the reply leaves (DESIGN.md pitfall 1).
The gRPC service runs them inside one storage step; the simulator and the golden
scenarios run them over in-memory records. No I/O, clock or randomness here: the caller
passes the time (milliseconds on its wall clock, for ``first_seen_ms`` and bundle ages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from acceptor.rules import bundle_complete, check_phase1a, check_phase2a, phase1b, phase2b
from rm_sdk.core.messages import (
    Bundle,
    BundleRequest,
    OutcomeRecorded,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    RecordOutcome,
)
from rm_sdk.core.ready import TraceEvent, trace_ballot, trace_value
from rm_sdk.protocol import (
    ConflictError,
    Instance,
    InstanceState,
    Outcome,
    ProtocolError,
    validate_id,
)

__all__ = [
    "Step",
    "TxnRecord",
    "bundle",
    "bundle_ready",
    "collect",
    "collectable",
    "phase1a",
    "phase2a",
    "record_outcome",
]


@dataclass(frozen=True)
class TxnRecord:
    """One transaction's durable state at one acceptor.

    Collection (spec ``Collect``, DESIGN.md pitfall 8): ``participants`` is the registrar's
    set as a decider reported it (None: not known here) and ``acked`` the RMs that
    acknowledged applying the outcome. A ``collected`` record is the compact outcome record
    that stays after collection: no instances, only the outcome, from which every late
    message is answered (spec ``AnswerFromRecord``)."""

    first_seen_ms: int
    instances: Mapping[Instance, InstanceState] = field(default_factory=dict)
    outcome: Outcome = Outcome.PENDING
    participants: frozenset[str] | None = None
    acked: frozenset[str] = frozenset()
    collected: bool = False


def collectable(rec: TxnRecord | None) -> bool:
    """Spec ``Collect``'s condition at this acceptor: the outcome is recorded here and every
    RM of the registrar's set acknowledged it (``AllAcknowledged``). The set must be known:
    a transaction whose set no decider reported stays live (visible, never dropped)."""
    return (
        rec is not None
        and not rec.collected
        and rec.outcome is not Outcome.PENDING
        and rec.participants is not None
        and rec.participants <= rec.acked
    )


def collect(rec: TxnRecord) -> TxnRecord:
    """Spec ``Collect``: the compact outcome record that replaces ``rec``'s state."""
    if not collectable(rec):
        raise ProtocolError("collect needs a decided transaction every participant acknowledged")
    return TxnRecord(first_seen_ms=rec.first_seen_ms, outcome=rec.outcome, collected=True)


def _from_record(acceptor: int, rec: TxnRecord, txn_id: str, kind: str) -> TraceEvent:
    return TraceEvent(
        "AnswerFromRecord", txn_id, {"acc": acceptor, "outcome": rec.outcome.value, "msg": kind}
    )


@dataclass(frozen=True)
class Step:
    """What a handler asks of its caller: persist ``record`` (None: nothing changed), then
    send ``reply`` and log ``trace``."""

    record: TxnRecord | None
    reply: Phase1b | Phase2b | OutcomeRecorded
    trace: tuple[TraceEvent, ...] = ()


def _apply_each(
    rec: TxnRecord | None,
    now_ms: int,
    instances: Sequence[Instance],
    rule: Callable[[Instance, InstanceState], InstanceState],
) -> tuple[TxnRecord | None, dict[Instance, InstanceState], Outcome, dict[Instance, InstanceState]]:
    """Apply ``rule`` to each instance of one request: (new record or None, the new states
    (the reply), the recorded outcome, the states before). A rule that raises leaves
    everything unchanged: all of a request or nothing."""
    base = rec or TxnRecord(first_seen_ms=now_ms)
    before = {ins: base.instances.get(ins, InstanceState()) for ins in instances}
    after = {ins: rule(ins, st) for ins, st in before.items()}
    if rec is not None and after == before:
        return None, after, base.outcome, before  # nothing changed: no write
    return replace(base, instances={**base.instances, **after}), after, base.outcome, before


def phase1a(acceptor: int, rec: TxnRecord | None, msg: Phase1a, now_ms: int) -> Step:
    """Spec ``Phase1b`` for every instance of a leader's 1a: promise ``msg.ballot`` where
    it is above ``mbal``; the reply's states are a promise or a NACK (pitfall 5)."""
    txn_id = validate_id("transaction id", msg.txn_id)
    bal = msg.ballot
    check_phase1a(bal, msg.instances)
    if rec is not None and rec.collected:
        # Spec AnswerFromRecord: the recorded outcome, no promise, no new state.
        return Step(
            None, Phase1b(txn_id, acceptor, {}, rec.outcome), (_from_record(acceptor, rec, txn_id, "1a"),)
        )
    new, after, outcome, before = _apply_each(rec, now_ms, msg.instances, lambda _ins, st: phase1b(st, bal))
    promised = {i: st for i, st in before.items() if st.mbal < bal}
    trace: tuple[TraceEvent, ...] = ()
    if promised:
        trace = (
            TraceEvent("Phase1b", txn_id, {
                "acc": acceptor, "bal": trace_ballot(bal),
                "promised": [{"ins": i, "bal": trace_ballot(st.bal), "val": trace_value(st.val)}
                             for i, st in sorted(promised.items())],
            }),
        )  # fmt: skip
    return Step(new, Phase1b(txn_id, acceptor, after, outcome), trace)


def phase2a(acceptor: int, rec: TxnRecord | None, msg: Phase2a, now_ms: int) -> Step:
    """Spec ``Phase2b`` for every proposal of a 2a (an RM's vote, the registrar's set, or a
    leader's proposals). A different value at a ballot already accepted raises
    :class:`~rm_sdk.protocol.ConflictError` and changes nothing."""
    txn_id = validate_id("transaction id", msg.txn_id)
    bal = msg.ballot
    proposals = msg.proposals
    check_phase2a(bal, proposals, len(proposals))
    if rec is not None and rec.collected:
        # Spec AnswerFromRecord (a late ballot-0 vote among them): nothing is accepted.
        return Step(
            None, Phase2b(txn_id, acceptor, {}, rec.outcome), (_from_record(acceptor, rec, txn_id, "2a"),)
        )
    new, after, outcome, before = _apply_each(
        rec, now_ms, list(proposals), lambda ins, st: phase2b(st, bal, proposals[ins])
    )
    accepted = [i for i in proposals if after[i].bal == bal and before[i].bal != bal]
    trace: tuple[TraceEvent, ...] = ()
    if accepted:
        trace = (
            TraceEvent("Phase2b", txn_id, {
                "acc": acceptor, "bal": trace_ballot(bal),
                "accepted": [{"ins": i, "val": trace_value(proposals[i])} for i in sorted(accepted)],
            }),
        )  # fmt: skip
    return Step(new, Phase2b(txn_id, acceptor, after, outcome), trace)


def record_outcome(acceptor: int, rec: TxnRecord | None, msg: RecordOutcome, now_ms: int) -> Step:
    """Record a decided outcome (pitfall 8: later questions are answered from it). Another
    outcome already recorded raises :class:`~rm_sdk.protocol.ConflictError`. The reply
    names the acknowledgements held here once the step is durable (never more): the
    coordinator tells an RM its acknowledgement is taken only when a majority hold it."""
    txn_id = validate_id("transaction id", msg.txn_id)
    outcome = msg.outcome
    if outcome is Outcome.PENDING:
        raise ProtocolError("record_outcome needs OUTCOME_COMMITTED or OUTCOME_ABORTED")
    if msg.participants is None and msg.acked and (rec is None or rec.outcome is Outcome.PENDING):
        # Acknowledgements passed on alone (an RM's, via a replica that does not own the
        # transaction) carry no decision: they add to the acks of a known transaction and
        # record no outcome, and for an unknown one they create nothing (and hold none).
        if rec is None:
            return Step(None, OutcomeRecorded(txn_id, acceptor))
        if rec.collected or msg.acked <= rec.acked:
            return Step(None, _recorded(acceptor, txn_id, rec))
        new = replace(rec, acked=rec.acked | msg.acked)
        return Step(new, _recorded(acceptor, txn_id, new))
    base = rec or TxnRecord(first_seen_ms=now_ms)
    if base.outcome is not Outcome.PENDING and base.outcome is not outcome:
        raise ConflictError(
            f"transaction {txn_id} already recorded {base.outcome.value}; refusing {outcome.value}"
        )
    if base.collected:
        return Step(None, _recorded(acceptor, txn_id, base))
    participants = base.participants if base.participants is not None else msg.participants
    acked = base.acked | msg.acked
    if msg.all_acked:
        # Collected at another acceptor, so every RM of the set acknowledged (spec
        # AllAcknowledged is one fact of the transaction, not of an acceptor).
        participants = participants if participants is not None else frozenset()
        acked = acked | participants
    new = replace(base, outcome=outcome, participants=participants, acked=acked)
    if rec is not None and new == rec:
        return Step(None, _recorded(acceptor, txn_id, rec))
    return Step(new, _recorded(acceptor, txn_id, new))


def _recorded(acceptor: int, txn_id: str, rec: TxnRecord) -> OutcomeRecorded:
    if rec.collected:
        return OutcomeRecorded(txn_id, acceptor, collected=True)
    return OutcomeRecorded(txn_id, acceptor, acked=rec.acked)


def bundle_ready(rec: TxnRecord | None) -> bool:
    """Whether a waiting :class:`BundleRequest` is answered now: this acceptor's 2b's let a
    leader decide (if a majority agrees), or an outcome is recorded."""
    if rec is None:
        return False
    return rec.outcome is not Outcome.PENDING or bundle_complete(rec.instances)


def bundle(acceptor: int, rec: TxnRecord | None, msg: BundleRequest, now_ms: int) -> Bundle:
    """The paper's bundled 2b's (section 4): every instance state of the transaction here,
    with the recorded outcome and how long this acceptor has known it (0: never). Reads
    only; the caller decides when to answer (at once, :func:`bundle_ready`, or when the
    request's wait ends)."""
    txn_id = validate_id("transaction id", msg.txn_id)
    if rec is None:
        return Bundle(txn_id, acceptor, {})
    return Bundle(
        txn_id,
        acceptor,
        dict(rec.instances),
        rec.outcome,
        max(0, now_ms - rec.first_seen_ms),
        rec.collected,
        rec.acked,
        rec.participants,
    )
