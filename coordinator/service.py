"""The coordinator's gRPC service: leader and registrar, stateless replicas.

Soft state only: the transactions this process owns (their registration and waiting RMs).
Everything durable is on the acceptors, so any replica can finish any transaction by
running higher ballots after ``recovery_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.rules import Registration, Tally
from paxos_commit.metrics import CoordinatorMetrics, RequestCounter, abort_reason_label, serve_metrics
from paxos_commit.serving import ServerHandle, abort_on_error, clamp_wait_ms, start_server
from rm_sdk import tracing
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.leader import AcceptorPeers, Decision, Leader
from rm_sdk.protocol import NO_SET, NoSet, Outcome, ProtocolError, RMSet, validate_id
from rm_sdk.wire import outcome_to_pb, pb, states_from_pb

__all__ = ["CoordinatorConfig", "CoordinatorServicer", "serve_coordinator"]

log = logging.getLogger("paxos_commit.coordinator")


class NotFound(ProtocolError):
    """An id this service has never heard of."""

    status = "NOT_FOUND"


@dataclass(frozen=True)
class CoordinatorConfig:
    acceptors: list[str]
    #: Name prefix of this replica's leader ids (a fresh suffix is added per process).
    name: str = "coordinator"
    #: The owner runs recovery ballots on instances whose RM has not voted by then.
    vote_timeout: float = 5.0
    #: Other replicas recover a transaction once acceptors have known it this long.
    recovery_timeout: float = 10.0
    #: The owner aborts a transaction whose commit was not asked for within this time.
    txn_timeout: float = 120.0
    #: How often to look for abandoned transactions on the acceptors (0: never).
    recovery_interval: float = 1.0
    #: Decided transactions whose outcome is kept in memory.
    keep_decided: int = 100_000


@dataclass
class OwnedTxn:
    """A transaction this replica owns: registrar and leader soft state."""

    txn_id: str
    created: float
    registration: Registration = field(default_factory=Registration)
    prepare: asyncio.Event = field(default_factory=asyncio.Event)
    decided: asyncio.Future[Decision] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    driver: asyncio.Task[None] | None = None


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(
        self, config: CoordinatorConfig, address: str = "", metrics: CoordinatorMetrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or CoordinatorMetrics()
        self.address = address
        self.peers = AcceptorPeers(config.acceptors)
        self.leader = Leader(f"{config.name}.{uuid.uuid4().hex[:12]}", self.peers)
        self.owned: OrderedDict[str, OwnedTxn] = OrderedDict()
        self._learning: dict[str, asyncio.Task[Decision | None]] = {}
        self._first_asked: dict[str, float] = {}
        self._never_seen: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        #: Transactions being driven to a decision here: txn id -> when that started.
        self._in_doubt: dict[str, float] = {}
        self._undecided_owned = 0
        m = self.metrics
        m.acceptors.set(self.peers.n)
        m.in_flight.set_function(lambda: self._undecided_owned)
        m.in_doubt.set_function(lambda: len(self._in_doubt))
        m.oldest_in_doubt.set_function(self._oldest_in_doubt)
        self.leader.on_ballot.append(lambda _txn: m.recovery_ballots.inc())

    # ---------------------------------------------------------------- lifecycle

    def start(self, handle: ServerHandle | None = None) -> None:
        if self.config.recovery_interval > 0:
            self._background = asyncio.create_task(self._recovery_loop(), name="recovery-scan")
        if handle is not None:
            self._health = asyncio.create_task(self._watch_acceptors(handle), name="acceptor-health")

    def _oldest_in_doubt(self) -> float:
        started = list(self._in_doubt.values())  # a copy: scrapes come from another thread
        return time.monotonic() - min(started) if started else 0.0

    async def _watch_acceptors(self, handle: ServerHandle, every: float = 2.0) -> None:
        """Readiness follows the acceptors: NOT_SERVING while no majority answers."""
        serving = True
        stubs = [health_pb2_grpc.HealthStub(c) for c in self.peers.channels]
        while True:
            answers = await asyncio.gather(
                *(
                    s.Check(health_pb2.HealthCheckRequest(service="paxoscommit.v1.Acceptor"), timeout=every)
                    for s in stubs
                ),
                return_exceptions=True,
            )
            up = sum(
                1
                for a in answers
                if isinstance(a, health_pb2.HealthCheckResponse)
                and a.status == health_pb2.HealthCheckResponse.SERVING
            )
            self.metrics.peers_reachable.set(up)
            if (up * 2 > self.peers.n) != serving:
                serving = not serving
                log.warning(
                    "acceptors reachable: %d of %d: %s",
                    up,
                    self.peers.n,
                    "serving" if serving else "not serving",
                )
                await handle.set_serving(serving)
            await asyncio.sleep(every)

    async def close(self) -> None:
        for t in (self._background, self._health):
            if t is not None:
                t.cancel()
        # Finish in-flight commits (their callers wait), then drop the rest.
        pending = [t.driver for t in self.owned.values() if t.driver and not t.driver.done()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        for t in list(self._tasks):
            t.cancel()
        await self.peers.close()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- application-facing

    async def Begin(
        self, request: pb.BeginRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BeginReply:
        txn_id = uuid.uuid4().hex
        txn = OwnedTxn(txn_id, time.monotonic())
        self.owned[txn_id] = txn
        self.metrics.begun.inc()
        self._undecided_owned += 1
        asyncio.get_running_loop().call_later(self.config.txn_timeout, self._expire, txn)
        self._trim()
        return pb.BeginReply(txn_id=txn_id, coordinator=self.address)

    async def Commit(
        self, request: pb.CommitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CommitReply:
        async def run() -> pb.CommitReply:
            txn = self._owned(request.txn_id)
            self._start_commit(txn)
            d = await asyncio.shield(txn.decided)
            return pb.CommitReply(outcome=outcome_to_pb(d.outcome), reason=d.reason)

        return await abort_on_error(context, run())

    async def Abort(
        self, request: pb.AbortRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AbortReply:
        async def run() -> pb.AbortReply:
            if len(request.reason.encode()) > 1024:
                raise ProtocolError("abort reason longer than 1024 bytes")
            txn = self._owned(request.txn_id)
            self._start_commit(txn, abort_reason=request.reason or "aborted by the application")
            d = await asyncio.shield(txn.decided)
            return pb.AbortReply(outcome=outcome_to_pb(d.outcome), reason=d.reason)

        return await abort_on_error(context, run())

    async def GetOutcome(
        self, request: pb.GetOutcomeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetOutcomeReply:
        async def run() -> pb.GetOutcomeReply:
            txn_id = validate_id("transaction id", request.txn_id)
            wait = clamp_wait_ms(request.wait_ms)
            txn = self.owned.get(txn_id)
            fut: asyncio.Future[Any] = txn.decided if txn is not None else self._learn(txn_id)
            try:
                d = await asyncio.wait_for(asyncio.shield(fut), wait)
            except TimeoutError:
                d = None
            if d is None:
                if txn is None and fut.done() and txn_id in self._never_seen:
                    self._never_seen.discard(txn_id)  # said once; a later question looks again
                    raise NotFound(f"unknown transaction {txn_id!r}: no coordinator or acceptor knows it")
                return pb.GetOutcomeReply(outcome=pb.OUTCOME_PENDING)
            return pb.GetOutcomeReply(outcome=outcome_to_pb(d.outcome), reason=d.reason)

        return await abort_on_error(context, run())

    # ---------------------------------------------------------------- RM-facing

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JoinReply:
        async def run() -> pb.JoinReply:
            validate_id("rm id", request.rm_id)
            txn = self._owned(request.txn_id)
            if request.rm_id not in txn.registration.joined:
                txn.registration.join(request.rm_id)
                tracing.event("Join", txn.txn_id, rm=request.rm_id)
            return pb.JoinReply(acceptors=self.peers.addresses)

        return await abort_on_error(context, run())

    async def AwaitPrepare(
        self, request: pb.AwaitPrepareRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AwaitPrepareReply:
        async def run() -> pb.AwaitPrepareReply:
            rm = validate_id("rm id", request.rm_id)
            txn = self._owned(request.txn_id)
            reg = txn.registration
            if rm not in reg.joined:
                raise ProtocolError(f"resource manager {rm!r} has not joined transaction {txn.txn_id}")
            prepare: asyncio.Future[Any] = asyncio.ensure_future(txn.prepare.wait())
            decided: asyncio.Future[Any] = txn.decided
            try:
                await asyncio.wait(
                    [prepare, decided],
                    timeout=clamp_wait_ms(request.wait_ms),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                prepare.cancel()
            if txn.decided.done():
                d = txn.decided.result()
                in_set = reg.closed is not None and rm in reg.closed.rms
                # After a commit every member has prepared; only an abort can skip the vote.
                return pb.AwaitPrepareReply(
                    prepare=in_set and d.outcome is Outcome.COMMITTED,
                    outcome=outcome_to_pb(d.outcome),
                    reason=d.reason,
                )
            if txn.prepare.is_set():
                return pb.AwaitPrepareReply(prepare=True, outcome=pb.OUTCOME_PENDING)
            return pb.AwaitPrepareReply(prepare=False, outcome=pb.OUTCOME_PENDING)

        return await abort_on_error(context, run())

    # ---------------------------------------------------------------- internals

    def _owned(self, txn_id: str) -> OwnedTxn:
        validate_id("transaction id", txn_id)
        txn = self.owned.get(txn_id)
        if txn is None:
            raise NotFound(
                f"unknown transaction {txn_id!r} at coordinator {self.address}: it was begun "
                "elsewhere or this coordinator restarted (its outcome is still available "
                "through GetOutcome)"
            )
        return txn

    def _trim(self) -> None:
        # Drop the oldest decided transactions beyond the bound; undecided ones stay.
        excess = len(self.owned) - self.config.keep_decided
        if excess <= 0:
            return
        for txn_id in [t for t, o in self.owned.items() if o.decided.done()][:excess]:
            del self.owned[txn_id]

    def _expire(self, txn: OwnedTxn) -> None:
        if txn.driver is None:
            log.info("txn %s: not committed within %.0fs: aborting", txn.txn_id, self.config.txn_timeout)
            self._start_commit(txn, abort_reason="transaction timeout")

    def _start_commit(self, txn: OwnedTxn, abort_reason: str | None = None) -> None:
        if txn.driver is None:
            txn.driver = self._spawn(self._drive(txn, abort_reason), f"commit-{txn.txn_id}")

    async def _drive(self, txn: OwnedTxn, abort_reason: str | None) -> None:
        """Close registration (or abort it) and lead the transaction to a decision."""
        started = time.monotonic()
        self._in_doubt[txn.txn_id] = started
        try:
            d = await self._decide_owned(txn, abort_reason)
        finally:
            self._in_doubt.pop(txn.txn_id, None)
        txn.decided.set_result(d)
        self._undecided_owned -= 1
        self.metrics.commit_latency.observe(time.monotonic() - started)
        self._count(txn.txn_id, d)
        log.info("txn %s: %s %s", txn.txn_id, d.outcome.value, d.reason, extra={"txn_id": txn.txn_id})
        await self.leader.record_outcome(txn.txn_id, d.outcome)

    def _count(self, txn_id: str, d: Decision) -> None:
        tracing.event("Decide", txn_id, outcome=d.outcome.value)
        if d.outcome is Outcome.COMMITTED:
            self.metrics.committed.inc()
        else:
            self.metrics.aborted.labels(abort_reason_label(d.reason)).inc()

    async def _decide_owned(self, txn: OwnedTxn, abort_reason: str | None) -> Decision:
        tally = Tally(self.peers.n)
        value: RMSet | NoSet
        known: RMSet | None
        if abort_reason is None:
            value = known = txn.registration.close()
            tracing.event("Close", txn.txn_id, set=sorted(known.rms))
        else:
            txn.registration.closed = RMSet.of(())  # later joins fail
            value, known = NO_SET, None
            tracing.event("ApplicationAbort", txn.txn_id)
        if known is not None:
            txn.prepare.set()  # the paper's Prepare; RMs vote while the registrar's 2a flies
        holders = await self.leader.send_ballot0(txn.txn_id, value, tally)
        # The bundles come from the acceptors that hold the set (where the RMs vote too);
        # if too few took it, from all of them.
        ids = holders if len(holders) * 2 > self.peers.n else None
        d = self.leader.evaluate(tally, known)
        deadline = time.monotonic() + self.config.vote_timeout
        while d is None and time.monotonic() < deadline:
            d = await self.leader.await_bundles(txn.txn_id, tally, known, deadline - time.monotonic(), ids)
        if d is None:
            log.info(
                "txn %s: votes missing after %.1fs: running recovery ballots",
                txn.txn_id,
                self.config.vote_timeout,
            )
            while d is None:
                d = await self.leader.recover(txn.txn_id, tally, known)
        if abort_reason and d.outcome is Outcome.ABORTED:
            d = Decision(d.outcome, abort_reason)
        return d

    def _learn(self, txn_id: str) -> asyncio.Task[Decision | None]:
        task = self._learning.get(txn_id)
        if task is None or (task.done() and task.result() is None):
            task = self._spawn(self._learn_once(txn_id), f"learn-{txn_id}")
            self._learning[txn_id] = task
            task.add_done_callback(lambda t: self._forget_learning(txn_id, t))
        return task

    def _forget_learning(self, txn_id: str, task: asyncio.Task[Decision | None]) -> None:
        # Keep a finished learn only if it decided: the next question starts a fresh one.
        failed = task.cancelled() or task.exception() is not None or task.result() is None
        if failed and self._learning.get(txn_id) is task:
            del self._learning[txn_id]

    async def _learn_once(self, txn_id: str) -> Decision | None:
        """Learn a transaction this replica does not own: read acceptors; once it is old
        enough (pitfall 9), run recovery ballots. None if not decided (yet)."""
        tally = Tally(self.peers.n)
        recorded: list[Outcome] = []
        ages: list[int] = []
        replied = 0

        def on_reply(i: int, r: pb.Phase2bBundle) -> None:
            nonlocal replied
            replied += 1
            tally.add(i, states_from_pb(r.states))
            ages.append(r.age_ms)
            if r.outcome in (pb.OUTCOME_COMMITTED, pb.OUTCOME_ABORTED):
                recorded.append(Outcome.COMMITTED if r.outcome == pb.OUTCOME_COMMITTED else Outcome.ABORTED)

        req = pb.AwaitPhase2bRequest(txn_id=txn_id, wait_ms=0)
        await self.peers.fanout(lambda s: s.AwaitPhase2b(req, timeout=3.0), on_reply, lambda: bool(recorded))
        # Whatever this replica learned it announces (to the RMs asking): a Decide step.
        if recorded:
            tracing.event("Decide", txn_id, outcome=recorded[0].value)
            self._first_asked.pop(txn_id, None)
            return Decision(recorded[0], "")
        d = self.leader.evaluate(tally, None)
        if d is not None:
            tracing.event("Decide", txn_id, outcome=d.outcome.value)
            self._first_asked.pop(txn_id, None)
            self._spawn(self.leader.record_outcome(txn_id, d.outcome), f"record-{txn_id}")
            return d
        if replied * 2 > self.peers.n and not tally.instances() and max(ages, default=0) == 0:
            # A majority never heard of it: nothing can have been chosen; do not invent state.
            self._never_seen.add(txn_id)
            return None
        self._never_seen.discard(txn_id)
        # Pitfall 9: only a transaction known for a while may be taken over with ballots.
        first = self._first_asked.setdefault(txn_id, time.monotonic())
        age = max(max(ages, default=0) / 1000.0, time.monotonic() - first)
        if age < self.config.recovery_timeout:
            await asyncio.sleep(min(self.config.recovery_timeout - age, 1.0))
            return None
        log.info("txn %s: undecided for %.1fs: recovering", txn_id, age, extra={"txn_id": txn_id})
        self._in_doubt[txn_id] = time.monotonic() - age
        try:
            d = await self.leader.recover(txn_id, tally, None)
        finally:
            self._in_doubt.pop(txn_id, None)
        if d is not None:
            self._count(txn_id, d)
            self._first_asked.pop(txn_id, None)
            await self.leader.record_outcome(txn_id, d.outcome)
        return d

    async def _recovery_loop(self) -> None:
        """Find transactions abandoned by a dead owner and finish them."""
        while True:
            await asyncio.sleep(self.config.recovery_interval * (0.5 + self.leader.rng.random()))
            for txn_id in await self._undecided():
                if txn_id not in self.owned and txn_id not in self._learning:
                    self._learn(txn_id)

    async def _undecided(self) -> list[str]:
        req = pb.ListUndecidedRequest(older_than_ms=int(self.config.recovery_timeout * 1000), limit=200)
        found: set[str] = set()
        await self.peers.fanout(
            lambda s: s.ListUndecided(req, timeout=3.0), lambda i, r: found.update(r.txn_ids), lambda: False
        )
        return sorted(found)


@contextlib.asynccontextmanager
async def serve_coordinator(
    config: CoordinatorConfig,
    listen: str = "127.0.0.1:0",
    advertise_host: str | None = None,
    *,
    metrics_port: int | None = None,
) -> AsyncIterator[ServerHandle]:
    """Run one coordinator replica until the context exits.

    ``metrics_port``: serve Prometheus metrics over HTTP there (0: any free port)."""
    metrics = CoordinatorMetrics()
    servicer = CoordinatorServicer(config, metrics=metrics)
    handle = await start_server(
        listen,
        lambda s: pb_grpc.add_CoordinatorServicer_to_server(servicer, s),
        ["paxoscommit.v1.Coordinator"],
        advertise_host,
        interceptors=[RequestCounter(metrics.grpc_requests)],
    )
    if metrics_port is not None:
        handle.metrics_port = serve_metrics(metrics_port, metrics.registry)
    servicer.address = handle.address
    servicer.start(handle)
    log.info("coordinator %s serving on %s", servicer.leader.leader_id, handle.address)
    try:
        yield handle
    finally:
        # Stop taking calls; in-flight ones (commits waiting for their decision) finish.
        await handle.stop(grace=5.0)
        await servicer.close()
