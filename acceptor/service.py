"""The acceptor's gRPC service: protobuf in, pure rule, durable store, protobuf out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from acceptor import core, operations
from acceptor.core import TxnRecord
from acceptor.rules import bundle_complete, check_phase1a, check_phase2a
from acceptor.storage import AcceptorStore
from paxos_commit import authz
from paxos_commit.metrics import AcceptorMetrics, RequestCounter, serve_metrics
from paxos_commit.serving import ServerHandle, abort_on_error, clamp_wait_ms, serve_batches, start_server
from rm_sdk import otel, tracing
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.core.messages import BundleRequest, Phase1a, Phase1b, Phase2a, Phase2b, RecordOutcome
from rm_sdk.protocol import Instance, Outcome, ProtocolError, Value, validate_id
from rm_sdk.wire import (
    ballot_from_pb,
    outcome_from_pb,
    outcome_to_pb,
    pb,
    states_to_pb,
    value_from_pb,
)

__all__ = ["AcceptorServicer", "serve_acceptor"]

log = logging.getLogger("paxos_commit.acceptor")


class AcceptorServicer(pb_grpc.AcceptorServicer):
    """Translates each RPC into a core message, runs its pure handler (:mod:`acceptor.core`)
    as one durable store step, and translates the reply back."""

    def __init__(self, store: AcceptorStore, metrics: AcceptorMetrics | None = None) -> None:
        self.store = store
        self.id = store.acceptor_id
        self.metrics = metrics or AcceptorMetrics()

    async def _run(self, txn_id: str, handler: Callable[[TxnRecord | None, int], core.Step]) -> core.Step:
        """One handler as one durable step; its trace events after the step is durable."""
        now = self.store.now_ms()

        def step(rec: TxnRecord | None) -> tuple[TxnRecord | None, core.Step]:
            out = handler(rec, now)
            return out.record, out

        started = time.time_ns() if otel.on else 0
        out = await self.store.apply(txn_id, step)
        for ev in out.trace:
            tracing.event(ev.name, ev.txn_id, **ev.fields)
        if otel.on:
            operations.step_span(self.id, txn_id, out, started)
        return out

    async def Phase1a(
        self, request: pb.Phase1aRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase1bReply:
        return await abort_on_error(context, self._phase1a(request))

    async def _phase1a(self, request: pb.Phase1aRequest) -> pb.Phase1bReply:
        txn_id = validate_id("transaction id", request.txn_id)
        if not request.HasField("ballot"):
            raise ProtocolError("phase1a needs a ballot")
        msg = Phase1a(txn_id, ballot_from_pb(request.ballot), tuple(request.instances))
        check_phase1a(msg.ballot, msg.instances)  # before the store: a bad request waits for nothing
        out = await self._run(txn_id, lambda rec, now: core.phase1a(self.id, rec, msg, now))
        reply = out.reply
        assert isinstance(reply, Phase1b)
        return pb.Phase1bReply(
            acceptor_id=self.id,
            txn_id=txn_id,
            states=states_to_pb(reply.states),
            outcome=outcome_to_pb(reply.outcome),
        )

    async def Phase2a(
        self, request: pb.Phase2aRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase2bReply:
        return await abort_on_error(context, self._phase2a(request))

    async def _phase2a(self, request: pb.Phase2aRequest) -> pb.Phase2bReply:
        txn_id = validate_id("transaction id", request.txn_id)
        if not request.HasField("ballot"):
            raise ProtocolError("phase2a needs a ballot")
        bal = ballot_from_pb(request.ballot)
        proposals: dict[Instance, Value] = {}
        for p in request.proposals:
            if not p.HasField("value"):
                raise ProtocolError(f"proposal for {p.instance!r} has no value")
            proposals[p.instance] = value_from_pb(p.value)
        # The wire may name an instance twice; the core message (a mapping) cannot.
        check_phase2a(bal, proposals, len(request.proposals))
        msg = Phase2a(txn_id, bal, proposals)
        out = await self._run(txn_id, lambda rec, now: core.phase2a(self.id, rec, msg, now))
        reply = out.reply
        assert isinstance(reply, Phase2b)
        return pb.Phase2bReply(
            acceptor_id=self.id,
            txn_id=txn_id,
            states=states_to_pb(reply.states),
            outcome=outcome_to_pb(reply.outcome),
        )

    async def AwaitPhase2b(
        self, request: pb.AwaitPhase2bRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase2bBundle:
        return await abort_on_error(context, self._await_phase2b(request))

    async def _await_phase2b(self, request: pb.AwaitPhase2bRequest) -> pb.Phase2bBundle:
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
                    b = core.bundle(self.id, rec, msg, self.store.now_ms())
                    return pb.Phase2bBundle(
                        acceptor_id=self.id,
                        txn_id=txn_id,
                        states=states_to_pb(b.states),
                        complete=bundle_complete(b.states),
                        outcome=outcome_to_pb(b.outcome),
                        age_ms=b.age_ms,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed, remaining)

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordOutcomeReply:
        return await abort_on_error(context, self._record_outcome(request))

    async def _record_outcome(self, request: pb.RecordOutcomeRequest) -> pb.RecordOutcomeReply:
        txn_id = validate_id("transaction id", request.txn_id)
        outcome = outcome_from_pb(request.outcome)
        if outcome is Outcome.PENDING:
            raise ProtocolError("record_outcome needs OUTCOME_COMMITTED or OUTCOME_ABORTED")
        msg = RecordOutcome(txn_id, outcome)
        await self._run(txn_id, lambda rec, now: core.record_outcome(self.id, rec, msg, now))
        return pb.RecordOutcomeReply(acceptor_id=self.id)

    async def Stream(
        self,
        request_iterator: AsyncIterator[pb.AcceptorRequestBatch],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.AcceptorReplyBatch]:
        """Batched requests from one peer. Each runs as its own durable step, so the store
        commits what arrives together in one storage transaction; a refused request is
        answered alone."""
        # An async generator itself: grpc.aio tells streaming handlers by that.
        async for batch in serve_batches(
            request_iterator,
            self._one,
            lambda replies, clock: pb.AcceptorReplyBatch(replies=replies, lamport=clock),
            self.metrics.on_stream_batch,
        ):
            yield batch

    async def _one(self, req: pb.AcceptorRequest) -> pb.AcceptorReply:
        """One request of a batch, as its unary twin would run it; a refusal is a reply."""
        reply = await self._one_reply(req)
        code = reply.refused.code if reply.WhichOneof("msg") == "refused" else "OK"
        self.metrics.stream_messages.labels(req.WhichOneof("msg") or "empty", code).inc()
        return reply

    async def _one_reply(self, req: pb.AcceptorRequest) -> pb.AcceptorReply:
        kind = req.WhichOneof("msg")
        try:
            if kind == "phase1a":
                return pb.AcceptorReply(seq=req.seq, phase1b=await self._phase1a(req.phase1a))
            if kind == "phase2a":
                return pb.AcceptorReply(seq=req.seq, phase2b=await self._phase2a(req.phase2a))
            if kind == "await_phase2b":
                return pb.AcceptorReply(seq=req.seq, bundle=await self._await_phase2b(req.await_phase2b))
            if kind == "record_outcome":
                return pb.AcceptorReply(seq=req.seq, recorded=await self._record_outcome(req.record_outcome))
            raise ProtocolError("empty request: set phase1a, phase2a, await_phase2b or record_outcome")
        except ProtocolError as exc:
            detail = str(exc).encode()[:1024].decode(errors="ignore")
            return pb.AcceptorReply(seq=req.seq, refused=pb.Refusal(code=exc.status, detail=detail))
        except Exception as exc:  # storage failed: no reply may claim durability
            log.warning("acceptor %d: request failed: %r", self.id, exc)
            return pb.AcceptorReply(
                seq=req.seq, refused=pb.Refusal(code="UNAVAILABLE", detail="storage failed")
            )

    async def ListUndecided(
        self, request: pb.ListUndecidedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListUndecidedReply:
        limit = min(request.limit or 1000, 10_000)
        ids = await self.store.list_undecided(request.older_than_ms, limit)
        return pb.ListUndecidedReply(acceptor_id=self.id, txn_ids=ids)

    # Operators' reads (acceptor/operations.py); authorization in paxos_commit/authz.py.

    async def InspectTransaction(
        self, request: pb.InspectTransactionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.InspectTransactionReply:
        await authz.require(context, authz.Action.INSPECT)
        return await abort_on_error(context, operations.inspect_transaction(self.store, request))

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTransactionsReply:
        await authz.require(context, authz.Action.INSPECT)
        return await abort_on_error(context, operations.list_transactions(self.store, request))


@contextlib.asynccontextmanager
async def serve_acceptor(
    acceptor_id: int,
    url: str,
    listen: str = "127.0.0.1:0",
    *,
    init: bool = False,
    metrics_port: int | None = None,
) -> AsyncIterator[ServerHandle]:
    """Run one acceptor until the context exits; stops gracefully, then closes storage.

    ``metrics_port``: serve Prometheus metrics over HTTP there (0: any free port)."""
    metrics = AcceptorMetrics()
    store = AcceptorStore(url, acceptor_id, init=init)
    store.on_batch.append(metrics.on_batch)
    await store.start()
    tracing.event("AcceptorRestart", "*", acc=acceptor_id)
    try:
        servicer = AcceptorServicer(store, metrics)
        handle = await start_server(
            listen,
            lambda s: pb_grpc.add_AcceptorServicer_to_server(servicer, s),
            ["paxoscommit.v1.Acceptor"],
            interceptors=[RequestCounter(metrics.grpc_requests)],
        )
        if metrics_port is not None:
            handle.metrics_port = serve_metrics(metrics_port, metrics.registry)
        watchdog = asyncio.create_task(_watch_storage(store, handle), name="storage-health")
        log.info("acceptor %d serving on %s (%s)", acceptor_id, handle.address, store.url)
        try:
            yield handle
        finally:
            watchdog.cancel()
            await handle.stop()
    finally:
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
