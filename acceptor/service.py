"""The acceptor's gRPC service: protobuf in, pure rule, durable store, protobuf out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from acceptor import core, operations
from acceptor.collect import Collector, CollectorConfig
from acceptor.core import TxnRecord
from acceptor.rules import bundle_complete, check_phase1a, check_phase2a
from acceptor.storage import AcceptorStore, StepFn
from paxos_commit import authz
from paxos_commit.certs import TlsFiles, server_credentials
from paxos_commit.guard import InputGuard, Undecodable
from paxos_commit.metrics import AcceptorMetrics, RequestCounter, metrics_host, serve_metrics
from paxos_commit.serving import (
    ServerHandle,
    StreamReplies,
    abort_on_error,
    bounded,
    clamp_wait_ms,
    serve_stream,
    start_server,
)
from rm_sdk import otel, tracing
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.core.messages import (
    BundleRequest,
    OutcomeRecorded,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    RecordOutcome,
)
from rm_sdk.identity import RM, Identity
from rm_sdk.protocol import REGISTRAR, Instance, Outcome, ProtocolError, Value, validate_id
from rm_sdk.wire import (
    ballot_from_pb,
    outcome_from_pb,
    outcome_to_pb,
    pb,
    record_outcome_from_pb,
    states_to_pb,
    value_from_pb,
)

__all__ = ["AcceptorServicer", "serve_acceptor"]

log = logging.getLogger("paxos_commit.acceptor")

#: Ages beyond a century are not ages (and overflow the storage's integers).
MAX_AGE_MS = 100 * 365 * 24 * 3600 * 1000


class AcceptorServicer(pb_grpc.AcceptorServicer):
    """Translates each RPC into a core message, runs its pure handler (:mod:`acceptor.core`)
    as one durable store step, and translates the reply back."""

    def __init__(
        self, store: AcceptorStore, metrics: AcceptorMetrics | None = None, *, secure: bool = False
    ) -> None:
        self.store = store
        self.id = store.acceptor_id
        self.metrics = metrics or AcceptorMetrics()
        self._counters: dict[tuple[str, str], Any] = {}
        #: TLS on: peers are who their certificates say, and the policy applies.
        self.secure = secure
        self.metrics.watch_store(store)

    # ---------------------------------------------------------------- who may ask

    def _identity(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
        return authz.peer_identity(context.auth_context()) if self.secure else authz.INSECURE

    def _authorize(self, ident: Identity | None, request: Any) -> None:
        refusal = authz.check(ident, request)
        if refusal is not None:
            self._refused(refusal, ident)

    def _permit(self, ident: Identity | None, action: authz.Action) -> None:
        """An operators' action (paxos_commit/authz.py): refused and counted like a request."""
        refusal = authz.check_action(ident, action)
        if refusal is not None:
            self._refused(refusal, ident)

    def _refused(self, refusal: authz.Refusal, ident: Identity | None) -> None:
        self.metrics.on_refusal(refusal.rule, ident.role if ident else "none")
        raise authz.Denied(refusal)

    def _rm_ballot(self, ident: Identity | None, txn_id: str, fn: StepFn) -> StepFn:
        """An RM's recovery ballot is checked against this acceptor's state, inside the
        storage step and before anything is written (other senders: ``fn`` itself)."""
        if ident is None or ident.role != RM:
            return fn

        def checked(rec: TxnRecord | None) -> tuple[TxnRecord | None, Any]:
            refusal = authz.check_rm_ballot(ident, txn_id, rec.instances if rec else {})
            if refusal is not None:
                self._refused(refusal, ident)
            return fn(rec)

        return checked

    async def _run(
        self,
        txn_id: str,
        handler: Callable[[TxnRecord | None, int], core.Step],
        ident: Identity | None = None,
    ) -> core.Step:
        """One handler as one durable step; its trace events after the step is durable.
        ``ident``: the sender of a leader ballot (an RM's is checked against the state)."""
        now = self.store.now_ms()

        def step(rec: TxnRecord | None) -> tuple[TxnRecord | None, core.Step]:
            out = handler(rec, now)
            return out.record, out

        started = time.time_ns() if otel.on else 0
        out: core.Step = await self.store.apply(txn_id, self._rm_ballot(ident, txn_id, step))
        for ev in out.trace:
            tracing.event(ev.name, ev.txn_id, **ev.fields)
        if otel.on:
            operations.step_span(self.id, txn_id, out, started)
        return out

    async def Phase1a(
        self, request: pb.Phase1aRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase1bReply:
        return await abort_on_error(context, self._phase1a(request, self._identity(context)))

    async def _phase1a(self, request: pb.Phase1aRequest, ident: Identity | None) -> pb.Phase1bReply:
        self._authorize(ident, request)
        msg = _decode_phase1a(request)
        out = await self._run(msg.txn_id, lambda rec, now: core.phase1a(self.id, rec, msg, now), ident)
        reply: pb.Phase1bReply = self._reply_pb(out.reply)
        return reply

    async def Phase2a(
        self, request: pb.Phase2aRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase2bReply:
        return await abort_on_error(context, self._phase2a(request, self._identity(context)))

    async def _phase2a(self, request: pb.Phase2aRequest, ident: Identity | None) -> pb.Phase2bReply:
        self._authorize(ident, request)
        msg = _decode_phase2a(request)
        leader = ident if msg.ballot.is_leader_ballot else None
        out = await self._run(msg.txn_id, lambda rec, now: core.phase2a(self.id, rec, msg, now), leader)
        reply: pb.Phase2bReply = self._reply_pb(out.reply)
        return reply

    async def AwaitPhase2b(
        self, request: pb.AwaitPhase2bRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase2bBundle:
        return await abort_on_error(context, self._await_phase2b(request, self._identity(context)))

    async def _await_phase2b(
        self, request: pb.AwaitPhase2bRequest, ident: Identity | None
    ) -> pb.Phase2bBundle:
        self._authorize(ident, request)
        txn_id = validate_id("transaction id", request.txn_id)
        msg = BundleRequest(txn_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + clamp_wait_ms(request.wait_ms)
        while True:
            # Watch before reading, so a change between the two is not missed.
            with self.store.watch(txn_id) as changed:
                rec = await self.store.read(txn_id)
                remaining = deadline - loop.time()
                if core.bundle_ready(rec) or remaining <= 0:
                    return self._bundle_pb(rec, msg)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed, remaining)

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordOutcomeReply:
        return await abort_on_error(context, self._record_outcome(request, self._identity(context)))

    async def _record_outcome(
        self, request: pb.RecordOutcomeRequest, ident: Identity | None
    ) -> pb.RecordOutcomeReply:
        self._authorize(ident, request)
        msg = _decode_record(request)
        step = await self._run(msg.txn_id, lambda rec, now: core.record_outcome(self.id, rec, msg, now))
        reply: pb.RecordOutcomeReply = self._reply_pb(step.reply)
        return reply

    # ---------------------------------------------------------------- pb replies

    def _reply_pb(self, reply: Any) -> Any:
        if isinstance(reply, Phase1b):
            return pb.Phase1bReply(
                acceptor_id=self.id,
                txn_id=reply.txn_id,
                states=states_to_pb(reply.states),
                outcome=outcome_to_pb(reply.outcome),
            )
        if isinstance(reply, Phase2b):
            return pb.Phase2bReply(
                acceptor_id=self.id,
                txn_id=reply.txn_id,
                states=states_to_pb(reply.states),
                outcome=outcome_to_pb(reply.outcome),
            )
        assert isinstance(reply, OutcomeRecorded)
        return pb.RecordOutcomeReply(
            acceptor_id=self.id, acknowledged=sorted(reply.acked), collected=reply.collected
        )

    def _bundle_pb(self, rec: TxnRecord | None, msg: BundleRequest) -> pb.Phase2bBundle:
        b = core.bundle(self.id, rec, msg, self.store.now_ms())
        return pb.Phase2bBundle(
            acceptor_id=self.id,
            txn_id=b.txn_id,
            states=states_to_pb(b.states),
            complete=bundle_complete(b.states),
            outcome=outcome_to_pb(b.outcome),
            age_ms=b.age_ms,
            collected=b.collected,
            acknowledged=sorted(b.acked),
            participants=sorted(b.participants or ()),
            participants_known=b.participants is not None,
        )

    # ---------------------------------------------------------------- batched stream

    async def Stream(
        self,
        request_iterator: AsyncIterator[pb.AcceptorRequestBatch],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.AcceptorReplyBatch]:
        """Batched requests from one peer. A whole incoming batch is one group of durable
        steps (committed in one storage transaction with whatever else is queued); its
        replies leave once that transaction commits. A refused request is answered alone,
        at once; a bundle request waits on a callback, not a task."""
        # Who the peer is: once per stream (its certificate); each message is checked.
        ident = self._identity(context)
        if ident is None:
            self.metrics.on_refusal("authenticated", "none")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, authz.UNAUTHENTICATED.detail)
        # An async generator itself: grpc.aio tells streaming handlers by that.
        async for batch in serve_stream(
            request_iterator,
            functools.partial(self._on_requests, ident=ident),
            lambda replies, clock: pb.AcceptorReplyBatch(replies=replies, lamport=clock),
            self.metrics.on_stream_batch,
            self.metrics.on_stream_reply_batch,
            live=self.metrics.open_streams,
        ):
            yield batch

    def _count(self, kind: str, code: str) -> None:
        child = self._counters.get((kind, code))
        if child is None:
            child = self._counters[(kind, code)] = self.metrics.stream_messages.labels(kind, code)
        child.inc()

    def _on_requests(
        self,
        requests: Sequence[pb.AcceptorRequest | Undecodable],
        replies: StreamReplies,
        ident: Identity | None = authz.INSECURE,
    ) -> None:
        now = self.store.now_ms()
        steps: list[tuple[str, StepFn]] = []
        #: Per step: the request's seq, kind, (for a bundle request) it and its wait, and
        #: whether another reply to the seq follows.
        asks: list[_Ask] = []
        # Replies nobody waits on (to RMs' own votes and outcome records) leave lazily:
        # with the stream's next write, or after LAZY_FLUSH (rm_sdk._streams).
        lazy = True
        for req in requests:
            if isinstance(req, Undecodable):  # refused alone; the rest of the batch runs
                self._count("undecodable", "INVALID_ARGUMENT")
                replies.emit(_refusal(req.seq, "INVALID_ARGUMENT", f"undecodable request: {req.error}"))
                continue
            kind = req.WhichOneof("msg") or "empty"
            try:
                if kind == "phase2a":
                    self._authorize(ident, req.phase2a)
                    if req.HasField("then_bundle"):
                        self._authorize(ident, req.then_bundle)  # before any step is queued
                    m2 = _decode_phase2a(req.phase2a)
                    # Lazy: an RM's vote, or a registrar 2a whose bundle (written at once)
                    # follows and carries its 2b along.
                    then_bundle = req.HasField("then_bundle")
                    lazy = lazy and not (
                        m2.ballot.is_leader_ballot or (REGISTRAR in m2.proposals and not then_bundle)
                    )
                    fn = _step(core.phase2a, self.id, m2, now)
                    steps.append(
                        (
                            m2.txn_id,
                            self._rm_ballot(ident, m2.txn_id, fn) if m2.ballot.is_leader_ballot else fn,
                        )
                    )
                    if req.HasField("then_bundle"):
                        tb = req.then_bundle
                        if tb.txn_id not in ("", m2.txn_id):
                            steps.pop()
                            raise ProtocolError("then_bundle names another transaction than its phase2a")
                        asks.append((req.seq, kind, None, 0.0, True))
                        # The bundle read runs after the 2a, in the same storage batch.
                        steps.append((m2.txn_id, _read))
                        asks.append(
                            (
                                req.seq,
                                "await_phase2b",
                                BundleRequest(m2.txn_id),
                                clamp_wait_ms(tb.wait_ms),
                                False,
                            )
                        )
                        replies.open += 1
                        continue
                elif kind == "await_phase2b":
                    lazy = False
                    r = req.await_phase2b
                    self._authorize(ident, r)
                    mb = BundleRequest(validate_id("transaction id", r.txn_id))
                    # A read in order with the batch's writes: a 2a just before it counts.
                    steps.append((mb.txn_id, _read))
                    asks.append((req.seq, kind, mb, clamp_wait_ms(r.wait_ms), False))
                    continue
                elif kind == "phase1a":
                    lazy = False
                    self._authorize(ident, req.phase1a)
                    m1 = _decode_phase1a(req.phase1a)
                    steps.append(
                        (m1.txn_id, self._rm_ballot(ident, m1.txn_id, _step(core.phase1a, self.id, m1, now)))
                    )
                elif kind == "record_outcome":
                    self._authorize(ident, req.record_outcome)
                    mr = _decode_record(req.record_outcome)
                    steps.append((mr.txn_id, _step(core.record_outcome, self.id, mr, now)))
                else:
                    raise ProtocolError(
                        "empty request: set phase1a, phase2a, await_phase2b or record_outcome"
                    )
            except ProtocolError as exc:
                self._count(kind, exc.status)
                replies.emit(_refusal(req.seq, exc.status, str(exc)))
                continue
            asks.append((req.seq, kind, None, 0.0, False))
        if not steps:
            return
        fut = self.store.apply_many(steps)
        if otel.on:  # each step's span, from the batch's arrival to its durability
            spans = ([t for t, _ in steps], time.time_ns())
            fut.add_done_callback(lambda f: self._on_durable(f, asks, replies, spans, lazy))
        else:
            fut.add_done_callback(lambda f: self._on_durable(f, asks, replies, None, lazy))

    def _on_durable(
        self,
        fut: asyncio.Future[Any],
        asks: list[_Ask],
        replies: StreamReplies,
        spans: tuple[list[str], int] | None = None,
        lazy: bool = False,
    ) -> None:
        """A group's steps are durable (or storage failed): trace, then reply. ``spans``
        (tracing on): the steps' transaction ids and when the batch arrived. ``lazy``:
        nobody waits on these replies (see :meth:`StreamReplies.emit`)."""
        if fut.cancelled() or fut.exception() is not None:
            exc = None if fut.cancelled() else fut.exception()
            log.warning("acceptor %d: storage failed: %r", self.id, exc)
            for seq, kind, _, _, more in asks:
                self._count(kind, "UNAVAILABLE")
                replies.emit(_refusal(seq, "UNAVAILABLE", "storage failed", more))
            return
        out: list[pb.AcceptorReply] = []
        watches: list[tuple[int, BundleRequest, TxnRecord | None, float]] = []
        for i, ((seq, kind, bundle_req, wait, more), res) in enumerate(zip(asks, fut.result(), strict=True)):
            if res.error is not None:
                err = res.error
                if isinstance(err, ProtocolError):
                    code, detail = err.status, str(err)
                else:  # no reply may claim durability
                    log.warning("acceptor %d: request failed: %s", self.id, bounded(repr(err)))
                    code, detail = "UNAVAILABLE", "storage failed"
                self._count(kind, code)
                out.append(_refusal(seq, code, detail, more))
                lazy = False  # a refused vote moves its RM on to another acceptor: at once
                continue
            if bundle_req is not None:
                watches.append((seq, bundle_req, res.value, wait))
                continue
            step: core.Step = res.value
            for ev in step.trace:
                tracing.event(ev.name, ev.txn_id, **ev.fields)
            if spans is not None:
                operations.step_span(self.id, spans[0][i], step, spans[1])
            self._count(kind, "OK")
            reply = step.reply
            if isinstance(reply, Phase2b):
                out.append(pb.AcceptorReply(seq=seq, phase2b=self._reply_pb(reply), more=more))
            elif isinstance(reply, Phase1b):
                out.append(pb.AcceptorReply(seq=seq, phase1b=self._reply_pb(reply)))
            else:
                out.append(pb.AcceptorReply(seq=seq, recorded=self._reply_pb(reply)))
        if out:
            replies.emit_all(out, lazy)
        # After the replies above: a 2a's own reply leaves before its bundle.
        for w in watches:
            self._watch_bundle(*w, replies)

    def _watch_bundle(
        self, seq: int, msg: BundleRequest, rec: TxnRecord | None, wait: float, replies: StreamReplies
    ) -> None:
        """Answer a bundle request when this acceptor's record lets a leader decide, or
        when its wait ends: a callback on the store's commits and one timer, no task."""
        # The read ran in order within its storage batch, but steps of other groups in
        # that batch may have changed the record after it: start from the committed one.
        watch = _BundleWatch(self, seq, msg, self.store.cached(msg.txn_id) or rec, replies)
        if core.bundle_ready(watch.last) or wait <= 0:
            watch.answer()
            return
        self.store.subscribe(msg.txn_id, watch.changed)
        watch.timer = asyncio.get_running_loop().call_later(wait, watch.answer)
        replies.on_close.append(watch.cancel)

    async def ListUndecided(
        self, request: pb.ListUndecidedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListUndecidedReply:
        return await abort_on_error(context, self._list_undecided(request, self._identity(context)))

    async def _list_undecided(
        self, request: pb.ListUndecidedRequest, ident: Identity | None
    ) -> pb.ListUndecidedReply:
        self._authorize(ident, request)
        if request.older_than_ms > MAX_AGE_MS:
            raise ProtocolError(f"older_than_ms {request.older_than_ms} out of range (at most {MAX_AGE_MS})")
        limit = min(request.limit or 1000, 10_000)
        ids = await self.store.list_undecided(request.older_than_ms, limit)
        return pb.ListUndecidedReply(acceptor_id=self.id, txn_ids=ids)

    # Operators' reads (acceptor/operations.py); authorization in paxos_commit/authz.py.

    async def InspectTransaction(
        self, request: pb.InspectTransactionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.InspectTransactionReply:
        return await abort_on_error(context, self._inspect(request, self._identity(context)))

    async def _inspect(
        self, request: pb.InspectTransactionRequest, ident: Identity | None
    ) -> pb.InspectTransactionReply:
        self._permit(ident, authz.Action.INSPECT)
        return await operations.inspect_transaction(self.store, request)

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTransactionsReply:
        return await abort_on_error(context, self._list_transactions(request, self._identity(context)))

    async def _list_transactions(
        self, request: pb.ListTransactionsRequest, ident: Identity | None
    ) -> pb.ListTransactionsReply:
        self._permit(ident, authz.Action.INSPECT)
        return await operations.list_transactions(self.store, request)


def _decode_phase1a(request: pb.Phase1aRequest) -> Phase1a:
    txn_id = validate_id("transaction id", request.txn_id)
    if not request.HasField("ballot"):
        raise ProtocolError("phase1a needs a ballot")
    msg = Phase1a(txn_id, ballot_from_pb(request.ballot), tuple(request.instances))
    check_phase1a(msg.ballot, msg.instances)  # before the store: a bad request waits for nothing
    return msg


def _decode_phase2a(request: pb.Phase2aRequest) -> Phase2a:
    txn_id = validate_id("transaction id", request.txn_id)
    if not request.HasField("ballot"):
        raise ProtocolError("phase2a needs a ballot")
    bal = ballot_from_pb(request.ballot)
    proposals: dict[Instance, Value] = {}
    for p in request.proposals:
        if not p.HasField("value"):
            raise ProtocolError(f"proposal for {p.instance[:40]!r} has no value")
        proposals[p.instance] = value_from_pb(p.value)
    # The wire may name an instance twice; the core message (a mapping) cannot.
    check_phase2a(bal, proposals, len(request.proposals))
    return Phase2a(txn_id, bal, proposals)


class _BundleWatch:
    """One bundle request waiting for its record to let a leader decide (see
    :meth:`AcceptorServicer._watch_bundle`). Methods, not closures: closures that named
    each other made a reference cycle per request, left to the garbage collector; here
    the store, the timer and the stream hold bound methods only until the answer."""

    __slots__ = ("last", "msg", "replies", "seq", "service", "timer")

    def __init__(
        self,
        service: AcceptorServicer,
        seq: int,
        msg: BundleRequest,
        last: TxnRecord | None,
        replies: StreamReplies,
    ) -> None:
        self.service, self.seq, self.msg, self.last, self.replies = service, seq, msg, last, replies
        self.timer: asyncio.TimerHandle | None = None

    def answer(self) -> None:
        self.cancel()
        with contextlib.suppress(ValueError):
            self.replies.on_close.remove(self.cancel)
        svc = self.service
        svc._count("await_phase2b", "OK")
        self.replies.emit(pb.AcceptorReply(seq=self.seq, bundle=svc._bundle_pb(self.last, self.msg)))

    def changed(self) -> None:
        cached = self.service.store.cached(self.msg.txn_id)
        if cached is not None:
            self.last = cached
        if core.bundle_ready(self.last):
            self.answer()
        elif not self.replies.closed:
            self.service.store.subscribe(self.msg.txn_id, self.changed)

    def cancel(self) -> None:
        """No answer after all (the stream ended), or the answer is going out now."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.service.store.unsubscribe(self.msg.txn_id, self.changed)


def _decode_record(request: pb.RecordOutcomeRequest) -> RecordOutcome:
    validate_id("transaction id", request.txn_id)
    if outcome_from_pb(request.outcome) is Outcome.PENDING:
        raise ProtocolError("record_outcome needs OUTCOME_COMMITTED or OUTCOME_ABORTED")
    return record_outcome_from_pb(request)


def _step(
    handler: Callable[[int, TxnRecord | None, Any, int], core.Step], acceptor: int, msg: Any, now: int
) -> StepFn:
    """A store step running one pure handler; its result is the handler's whole Step."""

    def fn(rec: TxnRecord | None) -> tuple[TxnRecord | None, core.Step]:
        out = handler(acceptor, rec, msg, now)
        return out.record, out

    return fn


def _read(rec: TxnRecord | None) -> tuple[None, TxnRecord | None]:
    return None, rec


def _refusal(seq: int, code: str, detail: str, more: bool = False) -> pb.AcceptorReply:
    return pb.AcceptorReply(seq=seq, refused=pb.Refusal(code=code, detail=bounded(detail)), more=more)


#: A stream request's step, as its reply needs it: seq, kind, the bundle request (for a
#: bundle read) and its wait, and whether another reply to the seq follows.
_Ask = tuple[int, str, BundleRequest | None, float, bool]


@contextlib.asynccontextmanager
async def serve_acceptor(
    acceptor_id: int,
    url: str,
    listen: str = "127.0.0.1:0",
    *,
    init: bool = False,
    metrics_port: int | None = None,
    tls: TlsFiles | None = None,
    health_listen: str | None = None,
    collect: CollectorConfig | None = None,
    cache_size: int = 10_000,
) -> AsyncIterator[ServerHandle]:
    """Run one acceptor until the context exits; stops gracefully, then closes storage.

    ``metrics_port``: serve Prometheus metrics over HTTP there (0: any free port), on the
    host of ``listen``. ``tls``: serve mTLS with these files (reloaded when they change)
    and authorize every request by the peer's certificate; None: plain text, no checks
    (said loudly: a WARNING and the ``paxos_commit_insecure`` gauge). ``health_listen``:
    the health service alone, in plain text (probes). ``collect``: the background
    collection of finished transactions (acceptor/collect.py). ``cache_size``: transaction
    records kept in memory (a bounded cache; collected ones shrink to their compact outcome
    record, expired ones leave it)."""
    metrics = AcceptorMetrics()
    metrics.insecure.set(0 if tls else 1)
    if tls is None:
        log.warning(
            "acceptor %d: INSECURE: no TLS, no authentication; anyone who reaches %s can forge votes and outcomes",
            acceptor_id,
            listen,
        )
    store = AcceptorStore(url, acceptor_id, init=init, cache_size=cache_size)
    store.on_batch.append(metrics.on_batch)
    await store.start()
    tracing.event("AcceptorRestart", "*", acc=acceptor_id)
    collector = Collector(store, collect)
    collector.on_pass.append(metrics.on_collect)
    try:
        await collector.start()
        servicer = AcceptorServicer(store, metrics, secure=tls is not None)
        handle = await start_server(
            listen,
            lambda s: pb_grpc.add_AcceptorServicer_to_server(servicer, s),
            ["paxoscommit.v1.Acceptor"],
            interceptors=[RequestCounter(metrics.grpc_requests), InputGuard(metrics.on_undecodable)],
            credentials=server_credentials(tls) if tls else None,
            health_listen=health_listen,
        )
        if metrics_port is not None:
            handle.metrics_port = serve_metrics(metrics_port, metrics.registry, metrics_host(listen))
        watchdog = asyncio.create_task(_watch_storage(store, handle), name="storage-health")
        log.info("acceptor %d serving on %s (%s)", acceptor_id, handle.address, store.url)
        try:
            yield handle
        finally:
            watchdog.cancel()
            await handle.stop()
    finally:
        await collector.close()
        await store.close()


async def _watch_storage(store: AcceptorStore, handle: ServerHandle, every: float = 5.0) -> None:
    """Readiness follows storage: NOT_SERVING while the database does not answer."""
    ok = True
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.wait_for(store.ping(), every)
            healthy = True
        except Exception as exc:
            healthy = False
            log.warning("storage check failed: %s", exc)
        if healthy != ok:
            ok = healthy
            await handle.set_serving(ok)
