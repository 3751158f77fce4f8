"""The acceptor's gRPC service: protobuf in, pure rule, durable store, protobuf out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import grpc

from acceptor.rules import bundle_complete, check_phase1a, check_phase2a, phase1b, phase2b
from acceptor.storage import AcceptorStore, TxnRecord
from paxos_commit.metrics import AcceptorMetrics, RequestCounter, serve_metrics
from paxos_commit.serving import ServerHandle, abort_on_error, clamp_wait_ms, start_server
from rm_sdk import tracing
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.protocol import (
    ConflictError,
    Instance,
    InstanceState,
    Outcome,
    ProtocolError,
    Value,
    validate_id,
)
from rm_sdk.tracing import trace_ballot, trace_value
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
    """Translates each RPC into a store step built from :mod:`acceptor.rules`."""

    def __init__(self, store: AcceptorStore) -> None:
        self.store = store
        self.id = store.acceptor_id

    async def _apply_each(
        self,
        txn_id: str,
        instances: Sequence[Instance],
        rule: Callable[[Instance, InstanceState], InstanceState],
    ) -> tuple[dict[Instance, InstanceState], Outcome, dict[Instance, InstanceState]]:
        """Apply ``rule`` to each instance of one request in one durable step; return the
        new states (the reply), the recorded outcome, and the states before."""
        now = self.store.now_ms()

        def step(
            rec: TxnRecord | None,
        ) -> tuple[
            TxnRecord | None, tuple[dict[Instance, InstanceState], Outcome, dict[Instance, InstanceState]]
        ]:
            base = rec or TxnRecord(first_seen_ms=now)
            before = {ins: base.instances.get(ins, InstanceState()) for ins in instances}
            reply = {ins: rule(ins, st) for ins, st in before.items()}
            if rec is not None and reply == before:
                return rec, (reply, base.outcome, before)  # nothing changed: no write
            return replace(base, instances={**base.instances, **reply}), (reply, base.outcome, before)

        return await self.store.apply(txn_id, step)

    async def Phase1a(
        self, request: pb.Phase1aRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase1bReply:
        return await abort_on_error(context, self._phase1a(request))

    async def _phase1a(self, request: pb.Phase1aRequest) -> pb.Phase1bReply:
        txn_id = validate_id("transaction id", request.txn_id)
        if not request.HasField("ballot"):
            raise ProtocolError("phase1a needs a ballot")
        bal = ballot_from_pb(request.ballot)
        instances: Sequence[Instance] = list(request.instances)
        check_phase1a(bal, instances)
        reply, outcome, before = await self._apply_each(txn_id, instances, lambda _ins, st: phase1b(st, bal))
        promised = {i: st for i, st in before.items() if st.mbal < bal}
        if promised:
            tracing.event(
                "Phase1b", txn_id, acc=self.id, bal=trace_ballot(bal),
                promised=[{"ins": i, "bal": trace_ballot(st.bal), "val": trace_value(st.val)}
                          for i, st in sorted(promised.items())],
            )  # fmt: skip
        return pb.Phase1bReply(
            acceptor_id=self.id, txn_id=txn_id, states=states_to_pb(reply), outcome=outcome_to_pb(outcome)
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
        check_phase2a(bal, proposals, len(request.proposals))
        reply, outcome, before = await self._apply_each(
            txn_id, list(proposals), lambda ins, st: phase2b(st, bal, proposals[ins])
        )
        accepted = [i for i in proposals if reply[i].bal == bal and before[i].bal != bal]
        if accepted:
            tracing.event(
                "Phase2b", txn_id, acc=self.id, bal=trace_ballot(bal),
                accepted=[{"ins": i, "val": trace_value(proposals[i])} for i in sorted(accepted)],
            )  # fmt: skip
        return pb.Phase2bReply(
            acceptor_id=self.id, txn_id=txn_id, states=states_to_pb(reply), outcome=outcome_to_pb(outcome)
        )

    async def AwaitPhase2b(
        self, request: pb.AwaitPhase2bRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Phase2bBundle:
        return await abort_on_error(context, self._await_phase2b(request))

    async def _await_phase2b(self, request: pb.AwaitPhase2bRequest) -> pb.Phase2bBundle:
        txn_id = validate_id("transaction id", request.txn_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + clamp_wait_ms(request.wait_ms)
        while True:
            # Watch before reading, so a change between the two is not missed.
            with self.store.watch(txn_id) as changed:
                rec = await self.store.read(txn_id)
                states: Mapping[Instance, InstanceState] = rec.instances if rec else {}
                complete = bundle_complete(states)
                decided = rec is not None and rec.outcome is not Outcome.PENDING
                remaining = deadline - loop.time()
                if complete or decided or remaining <= 0:
                    age = max(0, self.store.now_ms() - rec.first_seen_ms) if rec else 0
                    return pb.Phase2bBundle(
                        acceptor_id=self.id,
                        txn_id=txn_id,
                        states=states_to_pb(states),
                        complete=complete,
                        outcome=outcome_to_pb(rec.outcome if rec else Outcome.PENDING),
                        age_ms=age,
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
        now = self.store.now_ms()

        def step(rec: TxnRecord | None) -> tuple[TxnRecord | None, None]:
            base = rec or TxnRecord(first_seen_ms=now)
            if base.outcome is outcome and rec is not None:
                return rec, None
            if base.outcome is not Outcome.PENDING:
                raise ConflictError(
                    f"transaction {txn_id} already recorded {base.outcome.value}; refusing {outcome.value}"
                )
            return replace(base, outcome=outcome), None

        await self.store.apply(txn_id, step)
        return pb.RecordOutcomeReply(acceptor_id=self.id)

    async def ListUndecided(
        self, request: pb.ListUndecidedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListUndecidedReply:
        limit = min(request.limit or 1000, 10_000)
        ids = await self.store.list_undecided(request.older_than_ms, limit)
        return pb.ListUndecidedReply(acceptor_id=self.id, txn_ids=ids)


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
        servicer = AcceptorServicer(store)
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
