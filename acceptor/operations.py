"""Operators' reads of an acceptor's state (``InspectTransaction``, ``ListTransactions``).

They change nothing and never go through the protocol's write path: one transaction is
read like a 2b bundle (from the committed cache or storage), a list is one query on the
store's own connection thread, in order with its group commits. Malformed requests raise
:class:`~rm_sdk.protocol.ProtocolError` (INVALID_ARGUMENT) before touching storage.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from acceptor.core import Step, TxnRecord
from acceptor.storage import AcceptorStore, collected_table, decode_value, instance_table, txn_table
from rm_sdk import otel
from rm_sdk.core.messages import Phase1b, Phase2b
from rm_sdk.protocol import Ballot, Instance, InstanceState, Outcome, ProtocolError, validate_id
from rm_sdk.wire import outcome_from_pb, outcome_to_pb, pb, states_to_pb

__all__ = ["MAX_LIST", "inspect_transaction", "list_transactions", "record_to_pb", "step_span"]

#: Cap on one ListTransactions answer.
MAX_LIST = 10_000


def record_to_pb(txn_id: str, rec: TxnRecord | None, with_states: bool = True) -> pb.TransactionRecord:
    if rec is None:
        return pb.TransactionRecord(txn_id=txn_id, known=False)
    states = dict(sorted(rec.instances.items())) if with_states else {}
    return pb.TransactionRecord(
        txn_id=txn_id,
        known=True,
        first_seen_unix_ms=rec.first_seen_ms,
        outcome=outcome_to_pb(rec.outcome),
        states=states_to_pb(states),
        collected=rec.collected,
        participants_known=rec.participants is not None,
        participants=sorted(rec.participants or ()),
        acknowledged=sorted(rec.acked),
    )


async def inspect_transaction(
    store: AcceptorStore, request: pb.InspectTransactionRequest
) -> pb.InspectTransactionReply:
    txn_id = validate_id("transaction id", request.txn_id)
    rec = await store.read(txn_id)
    return pb.InspectTransactionReply(
        acceptor_id=store.acceptor_id, record=record_to_pb(txn_id, rec), now_unix_ms=store.now_ms()
    )


def _outcome_filter(value: int) -> Outcome | None:
    if value == pb.OUTCOME_UNSPECIFIED:
        return None
    if value not in pb.Outcome.values():
        raise ProtocolError(f"unknown outcome filter {value}: use OUTCOME_PENDING, _COMMITTED or _ABORTED")
    return outcome_from_pb(pb.Outcome.ValueType(value))


async def list_transactions(
    store: AcceptorStore, request: pb.ListTransactionsRequest
) -> pb.ListTransactionsReply:
    outcome = _outcome_filter(request.outcome)
    rm_id = validate_id("rm id", request.rm_id) if request.rm_id else None
    limit = min(request.limit or 1000, MAX_LIST)
    now = store.now_ms()
    cutoff = now - request.older_than_ms
    with_states = request.with_states

    def query(conn: Connection) -> tuple[list[tuple[str, TxnRecord]], bool]:
        q = sa.select(txn_table).where(txn_table.c.first_seen_ms <= cutoff)
        if outcome is not None:
            q = q.where(txn_table.c.outcome == outcome.value)
        if rm_id is not None:
            q = q.where(
                sa.exists().where(
                    (instance_table.c.txn_id == txn_table.c.txn_id) & (instance_table.c.instance == rm_id)
                )
            )
        q = q.order_by(txn_table.c.first_seen_ms.desc(), txn_table.c.txn_id).limit(limit + 1)
        rows = conn.execute(q).all()
        truncated = len(rows) > limit
        rows = rows[:limit]
        states: dict[str, dict[Instance, InstanceState]] = {r.txn_id: {} for r in rows}
        if with_states and rows:
            ids = list(states)
            for i in range(0, len(ids), 500):  # bounded IN lists
                chunk = ids[i : i + 500]
                for r in conn.execute(sa.select(instance_table).where(instance_table.c.txn_id.in_(chunk))):
                    states[r.txn_id][r.instance] = InstanceState(
                        mbal=Ballot(r.mbal_round, r.mbal_leader),
                        bal=Ballot(r.bal_round, r.bal_leader),
                        val=decode_value(r.val),
                    )
        found = [
            (
                r.txn_id,
                TxnRecord(
                    r.first_seen_ms,
                    states[r.txn_id],
                    Outcome(r.outcome),
                    participants=None if r.participants is None else frozenset(json.loads(r.participants)),
                    acked=frozenset(json.loads(r.acked)) if r.acked else frozenset(),
                ),
            )
            for r in rows
        ]
        # Collected transactions keep only their compact outcome record: listed too (newest
        # collections first, after the live ones), unless a filter needs what is gone (an
        # RM's instance). Their first-seen time is gone with it: the collection time, which
        # is later, stands in for the age filter.
        room = limit - len(found)
        if rm_id is None and room > 0 and outcome is not Outcome.PENDING:
            c = collected_table.c
            cq = sa.select(c.txn_id, c.outcome, c.collected_ms).where(c.collected_ms <= cutoff)
            if outcome is not None:
                cq = cq.where(c.outcome == outcome.value)
            crow = conn.execute(cq.order_by(c.collected_ms.desc(), c.txn_id).limit(room + 1)).all()
            truncated = truncated or len(crow) > room
            found += [
                (r.txn_id, TxnRecord(r.collected_ms, outcome=Outcome(r.outcome), collected=True))
                for r in crow[:room]
            ]
        return found, truncated

    found, truncated = await store.query(query)
    return pb.ListTransactionsReply(
        acceptor_id=store.acceptor_id,
        transactions=[record_to_pb(t, rec, with_states) for t, rec in found],
        now_unix_ms=now,
        truncated=truncated,
    )


def step_span(acceptor_id: int, txn_id: str, step: Step, start_ns: int) -> None:
    """One OpenTelemetry span for one durable step (only called when tracing is on)."""
    kind = (
        "phase1b"
        if isinstance(step.reply, Phase1b)
        else "phase2b"
        if isinstance(step.reply, Phase2b)
        else "record_outcome"
    )
    attrs: dict[str, object] = {"paxos.acceptor": acceptor_id, "paxos.durable_write": step.record is not None}
    for ev in step.trace:
        bal = ev.fields.get("bal")
        if bal is not None:
            attrs["paxos.ballot"] = f"{bal[0]}/{bal[1]}" if bal[1] else str(bal[0])
        got = ev.fields.get("accepted") or ev.fields.get("promised") or []
        attrs["paxos.instances"] = [str(x.get("ins")) for x in got]
    if isinstance(step.reply, (Phase1b, Phase2b)):
        attrs.setdefault("paxos.instances", sorted(step.reply.states))
    otel.end(otel.start(f"paxos.acceptor.{kind}", txn_id, attrs, start_ns=start_ns))
