"""The resource-manager role: join, vote with a ballot-0 phase 2a, learn the outcome.

A :class:`ResourceManager` says how to prepare, commit and abort its own work; a
:class:`Participant` runs the protocol for it. Rules (DESIGN.md pitfalls 3 and 7): a
prepared vote is durable before it leaves; an RM may abort on its own only before it
prepared; a prepared RM learns the outcome and never guesses.

The rules live in :class:`rm_sdk.core.participant.ParticipantCore`, a state machine; this
module is its asyncio driver: it feeds the core events (RPC answers, the resource's
results, acceptor replies, ticks from one timer) and carries out each step's Ready (votes
and the learner's requests as unary acceptor RPCs, coordinator requests, resource calls as
tasks whose results come back as events, trace events).

A prepared RM learns the outcome from the coordinators. When none has told it within
``recovery_timeout`` (all dead, or cut off), it asks the acceptors itself: it reads what
they accepted and, if that does not decide the transaction, runs higher ballots as a
leader of its own (a fresh leader id per :class:`Participant`). The acceptors are the ones
learned at join, given to :meth:`Participant.resume`, or configured with ``acceptors=``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc

from rm_sdk import _context, otel, tracing
from rm_sdk._addresses import check_addresses, check_seconds
from rm_sdk._channels import TRANSIENT, Channels
from rm_sdk._streams import StreamAcceptors, StreamCoordinator, _rpc_error
from rm_sdk.client import Client, TransactionContext
from rm_sdk.core.messages import (
    AbortCause,
    AcceptorReply,
    Acknowledge,
    Acknowledged,
    AskOutcome,
    AwaitPrepare,
    Decided,
    Decision,
    Pending,
    Phase2b,
    Prepare,
    Unknown,
)
from rm_sdk.core.participant import (
    Applied,
    CallCoordinator,
    CallResource,
    CoordinatorReply,
    Ended,
    ParticipantCore,
    ParticipantTimeouts,
    ResourceOp,
    RMState,
    Unreachable,
)
from rm_sdk.core.ready import Ready
from rm_sdk.protocol import RM_BALLOT, Outcome, Vote, validate_id
from rm_sdk.wire import decision_from_pb, outcome_from_pb, outcome_to_pb, pb

__all__ = ["Participant", "ResourceManager", "RMState"]

log = logging.getLogger("paxos_commit.rm")

#: OpenTelemetry span of each resource call: the RM's prepare, and applying the outcome.
_SPANS = {
    ResourceOp.PREPARE: "paxos.prepare",
    ResourceOp.COMMIT: "paxos.outcome",
    ResourceOp.ABORT: "paxos.outcome",
}

#: Trace events the RM writes as itself (``proc=rm:ID``); others (a recovery ballot's
#: Phase1a/Phase2a) carry the process's name, as the coordinators' do.
_RM_EVENTS = frozenset({"RMPrepare", "RMChooseToAbort", "RMRcvCommitMsg", "RMRcvAbortMsg", "Decide"})


class ResourceManager(Protocol):
    """What a participant's resource does at each step; each must be idempotent."""

    rm_id: str

    async def prepare(self, txn_id: str) -> Vote:
        """Make the work durable and ready to commit, then return PREPARED; or return
        ABORTED to refuse. PREPARED must survive a crash of this process."""
        ...

    async def commit(self, txn_id: str) -> None:
        """Apply the commit. Raise if it could not be applied now (it is retried with
        backoff); return normally if it is already applied."""
        ...

    async def abort(self, txn_id: str) -> None:
        """Undo the work (prepared or not). Raise to be retried; return normally if there
        is nothing (left) to undo."""
        ...


class Participant:
    """Runs the RM side of Paxos Commit for one :class:`ResourceManager`.

    ``owner_timeout``: abort on our own if not asked to prepare and the owner is gone this
    long. ``recovery_timeout``: once prepared, ask the acceptors directly (running higher
    ballots if needed) when no coordinator told the outcome within this many seconds.
    ``acceptors``: the acceptor addresses, for recovering transactions whose acceptors
    were not recorded (e.g. a Postgres RM after a restart); learned at each join too.
    ``rpc_timeout``: the deadline of each RPC; an acceptor that has not answered a vote
    within ``min(1 s, rpc_timeout)`` is replaced by the next one at once (its late answer
    still counts)."""

    def __init__(
        self,
        rm: ResourceManager,
        coordinators: Sequence[str],
        *,
        owner_timeout: float = 15.0,
        rpc_timeout: float = 5.0,
        recovery_timeout: float = 30.0,
        acceptors: Sequence[str] = (),
        channels: Channels | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        validate_id("rm id", rm.rm_id)
        # Before the Client below, which would name this process a client.
        otel.configure(f"paxos-commit-rm-{rm.rm_id}")
        self.rm = rm
        self.owner_timeout = check_seconds("owner_timeout", owner_timeout)
        self.rpc_timeout = check_seconds("rpc_timeout", rpc_timeout)
        self.recovery_timeout = check_seconds("recovery_timeout", recovery_timeout)
        #: Acceptor addresses: configured, or the latest learned at a join.
        self.acceptors: list[str] = check_addresses("acceptor", acceptors, allow_empty=True)
        # credentials: mTLS (rm_sdk.tls.credentials, an rm/<rm id> certificate); None: plain text.
        self._channels = channels or Channels(credentials)
        self._own_channels = channels is None
        self.client = Client(coordinators, channels=self._channels, rpc_timeout=rpc_timeout)
        self._core = ParticipantCore(
            rm.rm_id,
            f"rm-{rm.rm_id}-{uuid.uuid4().hex[:8]}",  # fresh per incarnation (pitfall 2)
            ParticipantTimeouts(
                owner_timeout=owner_timeout,
                recovery_timeout=recovery_timeout,
                answer_timeout=min(1.0, rpc_timeout),
            ),
        )
        #: The state of every live transaction of this RM, and of the last
        #: ``keep_finished`` (10,000) that ended: a bounded cache (the core's own dict).
        self.states: dict[str, RMState] = self._core.states
        #: Context and acceptor addresses of each transaction joined or resumed; kept while
        #: it runs and, after it ended, as long as ``states`` keeps it.
        self._joined: dict[str, tuple[TransactionContext, list[str]]] = {}
        self._links: dict[tuple[str, ...], StreamAcceptors] = {}
        self._ended: dict[str, asyncio.Future[RMState]] = {}
        self._applied: dict[str, asyncio.Future[RMState]] = {}
        self._learning: dict[object, asyncio.Future[Any]] = {}
        #: Open following joins, by transaction.
        self._follows: dict[str, _Follow] = {}
        #: Joins under way that the work did not wait for (join with defer), by transaction.
        self._deferred: dict[str, asyncio.Task[None]] = {}
        self._learn_addrs: dict[str, list[str]] = {}
        self._done: collections.deque[str] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        #: The event loop this participant runs on (its channels and tasks are bound to
        #: it); cached because asyncio.get_running_loop() makes a getpid() system call
        #: on every call in CPython 3.11 (15% of an RM process's CPU in a profile).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: OpenTelemetry: each ballot-0 vote's span, until an acceptor accepted it.
        self._vote_spans: dict[str, Any] = {}

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for f in [*self._ended.values(), *self._applied.values(), *self._learning.values()]:
            f.cancel()
        for follow in self._follows.values():
            follow.close()
        self._follows.clear()
        for link in self._links.values():
            await link.close()
        self._links.clear()
        if self._own_channels:
            await self._channels.close()

    # ------------------------------------------------------------------ public API

    async def join(self, ctx: TransactionContext, *, defer: bool = False) -> None:
        """Join the transaction (once; later calls are no-ops). Returns when the
        registrar has the join, so the application may commit after this.

        ``defer``: if a :class:`~rm_sdk.client.Client` of this process began the
        transaction and has not begun to commit it, return at once; the join goes on its
        way meanwhile, its commit waits for it (and aborts the transaction if it failed),
        and if it fails the resource's ``abort`` undoes the work. Until the join is
        answered :meth:`joining` is true and :attr:`states` does not have the transaction.

        One request carries the join, the wait for Prepare and the outcome question (a
        following join): the coordinator answers it at each step."""
        if ctx.txn_id in self.states or ctx.txn_id in self._deferred:
            return
        if defer:
            txn = _context.local(ctx.txn_id)
            if txn is not None:
                task = self._spawn(self._join(ctx))
                if txn.defer_join(self.rm.rm_id, task):
                    self._deferred[ctx.txn_id] = task
                    task.add_done_callback(lambda t: self._deferred_done(ctx.txn_id, t))
                    return
                await task
                return
        await self._join(ctx)

    async def _joined_deferred(self, txn_id: str) -> None:
        """Wait until a deferred join of ``txn_id`` on its way (if any) was answered."""
        pending = self._deferred.get(txn_id)
        if pending is not None:
            await asyncio.wait([pending])

    def joining(self, txn_id: str) -> bool:
        """A deferred join (:meth:`join` with ``defer``) of ``txn_id`` is on its way."""
        return txn_id in self._deferred

    def _deferred_done(self, txn_id: str, task: asyncio.Task[None]) -> None:
        self._deferred.pop(txn_id, None)
        if task.cancelled() or task.exception() is None:
            return
        log.info(
            "rm %s: deferred join of %s failed: %r; undoing its work", self.rm.rm_id, txn_id, task.exception()
        )
        if txn_id not in self.states:  # never joined: nobody else will tell the resource
            self._spawn(self._undo(txn_id))

    async def _undo(self, txn_id: str) -> None:
        try:
            await self.rm.abort(txn_id)
        except Exception as exc:
            log.warning("rm %s: undoing the work of %s, whose join failed: %r", self.rm.rm_id, txn_id, exc)

    async def _join(self, ctx: TransactionContext) -> None:
        if ctx.txn_id in self.states:
            return
        coord = self._channels.coordinator(ctx.coordinator)
        follow = _Follow(ctx.txn_id, coord)
        wait_ms = int(self._core.timeouts.prepare_wait * 1000)
        req = pb.JoinRequest(txn_id=ctx.txn_id, rm_id=self.rm.rm_id, follow=True, follow_wait_ms=wait_ms)
        span = otel.start("paxos.join", ctx.txn_id, {"paxos.rm_id": self.rm.rm_id}) if otel.on else None
        try:
            r = await self._first_reply(follow, req)
        except BaseException as exc:
            otel.end(span, error=repr(exc))
            raise
        otel.end(span)
        if ctx.txn_id in self.states:
            coord.unfollow(follow.seq)
            return
        if r.acceptors:
            self.acceptors = list(r.acceptors)
        self._joined[ctx.txn_id] = (ctx, list(r.acceptors))
        n = self._use_acceptors(list(r.acceptors))
        if not follow.ended:
            self._follows[ctx.txn_id] = follow
        self._step(lambda now, out: self._core.join(ctx.txn_id, ctx.coordinator, n, now, out))

    async def _first_reply(self, follow: _Follow, req: pb.JoinRequest) -> pb.JoinReply:
        """Send a following join and wait for its JoinReply. A coordinator still coming up
        (its port refusing, or our channel in reconnect back-off) is tried again until
        ``rpc_timeout``: a join lost to a restart would abort the transaction for nothing."""
        loop = self._running_loop()
        deadline = loop.time() + self.rpc_timeout
        delay = 0.05
        while True:
            first: asyncio.Future[pb.JoinReply] = loop.create_future()
            follow.first = first
            follow.ended = False
            follow.seq = follow.coord.follow(
                pb.CoordinatorRequest(join=req), lambda r: self._on_follow(follow, r)
            )
            timer = loop.call_later(max(0.0, deadline - loop.time()), _expire_first, first)
            try:
                return await first
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or loop.time() + delay >= deadline:
                    raise
            except BaseException:
                follow.coord.unfollow(follow.seq)
                raise
            finally:
                timer.cancel()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _on_follow(self, f: _Follow, r: pb.CoordinatorReply | grpc.aio.AioRpcError) -> None:
        """A reply to a following join (or the error that ended it), from the stream."""
        if isinstance(r, grpc.aio.AioRpcError) or not r.more:
            f.ended = True
        first = f.first
        if first is not None:
            f.first = None
            if first.done():
                return
            if isinstance(r, grpc.aio.AioRpcError):
                first.set_exception(r)
            elif r.WhichOneof("msg") == "refused":
                first.set_exception(_refusal_error(r.refused))
            else:
                first.set_result(r.join)
            return
        f.early.append(r)
        if f.bound is not None:
            self._follow_reply(f)

    def _follow_reply(self, f: _Follow) -> None:
        """Feed the core the follow's next reply, as the answer to its bound request."""
        req, r = f.bound, f.early.pop(0)
        assert req is not None
        f.bound = None
        if f.timer is not None:
            f.timer.cancel()
            f.timer = None
        if f.ended:
            self._follows.pop(f.txn_id, None)
        reply = _follow_to_core(req, r)
        self._step(lambda now, out: self._core.on_coordinator(req.txn_id, req, reply, now, out))

    def _bind_follow(self, eff: CallCoordinator) -> bool:
        """Let the open following join answer the core's request, if it is the one that
        request expects next; False: send it as a request of its own."""
        f = self._follows.get(eff.txn_id)
        if f is None or f.bound is not None or not isinstance(eff.request, f.expect):
            return False
        req = eff.request
        assert isinstance(req, (AwaitPrepare, AskOutcome))  # f.expect is one of them
        f.bound = req
        f.expect = AskOutcome
        if f.early:
            self._running_loop().call_soon(self._follow_reply, f)
            return True
        if f.ended:  # nothing more will come: answer at once as the lost request it is
            f.early.append(_rpc_error(grpc.StatusCode.UNAVAILABLE, "the following join ended"))
            self._running_loop().call_soon(self._follow_reply, f)
            return True
        wait = req.wait if isinstance(req, (AwaitPrepare, AskOutcome)) else 0.0

        def expire() -> None:
            f.timer = None
            f.ended = True
            f.coord.unfollow(f.seq)
            f.early.append(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
            self._follow_reply(f)

        f.timer = self._running_loop().call_later(wait + self.rpc_timeout, expire)
        return True

    def joined(self, txn_id: str) -> tuple[TransactionContext, list[str]] | None:
        """The context and acceptor addresses of a transaction this RM joined (or
        resumed): what a resource manager records with its prepared state so
        :meth:`resume` can finish it. Kept after the transaction ends as long as
        :attr:`states` keeps it (a bounded cache)."""
        return self._joined.get(txn_id)

    async def wait(self, txn_id: str) -> RMState:
        """Wait until this RM has finished ``txn_id`` (outcome applied, vote settled)."""
        await self._joined_deferred(txn_id)
        if self._core.active(txn_id):
            await asyncio.shield(self._future(self._ended, txn_id))
        return self.states.get(txn_id, RMState.WORKING)

    async def applied(self, txn_id: str) -> RMState:
        """Wait until the outcome of ``txn_id`` is applied to the resource (COMMITTED or
        ABORTED). LookupError if this participant does not run it and never finished it."""
        await self._joined_deferred(txn_id)
        state = self.states.get(txn_id)
        if state in (RMState.COMMITTED, RMState.ABORTED):
            return state
        if not self._core.active(txn_id):
            raise LookupError(f"{txn_id}: not run by this participant")
        return await asyncio.shield(self._future(self._applied, txn_id))

    async def refuse(self, txn_id: str, reason: str = "") -> bool:
        """Abort ``txn_id`` at once, before being asked to prepare (pitfall 3 allows it
        only before preparing): undo the work (``abort``), vote ``aborted`` at ballot 0,
        and tell the owning coordinator, so the transaction aborts without waiting for its
        commit or a timeout and ``commit()`` raises :class:`~rm_sdk.client.RMRefused`
        naming this RM (``reason`` in its text). Returns False, doing nothing, once this
        RM began to prepare (it then votes as its ``prepare`` says) or finished."""
        await self._joined_deferred(txn_id)  # the vote needs the transaction joined
        refused: list[bool] = []
        self._step(lambda now, out: refused.append(self._core.refuse(txn_id, reason, now, out)))
        if not refused or not refused[0]:
            return False
        joined = self._joined.get(txn_id)
        if joined is not None:
            text = f"resource manager {self.rm.rm_id!r} voted to abort"
            if reason:
                text = f"{text}: {reason}"
            try:
                await self._channels.coordinator(joined[0].coordinator).Abort(
                    pb.AbortRequest(
                        txn_id=txn_id,
                        reason=text.encode()[:1024].decode(errors="ignore"),
                        rm_id=self.rm.rm_id,
                    ),
                    timeout=self.rpc_timeout,
                )
            except grpc.aio.AioRpcError as exc:
                # The ballot-0 vote alone decides the abort once commit is asked.
                log.info("rm %s: could not tell the coordinator about %s: %s", self.rm.rm_id, txn_id, exc)
        await self.applied(txn_id)  # the resource's own abort ran
        return True

    def active(self, txn_id: str) -> bool:
        """True while this participant is running ``txn_id`` (joined or resumed, not
        finished): a recovery scan must leave such a transaction alone."""
        return self._core.active(txn_id)

    async def resume(
        self, txn_id: str, acceptors: Sequence[str] = (), coordinator: str | None = None
    ) -> None:
        """After a restart: finish a transaction the resource holds as prepared. The vote
        is sent again (harmless if it arrived) and the outcome learned, never guessed.
        A no-op while the transaction is :meth:`active`. Without ``acceptors``, the
        configured (or last learned) ones are used."""
        if self.active(txn_id):
            return
        addrs = list(acceptors) or list(self.acceptors)
        ctx = TransactionContext(txn_id, coordinator or self.client.coordinators[0])
        self._joined[txn_id] = (ctx, addrs)
        n = self._use_acceptors(addrs)
        self._step(lambda now, out: self._core.resume(txn_id, ctx.coordinator, n, now, out))

    async def abandon(self, txn_id: str, acceptors: Sequence[str] = ()) -> None:
        """After a restart: abort a transaction this RM joined but never prepared (it may,
        pitfall 3), and vote ``aborted`` so the transaction need not wait for a timeout."""
        if self.active(txn_id):
            return
        n = self._use_acceptors(list(acceptors) or list(self.acceptors))
        self._step(lambda now, out: self._core.abandon(txn_id, n, now, out))
        await self.wait(txn_id)

    async def learn_from_acceptors(self, txn_id: str, acceptors: Sequence[str]) -> Outcome:
        """Learn the outcome of ``txn_id`` from the acceptors, without any coordinator:
        read what they accepted (or recorded) and, if that does not decide it, run higher
        ballots as a leader with this participant's fresh id (free instances get
        ``aborted``, pitfall 4). Returns PENDING if no majority of acceptors answered.
        Records nothing itself. While ``txn_id`` is :meth:`active`, its own acceptors are
        used."""
        addrs = (
            list(acceptors)
            if not self.active(txn_id)
            else self._joined.get(txn_id, (None, list(acceptors)))[1]
        )
        if not addrs or len(addrs) % 2 == 0:
            log.warning("rm %s: cannot recover %s: acceptors unknown", self.rm.rm_id, txn_id)
            return Outcome.PENDING
        n = self._use_acceptors(addrs)
        if not self.active(txn_id):
            self._learn_addrs[txn_id] = addrs
        token = object()
        fut: asyncio.Future[Any] = self._running_loop().create_future()
        self._learning[token] = fut
        try:
            self._step(lambda now, out: self._core.learn(token, txn_id, n, now, out))
            msg = await fut
        finally:
            self._learning.pop(token, None)
            self._learn_addrs.pop(txn_id, None)
        if isinstance(msg, Decided):
            log.info(
                "rm %s: learned %s for %s from the acceptors",
                self.rm.rm_id,
                msg.decision.outcome.value,
                txn_id,
            )
            return msg.decision.outcome
        return Outcome.PENDING

    # ------------------------------------------------------------------ the driver

    def _use_acceptors(self, addrs: list[str]) -> int:
        """Remember which acceptors the core's sends for a transaction go to."""
        if not addrs or len(addrs) % 2 == 0:
            if addrs:
                log.warning("rm %s: ignoring an even number of acceptors: %s", self.rm.rm_id, addrs)
            return 0
        key = tuple(addrs)
        if key not in self._links and not self._closed:  # none after close: nobody would close it
            self._links[key] = StreamAcceptors(
                addrs,
                self._on_acceptor,
                rpc_timeout=self.rpc_timeout,
                deliver_many=self._on_acceptors,
                credentials=self._channels.credentials,
            )
        return len(addrs)

    def _link_for(self, txn_id: str) -> StreamAcceptors | None:
        j = self._joined.get(txn_id)
        addrs = self._learn_addrs.get(txn_id) or (j[1] if j is not None and j[1] else self.acceptors)
        return self._links.get(tuple(addrs))

    def _future(self, table: dict[str, asyncio.Future[RMState]], txn_id: str) -> asyncio.Future[RMState]:
        f = table.get(txn_id)
        if f is None or f.cancelled():
            f = table[txn_id] = self._running_loop().create_future()
        return f

    def _step(self, fn: Callable[[float, Ready], None]) -> None:
        """One step of the core, then its Ready carried out, then the timer re-armed."""
        if self._closed:
            return
        out = Ready()
        fn(time.monotonic(), out)
        self._execute(out)
        self._arm()

    def _arm(self) -> None:
        nd = self._core.next_deadline()
        if nd is None or (self._timer_at is not None and self._timer_at <= nd):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = nd
        self._timer = self._running_loop().call_later(max(0.0, nd - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._step(self._core.tick)

    def _execute(self, out: Ready) -> None:
        for ev in out.trace:
            proc = f"rm:{self.rm.rm_id}" if ev.name in _RM_EVENTS else None
            tracing.event(ev.name, ev.txn_id, proc=proc, **ev.fields)
        for txn_id, text in out.log:
            log.info("rm %s: %s: %s", self.rm.rm_id, txn_id, text)
        for i, req in out.sends:
            link = self._link_for(req.txn_id)
            if link is not None:
                link.send(i, req)
        for token, msg in out.replies:
            f = self._learning.get(token)
            if f is not None and not f.done():
                f.set_result(msg)
        for eff in out.effects:
            if isinstance(eff, CallResource):
                self._spawn(self._call_resource(eff))
            elif isinstance(eff, CallCoordinator):
                if not self._bind_follow(eff):
                    self._spawn(self._call_coordinator(eff))
            elif isinstance(eff, Applied):
                self._resolve(self._applied, eff.txn_id, eff.state)
                if self._vote_spans:
                    # The acceptors' 2b answer the vote lazily: the outcome may come first.
                    otel.end(self._vote_spans.pop(eff.txn_id, None), {"paxos.vote_acked": False})
            elif isinstance(eff, Ended):
                self._resolve(self._ended, eff.txn_id, eff.state)
                follow = self._follows.pop(eff.txn_id, None)
                if follow is not None:
                    follow.close()
                # Kept while the core keeps the outcome (its bounded cache), no longer.
                self._done.append(eff.txn_id)
                while len(self._done) > self._core.timeouts.keep_finished:
                    old = self._done.popleft()
                    if not self._core.active(old):
                        self._joined.pop(old, None)
                if self._vote_spans:
                    otel.end(self._vote_spans.pop(eff.txn_id, None), {"paxos.vote_acked": False})

    @staticmethod
    def _resolve(table: dict[str, asyncio.Future[RMState]], txn_id: str, state: RMState) -> None:
        f = table.pop(txn_id, None)
        if f is not None and not f.done():
            f.set_result(state)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = self._running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_acceptor(self, reply: AcceptorReply) -> None:
        if self._vote_spans:
            self._vote_acked(reply)
        self._step(lambda now, out: self._core.on_acceptor(reply, now, out))

    def _vote_acked(self, reply: AcceptorReply) -> None:
        """Tracing on: a ballot-0 vote's span ends when the first acceptor accepted it."""
        if isinstance(reply, Phase2b):
            st = reply.states.get(self.rm.rm_id)
            if st is not None and st.bal == RM_BALLOT:
                otel.end(self._vote_spans.pop(reply.txn_id, None), {"paxos.acceptor": reply.acceptor})

    def _on_acceptors(self, replies: list[AcceptorReply]) -> None:
        """One incoming batch, one core step."""
        if self._vote_spans:
            for r in replies:
                self._vote_acked(r)

        def step(now: float, out: Ready) -> None:
            for r in replies:
                self._core.on_acceptor(r, now, out)

        self._step(step)

    async def _call_resource(self, eff: CallResource) -> None:
        txn_id = eff.txn_id
        span = otel.start(_SPANS[eff.op], txn_id, {"paxos.rm_id": self.rm.rm_id}) if otel.on else None
        if eff.op is ResourceOp.PREPARE:
            vote: Vote | None
            try:
                vote = await self.rm.prepare(txn_id)
            except Exception:
                log.exception("rm %s: prepare of %s failed: voting abort", self.rm.rm_id, txn_id)
                vote = None
            if span is not None:
                otel.end(span, {"paxos.vote": vote.value if vote else "aborted"})
                self._vote_spans[txn_id] = otel.start(
                    "paxos.vote",
                    txn_id,
                    {"paxos.rm_id": self.rm.rm_id, "paxos.vote": vote.value if vote else "aborted"},
                )
            self._step(lambda now, out: self._core.on_prepared(txn_id, vote, now, out))
            return
        try:
            if eff.op is ResourceOp.COMMIT:
                await self.rm.commit(txn_id)
            else:
                await self.rm.abort(txn_id)
            ok = True
        except Exception:
            log.exception("rm %s: applying %s to %s failed; retrying", self.rm.rm_id, eff.op.value, txn_id)
            ok = False
        otel.end(
            span,
            {"paxos.outcome": "committed" if eff.op is ResourceOp.COMMIT else "aborted"},
            error="" if ok else "apply failed; retrying",
        )
        self._step(lambda now, out: self._core.on_applied(txn_id, ok, now, out))

    async def _call_coordinator(self, eff: CallCoordinator) -> None:
        req = eff.request
        reply: CoordinatorReply
        try:
            if isinstance(req, AwaitPrepare):
                r = await self._channels.coordinator(eff.coordinator).AwaitPrepare(
                    pb.AwaitPrepareRequest(txn_id=req.txn_id, rm_id=req.rm_id, wait_ms=int(req.wait * 1000)),
                    timeout=req.wait + self.rpc_timeout,
                )
                reply = _prepare_reply(req, r)
            elif isinstance(req, Acknowledge):
                await self._acknowledge(req, eff.coordinator)
                reply = Acknowledged(req.txn_id, req.rm_id)
            else:
                assert isinstance(req, AskOutcome)
                o, reason = await self.client.outcome(
                    req.txn_id, wait=req.wait, prefer=eff.coordinator or None
                )
                if o is Outcome.PENDING:
                    reply = Pending(req.txn_id)
                else:
                    cause = AbortCause.UNKNOWN if o is Outcome.ABORTED else None
                    reply = Decided(req.txn_id, Decision(o, cause, reason=reason))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                reply = Unknown(req.txn_id, exc.details() or "")
            else:
                if exc.code() not in TRANSIENT:
                    log.warning(
                        "rm %s: %s of %s: %s", self.rm.rm_id, type(req).__name__, req.txn_id, exc.details()
                    )
                reply = Unreachable(req.txn_id, exc.details() or exc.code().name)
        except Exception as exc:  # a reply we cannot read: as good as lost
            log.warning("rm %s: %s of %s failed: %r", self.rm.rm_id, type(req).__name__, req.txn_id, exc)
            reply = Unreachable(req.txn_id, repr(exc))
        self._step(lambda now, out: self._core.on_coordinator(req.txn_id, req, reply, now, out))

    async def _acknowledge(self, req: Acknowledge, prefer: str) -> None:
        """To the coordinator the RM joined at (the owner counts it), then, if it does not
        answer, to each other replica (one that does not own the transaction passes it on
        to the acceptors): the answer comes once a majority of acceptors hold the ack."""
        first = prefer or self.client.coordinators[0]
        addrs = [first, *(a for a in self.client.coordinators if a != first)]
        request = pb.AcknowledgeRequest(
            txn_id=req.txn_id, rm_id=req.rm_id, outcome=outcome_to_pb(req.outcome)
        )
        for k, addr in enumerate(addrs):
            try:
                await self._channels.coordinator(addr).Acknowledge(
                    request, timeout=self.rpc_timeout, lazy=not req.urgent
                )
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT or k == len(addrs) - 1:
                    raise


class _Follow:
    """A following join (JoinRequest.follow): one request whose later replies answer the
    core's AwaitPrepare, then its AskOutcome, as the core asks for them."""

    __slots__ = ("bound", "coord", "early", "ended", "expect", "first", "seq", "timer", "txn_id")

    def __init__(self, txn_id: str, coord: StreamCoordinator) -> None:
        self.txn_id = txn_id
        self.coord = coord
        self.seq = 0
        self.first: asyncio.Future[pb.JoinReply] | None = None
        #: Replies that came before the core asked for them.
        self.early: list[pb.CoordinatorReply | grpc.aio.AioRpcError] = []
        #: The core's request the next reply answers, and the kind it may be.
        self.bound: AwaitPrepare | AskOutcome | None = None
        self.expect: type = AwaitPrepare
        self.ended = False
        self.timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.ended:
            self.ended = True
            self.coord.unfollow(self.seq)


def _expire_first(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


def _refusal_error(refused: pb.Refusal) -> grpc.aio.AioRpcError:
    code = grpc.StatusCode[refused.code] if refused.code in grpc.StatusCode.__members__ else None
    return _rpc_error(code or grpc.StatusCode.UNKNOWN, refused.detail)


def _follow_to_core(
    req: AwaitPrepare | AskOutcome, r: pb.CoordinatorReply | grpc.aio.AioRpcError
) -> CoordinatorReply:
    """A following join's reply as the core reply to ``req`` (what the plain request's
    answer would have been)."""
    if isinstance(r, pb.CoordinatorReply):
        kind = r.WhichOneof("msg")
        if kind == "await_prepare" and isinstance(req, AwaitPrepare):
            return _prepare_reply(req, r.await_prepare)
        if kind == "get_outcome" and isinstance(req, AskOutcome):
            g = r.get_outcome
            if outcome_from_pb(g.outcome) is Outcome.PENDING:
                return Pending(req.txn_id)
            return Decided(
                req.txn_id, decision_from_pb(g.outcome, g.reason, g.cause, g.rm_id), ack_awaited=g.ack_awaited
            )
        if kind == "refused":
            r = _refusal_error(r.refused)
        else:
            return Unreachable(req.txn_id, f"unexpected {kind} reply")
    if r.code() == grpc.StatusCode.NOT_FOUND:
        return Unknown(req.txn_id, r.details() or "")
    return Unreachable(req.txn_id, r.details() or r.code().name)


def _prepare_reply(req: AwaitPrepare, r: pb.AwaitPrepareReply) -> CoordinatorReply:
    if r.prepare:
        return Prepare(req.txn_id, req.rm_id)
    if outcome_from_pb(r.outcome) is Outcome.PENDING:
        return Prepare(req.txn_id, req.rm_id, prepare=False)
    return Decided(
        req.txn_id, decision_from_pb(r.outcome, r.reason, r.cause, r.rm_id), ack_awaited=r.ack_awaited
    )
