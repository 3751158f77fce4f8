"""Operators' calls to a coordinator replica: ``Retry`` (recover a transaction now) and
``ListOwned`` (what this replica owns and recently decided, with causes).

Kept out of the service's hot path: the service feeds :class:`RecentOutcomes` the
decisions it already counts for its metrics, and the calls below read the core's soft
state from the event loop's thread.
"""

from __future__ import annotations

import time
from collections import deque

from rm_sdk import otel
from rm_sdk.core.coordinator import CoordinatorNode
from rm_sdk.core.messages import Abort, AwaitPrepare, Begin, Commit, Decided, Decision, Failed, Join, Request
from rm_sdk.core.owner import Owner
from rm_sdk.protocol import REGISTRAR, Outcome, Vote, majority, validate_id
from rm_sdk.wire import cause_to_pb, outcome_to_pb, pb

__all__ = [
    "RecentOutcomes",
    "decide_span",
    "end_request_span",
    "list_owned",
    "owned_to_pb",
    "request_span",
    "retry",
]


class RecentOutcomes:
    """The last ``keep`` decisions this replica made, with their causes and times."""

    def __init__(self, keep: int = 1000) -> None:
        self._items: deque[tuple[str, Decision, int]] = deque(maxlen=keep)

    def add(self, txn_id: str, d: Decision) -> None:
        self._items.append((txn_id, d, int(time.time() * 1000)))

    def newest(self, limit: int, txn_id: str = "") -> list[pb.RecentOutcome]:
        """Newest first, at most ``limit``; only ``txn_id``'s if given."""
        out: list[pb.RecentOutcome] = []
        for t, d, at in reversed(self._items):
            if len(out) >= limit:
                break
            if txn_id and t != txn_id:
                continue
            out.append(
                pb.RecentOutcome(
                    txn_id=t,
                    outcome=outcome_to_pb(d.outcome),
                    cause=cause_to_pb(d.cause),
                    rm_id=d.rm_id,
                    reason=d.reason,
                    decided_unix_ms=at,
                )
            )
        return out

    def find(self, txn_id: str) -> list[pb.RecentOutcome]:
        return self.newest(1, txn_id)


def _phase(o: Owner) -> str:
    if o.decision is not None:
        return "decided"
    if o.recovery is not None:
        return "recovering"
    return "deciding" if o.closing else "open"


def _waiting_for(o: Owner) -> list[str]:
    """Instances no majority of acceptors has reported a value for (as far as the owner's
    tally knows): the RMs whose votes are missing, and the registrar's own value."""
    if o.decision is not None or not o.closing:
        return []
    need = majority(o.n)
    waiting = []
    if len(o.accepted) < need:
        waiting.append(REGISTRAR)
    for rm in sorted(o.known_set.rms if o.known_set else ()):
        have = sum(
            1 for states in o.tally.reports.values() if rm in states and isinstance(states[rm].val, Vote)
        )
        if have < need:
            waiting.append(rm)
    return waiting


def owned_to_pb(o: Owner, leader_id: str, now: float) -> pb.OwnedTransaction:
    return pb.OwnedTransaction(
        txn_id=o.txn_id,
        age_ms=int(max(0.0, now - o.created) * 1000),
        phase=_phase(o),
        joined=sorted(o.registration.joined),
        rm_set=sorted(o.known_set.rms) if o.known_set else [],
        waiting_for=_waiting_for(o),
        owner=leader_id,
        closed_ms=int(max(0.0, now - o.closed_at) * 1000) if o.closing else 0,
    )


def list_owned(
    node: CoordinatorNode, recent: RecentOutcomes, request: pb.ListOwnedRequest, now: float
) -> pb.ListOwnedReply:
    """``now``: the event loop's clock (the core's)."""
    limit = min(request.limit or 1000, 10_000)
    if request.txn_id:
        txn_id = validate_id("transaction id", request.txn_id)
        o = node.owned.get(txn_id)
        owned = [o] if o is not None else []
        found = recent.find(txn_id)
    else:
        owned = sorted(node.owned.values(), key=lambda o: o.created)[:limit]
        found = recent.newest(limit)
    recovering = sorted(
        t
        for t, learner in node.learners.items()
        if learner.recovery is not None
        and learner.decision is None
        and (not request.txn_id or t == request.txn_id)
    )[:limit]
    return pb.ListOwnedReply(
        leader_id=node.leader_id,
        owned=[owned_to_pb(o, node.leader_id, now) for o in owned],
        recent=found,
        now_unix_ms=int(time.time() * 1000),
        recovering=recovering,
    )


def retry(node: CoordinatorNode, request: pb.RetryRequest, now: float) -> pb.RetryReply:
    """Feed the core an operator's retry; the caller pumps the core's Ready after."""
    action = node.retry(request.txn_id, now)
    done = node.decided.get(request.txn_id)
    owner = node.owned.get(request.txn_id)
    d = done[0] if done is not None else owner.decision if owner is not None else None
    return pb.RetryReply(action=action, outcome=outcome_to_pb(d.outcome if d else Outcome.PENDING))


_REQUEST_NAMES = {
    Begin: "paxos.coordinator.begin",
    Join: "paxos.coordinator.join",
    AwaitPrepare: "paxos.coordinator.await_prepare",
    Commit: "paxos.coordinator.commit",
    Abort: "paxos.coordinator.abort",
}


def request_span(msg: Request, leader_id: str) -> object:
    """A span for one request to the core (only called when tracing is on)."""
    attrs: dict[str, object] = {"paxos.coordinator": leader_id}
    rm_id = getattr(msg, "rm_id", "")
    if rm_id:
        attrs["paxos.rm_id"] = rm_id
    return otel.start(_REQUEST_NAMES.get(type(msg), "paxos.coordinator.get_outcome"), msg.txn_id, attrs)


def end_request_span(span: object, reply: object) -> None:
    if isinstance(reply, Decided):
        d = reply.decision
        otel.end(
            span,
            otel.decision_attributes(d.outcome.value, d.cause.value if d.cause else "", d.rm_id, d.reason),
        )
    elif isinstance(reply, Failed):
        otel.end(span, error=str(reply.error))
    else:
        otel.end(span)


def decide_span(txn_id: str, d: Decision, took: float, leader_id: str) -> None:
    """The decision, as a span covering the time deciding took (0 for a recovery)."""
    now = time.time_ns()
    attrs = otel.decision_attributes(d.outcome.value, d.cause.value if d.cause else "", d.rm_id, d.reason)
    attrs["paxos.coordinator"] = leader_id
    otel.end(otel.start("paxos.decide", txn_id, attrs, start_ns=now - int(took * 1e9)), end_ns=now)
