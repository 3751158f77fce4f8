"""The coordinator's gRPC service: a thin driver of :class:`rm_sdk.core.coordinator.CoordinatorNode`.

Requests become core messages with a token; acceptor replies come back through
:class:`rm_sdk._streams.StreamAcceptors` (one batched stream per acceptor); one timer per process ticks the core at
its next deadline. Soft state only: everything durable is on the acceptors, so any
replica can finish any transaction by running higher ballots after ``recovery_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator import operations
from paxos_commit import authz
from paxos_commit.certs import TlsFiles, server_credentials
from paxos_commit.guard import InputGuard, Undecodable
from paxos_commit.metrics import CoordinatorMetrics, RequestCounter, metrics_host, serve_metrics
from paxos_commit.serving import (
    ServerHandle,
    StreamReplies,
    bounded,
    clamp_wait_ms,
    serve_stream,
    start_server,
)
from rm_sdk import otel, tracing
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk._streams import StreamAcceptors
from rm_sdk.core.coordinator import CoordinatorNode, CoordinatorTimeouts, NotFound
from rm_sdk.core.learner import LearnerTimeouts
from rm_sdk.core.messages import (
    Abort,
    AcceptorReply,
    Acknowledge,
    AskOutcome,
    AwaitPrepare,
    Begin,
    Commit,
    Decided,
    Decision,
    Failed,
    Join,
    Joined,
    Pending,
    Prepare,
    Request,
    Unknown,
)
from rm_sdk.core.owner import OwnerTimeouts
from rm_sdk.core.ready import Ready
from rm_sdk.identity import Identity
from rm_sdk.protocol import Outcome, ProtocolError
from rm_sdk.wire import cause_to_pb, outcome_from_pb, outcome_to_pb, pb

__all__ = ["CoordinatorConfig", "CoordinatorServicer", "NotFound", "serve_coordinator"]

log = logging.getLogger("paxos_commit.coordinator")


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
    #: Decided transactions whose outcome is kept in memory once their owner let go of
    #: them (a bounded cache of recent outcomes; older ones are read from the acceptors).
    keep_decided: int = 10_000
    #: After a decision, how long the owner waits for every RM's acknowledgement before it
    #: records the outcome without them (collection; DESIGN.md pitfall 8).
    ack_wait: float = 2.0
    #: An acceptor silent this long on a request is passed over for the next.
    answer_timeout: float = 1.0
    #: mTLS: this replica's certificate (``coordinator/<name>``), key and CA, for its own
    #: port and its streams to the acceptors; None: plain text both ways (--insecure).
    tls: TlsFiles | None = None

    def timeouts(self) -> CoordinatorTimeouts:
        return CoordinatorTimeouts(
            owner=OwnerTimeouts(
                vote_timeout=self.vote_timeout,
                txn_timeout=self.txn_timeout,
                answer_timeout=self.answer_timeout,
                ack_wait=self.ack_wait,
            ),
            learner=LearnerTimeouts(
                recovery_timeout=self.recovery_timeout, answer_timeout=self.answer_timeout
            ),
            keep_decided=self.keep_decided,
        )


def run_ready(
    ready: Ready,
    acceptors: StreamAcceptors,
    answer: Any,
    logger: logging.Logger,
) -> None:
    """Carry out a core step's Ready: trace first (the events happened), then send, then
    answer (``answer(token, message)``)."""
    for e in ready.trace:
        tracing.event(e.name, e.txn_id, **e.fields)
    for txn_id, text in ready.log:
        logger.info("txn %s: %s", txn_id, text, extra={"txn_id": txn_id})
    for i, msg in ready.sends:
        acceptors.send(i, msg)
    for token, msg in ready.replies:
        answer(token, msg)


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(
        self, config: CoordinatorConfig, address: str = "", metrics: CoordinatorMetrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or CoordinatorMetrics()
        self.address = address
        self.leader_id = f"{config.name}.{uuid.uuid4().hex[:12]}"
        self.node = CoordinatorNode(self.leader_id, len(config.acceptors), config.timeouts())
        self.acceptors = StreamAcceptors(
            config.acceptors,
            self._on_acceptor_reply,
            deliver_many=self._on_acceptor_replies,
            credentials=config.tls.channel_credentials() if config.tls else None,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tokens = itertools.count(1)
        self._counters: dict[tuple[str, str], Any] = {}
        self._next: list[tuple[Any, Request]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._background: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._certs: asyncio.Task[None] | None = None
        #: Decisions made here, for operators (coordinator/operations.py).
        self.recent = operations.RecentOutcomes()
        m = self.metrics
        m.acceptors.set(self.acceptors.n)
        # Computed when scraped (not on the hot path); scrapes come from another thread.
        m.in_flight.set_function(lambda: _retry(lambda: self.node.undecided_owned))
        m.in_doubt.set_function(lambda: len(_retry(self.node.in_doubt_since)))
        m.oldest_in_doubt.set_function(self._oldest_in_doubt)
        m.awaiting_acks.set_function(lambda: _retry(lambda: self.node.awaiting_acks))
        m.watch_acceptor_links(self.acceptors)

    # ---------------------------------------------------------------- who may ask

    def _identity(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
        return authz.peer_identity(context.auth_context()) if self.config.tls else authz.INSECURE

    def _authorize(self, ident: Identity | None, request: Any) -> None:
        refusal = authz.check(ident, request)
        if refusal is not None:
            self.metrics.on_refusal(refusal.rule, ident.role if ident else "none")
            raise _Refusal(refusal.code, refusal.detail)

    def _permit(self, ident: Identity | None, action: authz.Action) -> None:
        """An operators' action (paxos_commit/authz.py): refused and counted like a request."""
        refusal = authz.check_action(ident, action)
        if refusal is not None:
            self.metrics.on_refusal(refusal.rule, ident.role if ident else "none")
            raise _Refusal(refusal.code, refusal.detail)

    async def _checked(
        self, context: grpc.aio.ServicerContext[Any, Any], request: Any, call: Callable[[], Awaitable[T]]
    ) -> T:
        """A unary call: the policy first (nothing reaches the core unless allowed)."""
        self._authorize(self._identity(context), request)
        return await call()

    async def _serve(self, context: grpc.aio.ServicerContext[Any, Any], kind: str, request: Any) -> Any:
        """A unary call, decoded as its stream twin is: the policy, then the core."""
        return await _unary(
            context, self._checked(context, request, lambda: self._call(*self._decode(kind, request)))
        )

    # ---------------------------------------------------------------- the core's driver

    def _now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    def _pump(self) -> None:
        while True:
            ready = self.node.take_ready()
            for txn, d, took in ready.decided:
                self._count(d, took)
                self.recent.add(txn, d)
                if otel.on:
                    operations.decide_span(txn, d, took, self.leader_id)
                if d.outcome is Outcome.COMMITTED and log.isEnabledFor(logging.DEBUG):
                    log.debug("txn %s: committed", txn, extra={"txn_id": txn})
            if ready.ballots:
                self.metrics.recovery_ballots.inc(ready.ballots)
            run_ready(ready, self.acceptors, self._answer, log)
            if not self._next:
                break
            # The next steps of following joins, answered in the loop's next turn.
            now = self._now()
            nxt, self._next = self._next, []
            for token, msg in nxt:
                if otel.on:
                    token.span = operations.request_span(msg, self.leader_id)
                self.node.request(token, msg, now)
        self._arm()

    def _arm(self) -> None:
        at = self.node.next_deadline()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.node.tick(self._now())
        self._pump()

    def _on_acceptor_reply(self, msg: AcceptorReply) -> None:
        self.node.acceptor_reply(msg, self._now())
        self._pump()

    def _on_acceptor_replies(self, msgs: list[AcceptorReply]) -> None:
        now = self._now()
        for m in msgs:
            self.node.acceptor_reply(m, now)
        self._pump()

    def _answer(self, token: Any, msg: Any) -> None:
        if isinstance(token, _StreamCall):
            if token.span is not None:
                operations.end_request_span(token.span, msg)
            nxt = None
            try:
                if isinstance(msg, Failed):
                    raise _Refusal(getattr(msg.error, "status", "INVALID_ARGUMENT"), str(msg.error))
                body = token.build(msg)
                if token.then is not None and not token.replies.closed:
                    nxt = token.then(msg)
            except _Refusal as exc:
                body = exc
            if nxt is not None:
                self._next.append(nxt)  # fed to the core once this Ready is carried out
            self._emit(token.replies, token.seq, token.kind, body, more=nxt is not None)
            return
        fut = self._waiting.pop(token, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def _ask(self, msg: Request) -> Any:
        """Feed one request to the core and await its answer; a refusal raises it."""
        token = next(self._tokens)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        span = operations.request_span(msg, self.leader_id) if otel.on else None
        try:
            self.node.request(token, msg, self._now())
            self._pump()
            reply = await fut
        finally:
            self._waiting.pop(token, None)
        if span is not None:
            operations.end_request_span(span, reply)
        if isinstance(reply, Failed):
            raise _Refusal(getattr(reply.error, "status", "INVALID_ARGUMENT"), str(reply.error))
        return reply

    def _count(self, d: Decision, took: float) -> None:
        if took > 0:
            self.metrics.commit_latency.observe(took)
        if d.outcome is Outcome.COMMITTED:
            self.metrics.committed.inc()
        else:
            self.metrics.aborted.labels(d.cause.value if d.cause else "unknown").inc()

    def _oldest_in_doubt(self) -> float:
        started = _retry(self.node.in_doubt_since)
        return max(0.0, self._now_threadsafe() - min(started)) if started else 0.0

    def _now_threadsafe(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    # ---------------------------------------------------------------- lifecycle

    def start(self, handle: ServerHandle | None = None) -> None:
        self._now()
        if self.config.recovery_interval > 0:
            self._background = asyncio.create_task(self._recovery_loop(), name="recovery-scan")
        if handle is not None:
            self._health = asyncio.create_task(self._watch_acceptors(handle), name="acceptor-health")
        if self.config.tls is not None:
            self._certs = asyncio.create_task(self._watch_certificates(self.config.tls), name="certificates")

    async def _watch_certificates(self, files: TlsFiles, every: float = 10.0) -> None:
        """Rotated certificate files (cert-manager renews them in place): the streams to the
        acceptors dialled from then on present the new certificate. (The server side reloads
        at each handshake by itself: paxos_commit.certs.server_credentials.)"""
        seen = files.stamp()
        while True:
            await asyncio.sleep(every)
            stamp = files.stamp()
            if stamp == seen:
                continue
            try:
                creds = files.channel_credentials()
            except Exception as exc:
                log.warning("certificate files changed but cannot be loaded (%s); keeping the old ones", exc)
                continue
            seen = stamp
            self.acceptors.set_credentials(creds)
            log.info("certificates reloaded for the streams to the acceptors")

    async def _watch_acceptors(self, handle: ServerHandle, every: float = 2.0) -> None:
        """Readiness follows the acceptors: NOT_SERVING while no majority answers."""
        serving = True
        while True:
            stubs = [health_pb2_grpc.HealthStub(c) for c in self.acceptors.channels]
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
            if (up * 2 > self.acceptors.n) != serving:
                serving = not serving
                log.warning(
                    "acceptors reachable: %d of %d: %s",
                    up,
                    self.acceptors.n,
                    "serving" if serving else "not serving",
                )
                await handle.set_serving(serving)
            await asyncio.sleep(every)

    async def close(self) -> None:
        for t in (self._background, self._health, self._certs):
            if t is not None:
                t.cancel()
        # Finish in-flight commits (their callers wait), then drop the rest.
        for _ in range(50):
            if not any(o.closing and o.decision is None for o in self.node.owned.values()):
                break
            await asyncio.sleep(0.1)
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._waiting.values():
            fut.cancel()
        await self.acceptors.close()

    async def _recovery_loop(self) -> None:
        """Find transactions abandoned by a dead owner and have the core finish them."""
        spread = itertools.cycle((0.5, 1.1, 0.8, 1.4, 0.65, 1.25))
        while True:
            await asyncio.sleep(self.config.recovery_interval * next(spread))
            found = await self._undecided()
            if found:
                self.node.found_undecided(found, self._now())
                self._pump()

    async def _undecided(self) -> list[str]:
        req = pb.ListUndecidedRequest(older_than_ms=int(self.config.recovery_timeout * 1000), limit=200)
        replies = await asyncio.gather(
            *(s.ListUndecided(req, timeout=3.0) for s in self.acceptors.stubs), return_exceptions=True
        )
        found: set[str] = set()
        for r in replies:
            if isinstance(r, pb.ListUndecidedReply):
                found.update(r.txn_ids)
        return sorted(found)

    # ---------------------------------------------------------------- the calls, unary or batched

    def _decode(self, kind: str, r: Any) -> tuple[Request, Callable[[Any], Any]]:
        """The core request of one call (``r``: the request message of that ``kind``, on
        the stream or unary) and how to turn the core's answer into its reply."""
        if kind == "begin":
            return self._begin_msg(r)
        if kind == "join":
            return Join(r.txn_id, r.rm_id), self._joined_pb
        if kind == "await_prepare":
            return AwaitPrepare(r.txn_id, r.rm_id, clamp_wait_ms(r.wait_ms)), _prepare_pb
        if kind == "commit":
            return Commit(r.txn_id, wait_applied=r.wait_applied), _commit_pb
        if kind == "acknowledge":
            return Acknowledge(r.txn_id, r.rm_id, outcome_from_pb(r.outcome)), self._acknowledged
        if kind == "abort":
            return Abort(r.txn_id, r.reason, r.rm_id), _abort_pb
        if kind == "get_outcome":
            return AskOutcome(r.txn_id, clamp_wait_ms(r.wait_ms)), _outcome_pb
        raise _Refusal(
            "INVALID_ARGUMENT", "empty request: set one of begin, join, ..., get_outcome, acknowledge"
        )

    def _begin_msg(self, request: pb.BeginRequest) -> tuple[Request, Callable[[Any], Any]]:
        txn_id = request.txn_id or uuid.uuid4().hex

        def built(_reply: Any) -> pb.BeginReply:
            self.metrics.begun.inc()
            return pb.BeginReply(txn_id=txn_id, coordinator=self.address)

        return Begin(txn_id), built

    def _acknowledged(self, _reply: Any) -> pb.AcknowledgeReply:
        self.metrics.acknowledged.inc()
        return pb.AcknowledgeReply()

    def _joined_pb(self, r: Any) -> pb.JoinReply:
        assert isinstance(r, Joined)
        return pb.JoinReply(acceptors=self.acceptors.addresses)

    async def _call(self, msg: Request, build: Callable[[Any], T]) -> T:
        return build(await self._ask(msg))

    def _on_requests(
        self,
        requests: Sequence[pb.CoordinatorRequest | Undecodable],
        replies: StreamReplies,
        ident: Identity | None = authz.INSECURE,
    ) -> None:
        """A whole incoming batch fed to the core, then one step's Ready carried out."""
        now = self._now()
        for req in requests:
            if isinstance(req, Undecodable):  # refused alone; the rest of the batch runs
                self._emit(
                    replies,
                    req.seq,
                    "undecodable",
                    _Refusal("INVALID_ARGUMENT", f"undecodable request: {req.error}"),
                )
                continue
            kind = req.WhichOneof("msg") or "empty"
            try:
                body = getattr(req, kind) if kind != "empty" else None
                if body is not None:
                    # A following join (join.follow) waits and asks as the same RM: one check.
                    self._authorize(ident, body)
                msg, build = self._decode(kind, body)
            except _Refusal as exc:
                self._emit(replies, req.seq, kind, exc)
                continue
            call = _StreamCall(replies, req.seq, kind, build)
            if kind == "join" and req.join.follow:
                call.then = _follow_prepare(call, req.join.txn_id, req.join.rm_id, req.join.follow_wait_ms)
            if otel.on:
                call.span = operations.request_span(msg, self.leader_id)
            self.node.request(call, msg, now)
        self._pump()

    def _emit(self, replies: StreamReplies, seq: int, kind: str, body: Any, more: bool = False) -> None:
        if isinstance(body, _Refusal):
            code = body.code
            reply = pb.CoordinatorReply(seq=seq, refused=pb.Refusal(code=code, detail=body.detail))
        else:
            code = "OK"
            reply = pb.CoordinatorReply(seq=seq, more=more, **{kind: body})
        child = self._counters.get((kind, code))
        if child is None:
            child = self._counters[(kind, code)] = self.metrics.stream_messages.labels(kind, code)
        child.inc()
        if more:
            replies.open += 1  # the request stays open for its next reply
        # Nobody waits on an acknowledgement's answer: it rides with the next write.
        replies.emit(reply, lazy=kind == "acknowledge")

    async def Stream(
        self,
        request_iterator: AsyncIterator[pb.CoordinatorRequestBatch],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.CoordinatorReplyBatch]:
        """Batched calls from one client process (the SDK's way in): each incoming batch
        is fed to the core in one step; answers leave as the core gives them."""
        # Who the peer is: once per stream (its certificate); each message is checked.
        ident = self._identity(context)
        if ident is None:
            self.metrics.on_refusal("authenticated", "none")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, authz.UNAUTHENTICATED.detail)
        # An async generator itself: grpc.aio tells streaming handlers by that.
        async for batch in serve_stream(
            request_iterator,
            functools.partial(self._on_requests, ident=ident),
            lambda replies, clock: pb.CoordinatorReplyBatch(replies=replies, lamport=clock),
            self.metrics.on_stream_batch,
            self.metrics.on_stream_reply_batch,
            live=self.metrics.open_streams,
        ):
            yield batch

    async def Begin(
        self, request: pb.BeginRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BeginReply:
        reply: pb.BeginReply = await self._serve(context, "begin", request)
        return reply

    async def Commit(
        self, request: pb.CommitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CommitReply:
        reply: pb.CommitReply = await self._serve(context, "commit", request)
        return reply

    async def Abort(
        self, request: pb.AbortRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AbortReply:
        reply: pb.AbortReply = await self._serve(context, "abort", request)
        return reply

    async def GetOutcome(
        self, request: pb.GetOutcomeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetOutcomeReply:
        reply: pb.GetOutcomeReply = await self._serve(context, "get_outcome", request)
        return reply

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JoinReply:
        reply: pb.JoinReply = await self._serve(context, "join", request)
        return reply

    async def AwaitPrepare(
        self, request: pb.AwaitPrepareRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AwaitPrepareReply:
        reply: pb.AwaitPrepareReply = await self._serve(context, "await_prepare", request)
        return reply

    async def Acknowledge(
        self, request: pb.AcknowledgeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AcknowledgeReply:
        reply: pb.AcknowledgeReply = await self._serve(context, "acknowledge", request)
        return reply

    # Operators' calls (coordinator/operations.py); authorization in paxos_commit/authz.py.

    async def Retry(
        self, request: pb.RetryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RetryReply:
        try:
            self._permit(self._identity(context), authz.Action.RETRY)
        except _Refusal as exc:
            self.metrics.operator_actions.labels("retry", "refused").inc()
            await context.abort(grpc.StatusCode[exc.code], exc.detail)
        try:
            reply = operations.retry(self.node, request, self._now())
        except ProtocolError as exc:
            self.metrics.operator_actions.labels("retry", "refused").inc()
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        self._pump()
        self.metrics.operator_actions.labels("retry", "ok").inc()
        log.info("txn %s: operator retry: %s", request.txn_id, reply.action, extra={"txn_id": request.txn_id})
        return reply

    async def ListOwned(
        self, request: pb.ListOwnedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListOwnedReply:
        try:
            self._permit(self._identity(context), authz.Action.INSPECT)
        except _Refusal as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.detail)
        try:
            return operations.list_owned(self.node, self.recent, request, self._now())
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        raise AssertionError("unreachable")


R = TypeVar("R")


def _retry(read: Callable[[], R]) -> R:
    """Read the core's state from the metrics thread: a read that met the event loop
    changing a dict is tried again."""
    for _ in range(10):
        try:
            return read()
        except RuntimeError:
            continue
    return read()


class _Refusal(Exception):
    """A request refused: the gRPC status code name and a bounded message."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = bounded(detail)


def _decision(reply: Any) -> Decision:
    assert isinstance(reply, Decided), reply
    return reply.decision


class _StreamCall:
    """The token of a stream message in the core: where and how its answer goes, and
    (``then``) the request that continues it after this answer, if any."""

    __slots__ = ("build", "kind", "replies", "seq", "span", "then")

    def __init__(self, replies: StreamReplies, seq: int, kind: str, build: Callable[[Any], Any]) -> None:
        self.replies = replies
        self.seq = seq
        self.kind = kind
        self.build = build
        self.then: Callable[[Any], tuple[_StreamCall, Request] | None] | None = None
        #: Its OpenTelemetry span (tracing on), ended with the core's answer.
        self.span: Any = None


def _follow_prepare(
    call: _StreamCall, txn_id: str, rm_id: str, wait_ms: int
) -> Callable[[Any], tuple[_StreamCall, Request] | None]:
    """A following join: once joined, wait for Prepare; once asked to prepare, wait for
    the outcome. Any other answer ends the request."""
    return _FollowJoin(call.replies, call.seq, txn_id, rm_id, clamp_wait_ms(wait_ms)).after_join


class _FollowJoin:
    """The later steps of one following join. It holds no call of its own (closures that
    did made a reference cycle per join, left to the garbage collector)."""

    __slots__ = ("replies", "rm_id", "seq", "txn_id", "wait")

    def __init__(self, replies: StreamReplies, seq: int, txn_id: str, rm_id: str, wait: float) -> None:
        self.replies, self.seq, self.txn_id, self.rm_id, self.wait = replies, seq, txn_id, rm_id, wait

    def after_join(self, r: Any) -> tuple[_StreamCall, Request] | None:
        if not isinstance(r, Joined):
            return None
        nxt = _StreamCall(self.replies, self.seq, "await_prepare", _prepare_pb)
        nxt.then = self.after_prepare
        return nxt, AwaitPrepare(self.txn_id, self.rm_id, self.wait)

    def after_prepare(self, r: Any) -> tuple[_StreamCall, Request] | None:
        if not (isinstance(r, Prepare) and r.prepare):
            return None
        return _StreamCall(self.replies, self.seq, "get_outcome", _outcome_pb), AskOutcome(
            self.txn_id, self.wait
        )


def _commit_pb(r: Any) -> pb.CommitReply:
    d = _decision(r)
    return pb.CommitReply(
        outcome=outcome_to_pb(d.outcome),
        reason=d.reason,
        cause=cause_to_pb(d.cause),
        rm_id=d.rm_id,
        applied=r.applied,
    )


def _abort_pb(r: Any) -> pb.AbortReply:
    d = _decision(r)
    return pb.AbortReply(
        outcome=outcome_to_pb(d.outcome), reason=d.reason, cause=cause_to_pb(d.cause), rm_id=d.rm_id
    )


def _outcome_pb(r: Any) -> pb.GetOutcomeReply:
    if isinstance(r, Unknown):
        raise _Refusal("NOT_FOUND", f"unknown transaction {r.txn_id!r}: {r.detail}")
    if isinstance(r, Pending):
        return pb.GetOutcomeReply(outcome=pb.OUTCOME_PENDING)
    d = _decision(r)
    return pb.GetOutcomeReply(
        outcome=outcome_to_pb(d.outcome),
        reason=d.reason,
        cause=cause_to_pb(d.cause),
        rm_id=d.rm_id,
        ack_awaited=r.ack_awaited,
    )


def _prepare_pb(r: Any) -> pb.AwaitPrepareReply:
    if isinstance(r, Prepare):
        return pb.AwaitPrepareReply(prepare=r.prepare, outcome=pb.OUTCOME_PENDING)
    d = _decision(r)
    return pb.AwaitPrepareReply(
        prepare=False,
        outcome=outcome_to_pb(d.outcome),
        reason=d.reason,
        cause=cause_to_pb(d.cause),
        rm_id=d.rm_id,
        ack_awaited=r.ack_awaited,
    )


T = TypeVar("T")


async def _unary(context: grpc.aio.ServicerContext[Any, Any], call: Awaitable[T]) -> T:
    try:
        return await call
    except _Refusal as exc:
        await context.abort(grpc.StatusCode[exc.code], exc.detail)
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as exc:
        log.warning("request failed: %s", bounded(repr(exc)))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the coordinator could not answer; try again")
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def serve_coordinator(
    config: CoordinatorConfig,
    listen: str = "127.0.0.1:0",
    advertise_host: str | None = None,
    *,
    metrics_port: int | None = None,
    health_listen: str | None = None,
) -> AsyncIterator[ServerHandle]:
    """Run one coordinator replica until the context exits (TLS per ``config.tls``).

    ``metrics_port``: serve Prometheus metrics over HTTP there (0: any free port), on the
    host of ``listen``. ``health_listen``: the health service alone, in plain text (probes)."""
    metrics = CoordinatorMetrics()
    metrics.insecure.set(0 if config.tls else 1)
    if config.tls is None:
        log.warning(
            "coordinator %s: INSECURE: no TLS, no authentication; anyone who reaches %s can begin, "
            "commit, join and learn any transaction",
            config.name,
            listen,
        )
    servicer = CoordinatorServicer(config, metrics=metrics)
    handle = await start_server(
        listen,
        lambda s: pb_grpc.add_CoordinatorServicer_to_server(servicer, s),
        ["paxoscommit.v1.Coordinator"],
        advertise_host,
        interceptors=[RequestCounter(metrics.grpc_requests), InputGuard(metrics.on_undecodable)],
        credentials=server_credentials(config.tls) if config.tls else None,
        health_listen=health_listen,
    )
    if metrics_port is not None:
        handle.metrics_port = serve_metrics(metrics_port, metrics.registry, metrics_host(listen))
    servicer.address = handle.address
    servicer.start(handle)
    log.info("coordinator %s serving on %s", servicer.leader_id, handle.address)
    try:
        yield handle
    finally:
        # Stop taking calls; in-flight ones (commits waiting for their decision) finish.
        await handle.stop(grace=5.0)
        await servicer.close()
