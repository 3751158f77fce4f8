"""The leader's driver: runs the pure rules of :mod:`rm_sdk.ballots` over real RPCs.

Used by coordinator replicas and by resource managers recovering on their own.

One :class:`Leader` per coordinator process incarnation. Its ballots carry a fresh leader
id, so it never reuses a ballot of an earlier incarnation or of another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from rm_sdk import tracing
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.ballots import BallotRun, BallotSource, Tally, instances_to_recover
from rm_sdk.protocol import (
    NO_BALLOT,
    NO_SET,
    REGISTRAR,
    RM_BALLOT,
    Instance,
    Outcome,
    RMSet,
    Value,
    Vote,
    chosen,
    decide,
    majority,
)
from rm_sdk.tracing import trace_ballot, trace_value
from rm_sdk.wire import ballot_to_pb, outcome_from_pb, outcome_to_pb, pb, states_from_pb, value_to_pb

__all__ = ["AcceptorPeers", "Decision", "Leader"]

log = logging.getLogger("paxos_commit.leader")

T = TypeVar("T")

#: How long one RPC to one acceptor may take before we treat it as lost.
RPC_TIMEOUT = 3.0


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str


class AcceptorPeers:
    """Channels to the 2F+1 acceptors, indexed by acceptor id."""

    def __init__(self, addresses: list[str]) -> None:
        if not addresses or len(addresses) % 2 == 0:
            raise ValueError(f"need 2F+1 acceptors (an odd number), got {len(addresses)}")
        self.addresses = list(addresses)
        self.channels = [
            grpc.aio.insecure_channel(a, interceptors=tracing.client_interceptors()) for a in addresses
        ]
        self.stubs: list[pb_grpc.AcceptorAsyncStub] = [pb_grpc.AcceptorStub(c) for c in self.channels]

    @property
    def n(self) -> int:
        return len(self.addresses)

    async def close(self) -> None:
        for c in self.channels:
            await c.close(None)

    async def fanout(
        self,
        call: Callable[[pb_grpc.AcceptorAsyncStub], Awaitable[T]],
        on_reply: Callable[[int, T], None],
        done: Callable[[], bool],
        ids: Iterable[int] | None = None,
    ) -> int:
        """Call every acceptor at once; feed replies to ``on_reply`` as they come; return
        when ``done()`` or all answered. Lost calls are skipped (the network may drop
        anything). Unfinished calls are cancelled. Returns how many replied."""
        targets = list(range(self.n)) if ids is None else list(ids)

        async def one(i: int) -> tuple[int, T | None]:
            try:
                return i, await call(self.stubs[i])
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED,
                ):
                    log.warning("acceptor %d: %s: %s", i, exc.code().name, exc.details())
                return i, None

        tasks = [asyncio.ensure_future(one(i)) for i in targets]
        replied = 0
        try:
            for fut in asyncio.as_completed(tasks):
                i, reply = await fut
                if reply is not None:
                    replied += 1
                    on_reply(i, reply)
                if done():
                    break
        finally:
            for t in tasks:
                t.cancel()
        return replied


class Leader:
    """Drives transactions to a decision. Safe with any number of concurrent leaders."""

    def __init__(self, leader_id: str, peers: AcceptorPeers, rng: random.Random | None = None) -> None:
        self.leader_id = leader_id
        self.ballots = BallotSource(leader_id)
        self.peers = peers
        self.rng = rng or random.Random()
        #: Observers of recovery ballots started (for metrics): called with the txn id.
        self.on_ballot: list[Callable[[str], None]] = []

    # ------------------------------------------------------------ ballot 0 (registrar)

    async def send_ballot0(self, txn_id: str, value: Value, tally: Tally) -> list[int]:
        """The registrar's own 2a at ballot 0: its participant set, or NO_SET to abort.

        Like an RM's vote (paper section 4: to F+1 acceptors, the rest only on failure) it
        goes to the first majority by acceptor id, so the acceptors that hold the set are
        those that hold the votes; an acceptor that does not answer is replaced by the
        next. Returns the acceptors that accepted it (a majority unless too many failed)."""
        req = pb.Phase2aRequest(
            txn_id=txn_id,
            ballot=ballot_to_pb(RM_BALLOT),
            proposals=[pb.Proposal(instance=REGISTRAR, value=value_to_pb(value))],
        )
        need = majority(self.peers.n)
        accepted: set[int] = set()

        def on_reply(i: int, r: pb.Phase2bReply) -> None:
            states = states_from_pb(r.states)
            tally.add(i, states)
            st = states.get(REGISTRAR)
            if st is not None and st.bal == RM_BALLOT and st.val == value:
                accepted.add(i)

        tried: set[int] = set()
        for _ in range(3):
            untried = [i for i in range(self.peers.n) if i not in tried]
            targets = (untried or [i for i in range(self.peers.n) if i not in accepted])[
                : need - len(accepted)
            ]
            tried.update(targets)
            await self.peers.fanout(
                lambda s: s.Phase2a(req, timeout=RPC_TIMEOUT),
                on_reply,
                lambda: len(accepted) >= need,
                targets,
            )
            if len(accepted) >= need:
                break
        return sorted(accepted)

    async def await_bundles(
        self,
        txn_id: str,
        tally: Tally,
        known_set: RMSet | None,
        wait: float,
        ids: Sequence[int] | None = None,
    ) -> Decision | None:
        """Wait up to ``wait`` seconds for 2b bundles (from acceptors ``ids``, default all)
        to decide the transaction."""
        req = pb.AwaitPhase2bRequest(txn_id=txn_id, wait_ms=int(wait * 1000))
        recorded: list[Outcome] = []

        def on_reply(i: int, r: pb.Phase2bBundle) -> None:
            tally.add(i, states_from_pb(r.states))
            if r.outcome not in (pb.OUTCOME_PENDING, pb.OUTCOME_UNSPECIFIED):
                recorded.append(outcome_from_pb(r.outcome))

        decision: list[Decision] = []

        def done() -> bool:
            if recorded:
                decision.append(Decision(recorded[0], "recorded at an acceptor"))
                return True
            d = self.evaluate(tally, known_set)
            if d is not None:
                decision.append(d)
                return True
            return False

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.peers.fanout(
                    lambda s: s.AwaitPhase2b(req, timeout=wait + RPC_TIMEOUT), on_reply, done, ids
                ),
                wait + RPC_TIMEOUT,
            )
        return decision[0] if decision else self.evaluate(tally, known_set)

    def evaluate(self, tally: Tally, known_set: RMSet | None) -> Decision | None:
        values = chosen(tally.reports, self.peers.n)
        outcome, reason = decide(values, known_set or tally.known_set())
        if outcome is Outcome.PENDING:
            return None
        if outcome is Outcome.ABORTED:
            reason = _explain_abort(tally, values, known_set or tally.known_set()) or reason
        return Decision(outcome, reason)

    # ------------------------------------------------------------ ballots > 0 (recovery)

    async def recover(
        self, txn_id: str, tally: Tally, known_set: RMSet | None, *, attempts: int = 20
    ) -> Decision | None:
        """Run higher ballots on every undecided instance until the transaction is decided.

        Free RM instances get ABORTED, a free registrar NO_SET (pitfall 4). Returns None if
        no majority of acceptors answered in ``attempts`` ballots.
        """
        highest = NO_BALLOT
        for attempt in range(attempts):
            d = self.evaluate(tally, known_set)
            if d is not None:
                return d
            decided = chosen(tally.reports, self.peers.n)
            instances = instances_to_recover(tally, known_set)
            ballot = self.ballots.next(highest)
            for cb in self.on_ballot:
                cb(txn_id)
            run = BallotRun(ballot, instances, self.peers.n)
            outcome = await self._run_ballot(txn_id, run, tally, covered=instances | set(decided))
            if outcome is not None:
                return outcome
            highest = max(highest, run.highest_seen, ballot)
            # Another leader is active, or acceptors are unreachable: back off and retry.
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + self.rng.random()))
        return self.evaluate(tally, known_set)

    async def _run_ballot(
        self, txn_id: str, run: BallotRun, tally: Tally, covered: set[Instance]
    ) -> Decision | None:
        req1 = pb.Phase1aRequest(
            txn_id=txn_id, ballot=ballot_to_pb(run.ballot), instances=sorted(run.instances)
        )
        new_members: list[bool] = []

        def on_1b(i: int, r: pb.Phase1bReply) -> None:
            states = states_from_pb(r.states)
            tally.add(i, states)
            run.on_phase1b(i, states)
            s = tally.known_set()
            if s is not None and not s.rms <= covered:
                new_members.append(True)

        tracing.event(
            "Phase1a", txn_id, leader=self.leader_id, bal=trace_ballot(run.ballot), ins=sorted(run.instances)
        )
        await self.peers.fanout(
            lambda st: st.Phase1a(req1, timeout=RPC_TIMEOUT),
            on_1b,
            lambda: run.proposals() is not None or run.preempted or bool(new_members),
        )
        if new_members:
            return None  # the set names instances this ballot did not prepare: widen it
        proposals = run.proposals()
        if proposals is None:
            return None
        log.info("txn %s: ballot %s proposes %s", txn_id, run.ballot, _show(proposals))
        req2 = pb.Phase2aRequest(
            txn_id=txn_id,
            ballot=ballot_to_pb(run.ballot),
            proposals=[pb.Proposal(instance=i, value=value_to_pb(v)) for i, v in sorted(proposals.items())],
        )
        known = tally.known_set()
        tracing.event(
            "Phase2a", txn_id, leader=self.leader_id, bal=trace_ballot(run.ballot),
            prop=[{"ins": i, "val": trace_value(v)} for i, v in sorted(proposals.items())],
        )  # fmt: skip

        await self.peers.fanout(
            lambda st: st.Phase2a(req2, timeout=RPC_TIMEOUT),
            lambda i, r: tally.add(i, states_from_pb(r.states)),
            lambda: self.evaluate(tally, known) is not None,
        )
        return self.evaluate(tally, known)

    # ------------------------------------------------------------ learning

    async def record_outcome(self, txn_id: str, outcome: Outcome) -> None:
        """Tell every acceptor the outcome, so later questions are answered from a record."""
        req = pb.RecordOutcomeRequest(txn_id=txn_id, outcome=outcome_to_pb(outcome))
        await self.peers.fanout(
            lambda s: s.RecordOutcome(req, timeout=RPC_TIMEOUT), lambda i, r: None, lambda: False
        )


def _explain_abort(tally: Tally, values: dict[Instance, Value], s: RMSet | None) -> str:
    """Say who caused an abort: an owner's own ballot-0 value, or a recovery ballot."""

    def by_owner(ins: Instance) -> bool:
        return any(
            st.get(ins) is not None and st[ins].bal == RM_BALLOT and st[ins].val == values.get(ins)
            for st in tally.reports.values()
        )

    if values.get(REGISTRAR) is NO_SET:
        if by_owner(REGISTRAR):
            return "aborted before commit (by the application or the transaction timeout)"
        return "the owning coordinator failed before registration closed"
    for rm in sorted(s.rms if s else ()):
        if values.get(rm) is Vote.ABORTED:
            if by_owner(rm):
                return f"resource manager {rm!r} voted to abort"
            return f"resource manager {rm!r} did not vote in time"
    return ""


def _show(proposals: dict[Instance, Value]) -> str:
    def one(v: Value) -> str:
        if isinstance(v, RMSet):
            return "{" + ",".join(sorted(v.rms)) + "}"
        return "noset" if v is NO_SET else v.value if isinstance(v, Vote) else str(v)

    return ", ".join(f"{i}={one(v)}" for i, v in sorted(proposals.items()))
