"""Acceptor links over batched streams: one long-lived bidi stream per acceptor.

The core's requests are queued per acceptor; a writer sends, in one stream message,
everything queued while its previous write was in flight (no timer, no fixed delay), and
replies come back as core messages matched by ``seq``. A broken stream fails its pending
requests as :class:`~rm_sdk.core.messages.NoAnswer` at once (the core moves on to
another acceptor) and is re-dialled with back-off; while it is down, requests fail at
once instead of queueing. Nothing here is trusted for delivery, order or deduplication:
the protocol needs none of it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from rm_sdk import tracing
from rm_sdk._addresses import check_addresses
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.core.messages import (
    AcceptorReply,
    AcceptorRequest,
    BundleRequest,
    NoAnswer,
    OutcomeRecorded,
    Phase1a,
    Phase2a,
    RecordOutcome,
    Refused,
)
from rm_sdk.protocol import ProtocolError, validate_id
from rm_sdk.wire import (
    bundle_from_pb,
    pb,
    phase1a_to_pb,
    phase1b_from_pb,
    phase2a_to_pb,
    phase2b_from_pb,
    record_outcome_to_pb,
)

__all__ = ["StreamAcceptors", "StreamCoordinator", "open_channel"]

log = logging.getLogger("paxos_commit.streams")

#: Requests in flight on one link beyond which new ones fail at once (back-pressure).
MAX_PENDING = 20_000

#: Longest wait of a lazy message: one nobody waits on (an acknowledgement, an outcome
#: record, the answers to those, the 2b of an RM's own vote). It does not wake its
#: stream's writer: it leaves with the next message that does, or after this many
#: seconds. Under load every write carries some; when idle, a transaction's
#: bookkeeping rides on the next one's messages instead of costing writes of its own.
LAZY_FLUSH = 0.02


def kick(
    wake: asyncio.Event,
    lazy: bool,
    flush: asyncio.TimerHandle | None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> asyncio.TimerHandle | None:
    """A message was queued for the writer that waits on ``wake``: wake it, or, for a lazy
    one, make sure a flush is pending (``flush``). Returns the pending flush."""
    if not lazy:
        wake.set()
    elif flush is None and not wake.is_set():
        flush = (loop or asyncio.get_running_loop()).call_later(LAZY_FLUSH, wake.set)
    return flush


def flushed(flush: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """The writer took everything queued (or gave it up): cancel the pending ``flush``.
    Returns the new pending flush: none."""
    if flush is not None:
        flush.cancel()
    return None


async def _ended(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` (already told to stop) has ended, whatever its result, its
    exception retrieved. A cancellation of the waiter itself still propagates: waiting
    while suppressing CancelledError would swallow it, and a link stopped while it was
    waiting for its broken stream's reader would redial forever (and its close hang)."""
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None
) -> grpc.aio.Channel:
    """A channel to one service: TLS with ``credentials``, else plain text. ``server_name``:
    the name the server's certificate must carry, if not the dialled host."""
    if credentials is None:
        return grpc.aio.insecure_channel(address, interceptors=tracing.client_interceptors())
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(
        address, credentials, options=options, interceptors=tracing.client_interceptors()
    )


def request_body(msg: AcceptorRequest) -> tuple[str, Any]:
    """The AcceptorRequest field and message that carry ``msg`` (without its seq)."""
    if isinstance(msg, Phase1a):
        return "phase1a", phase1a_to_pb(msg)
    if isinstance(msg, Phase2a):
        return "phase2a", phase2a_to_pb(msg)
    if isinstance(msg, BundleRequest):
        return "await_phase2b", pb.AwaitPhase2bRequest(txn_id=msg.txn_id, wait_ms=int(msg.wait * 1000))
    return "record_outcome", record_outcome_to_pb(msg)


def reply_from_pb(acceptor: int, r: pb.AcceptorReply, request: AcceptorRequest) -> AcceptorReply:
    """The core message for one reply (a malformed reply counts as no answer)."""
    kind = r.WhichOneof("msg")
    try:
        if kind == "phase1b":
            return phase1b_from_pb(acceptor, r.phase1b)
        if kind == "phase2b":
            return phase2b_from_pb(acceptor, r.phase2b)
        if kind == "bundle":
            return bundle_from_pb(acceptor, r.bundle)
        if kind == "recorded":
            rec = r.recorded
            acked = frozenset(validate_id("rm id", a) for a in rec.acknowledged)
            return OutcomeRecorded(request.txn_id, acceptor, acked, rec.collected)
        if kind == "refused":
            if r.refused.code == "UNAVAILABLE":  # the acceptor's storage failed: no answer
                return NoAnswer(request.txn_id, acceptor, request)
            if r.refused.code not in ("FAILED_PRECONDITION",):
                log.warning("acceptor %d refused: %s: %s", acceptor, r.refused.code, r.refused.detail)
            return Refused(request.txn_id, acceptor, request, r.refused.detail or r.refused.code)
    except ProtocolError as exc:
        log.warning("acceptor %d: malformed reply: %s", acceptor, exc)
    return NoAnswer(request.txn_id, acceptor, request)


class _Link:
    def __init__(self, owner: StreamAcceptors, index: int, channel: grpc.aio.Channel) -> None:
        self.owner = owner
        self.index = index
        self.stub: pb_grpc.AcceptorAsyncStub = pb_grpc.AcceptorStub(channel)
        self.queue: list[pb.AcceptorRequest] = []
        #: seq -> (the core requests it carries, its deadline): one, or a registrar 2a
        #: with its bundle request (answered twice).
        self.pending: dict[int, tuple[list[AcceptorRequest], float]] = {}
        self.seq = itertools.count(1)
        self.wake = asyncio.Event()
        self.lazy: asyncio.TimerHandle | None = None
        #: Down after a stream broke, until a new one answers; requests then fail at once.
        self.down = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"acceptor-link-{index}")

    def send(self, msg: AcceptorRequest, now: float, body: tuple[str, Any]) -> None:
        """``body``: :func:`request_body` of ``msg``, built once however many acceptors
        it goes to."""
        if self.down or len(self.pending) >= MAX_PENDING:
            # Never answer inside send(): the core is mid-step, and a synchronous answer
            # would re-enter it (and recurse while the acceptor stays down).
            self.owner.deliver_soon(NoAnswer(msg.txn_id, self.index, msg))
            return
        wait = msg.wait if isinstance(msg, BundleRequest) else 0.0
        deadline = now + wait + self.owner.rpc_timeout
        if isinstance(msg, BundleRequest) and self.queue:
            last = self.queue[-1]
            if last.WhichOneof("msg") == "phase2a" and last.phase2a.txn_id == msg.txn_id:
                # Right after a 2a of the same transaction, not yet written: one message.
                last.then_bundle.wait_ms = int(msg.wait * 1000)
                reqs, _ = self.pending[last.seq]
                reqs.append(msg)
                self.pending[last.seq] = (reqs, deadline)
                return
        seq = next(self.seq)
        self.pending[seq] = ([msg], deadline)
        kind, m = body
        self.queue.append(pb.AcceptorRequest(seq=seq, **{kind: m}))
        self.lazy = kick(self.wake, isinstance(msg, RecordOutcome), self.lazy, self.owner._loop)

    def fail_pending(self, older_than: float | None = None) -> None:
        """Give up on pending requests (all, or those past their deadline)."""
        lost = [
            (seq, reqs)
            for seq, (reqs, deadline) in self.pending.items()
            if older_than is None or deadline <= older_than
        ]
        for seq, reqs in lost:
            del self.pending[seq]
            for msg in reqs:
                self.owner.deliver(NoAnswer(msg.txn_id, self.index, msg))

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            call = self.stub.Stream(None)
            reader = asyncio.get_running_loop().create_task(self._read(call))
            reader.add_done_callback(lambda _: self.wake.set())  # a broken stream wakes the writer
            try:
                # An empty batch opens the stream; the acceptor answers it, which ends `down`.
                await call.write(pb.AcceptorRequestBatch(lamport=tracing.stamp()))
                while not reader.done():
                    if not self.queue:
                        self.wake.clear()
                        await self.wake.wait()
                        continue
                    batch, self.queue = self.queue, []
                    self.lazy = flushed(self.lazy)
                    await call.write(pb.AcceptorRequestBatch(requests=batch, lamport=tracing.stamp()))
                    if self.down is False:
                        backoff = 0.05
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
                log.debug("acceptor %d stream: %s", self.index, exc)
            finally:
                reader.cancel()
                call.cancel()
                await _ended(reader)
            self.down = True
            self.queue.clear()
            self.lazy = flushed(self.lazy)
            self.fail_pending()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _read(self, call: Any) -> None:
        async for batch in call:
            tracing.merge(batch.lamport)
            self.down = False
            got: list[AcceptorReply] = []
            for r in batch.replies:
                entry = self.pending.get(r.seq)
                if entry is None:
                    continue
                reqs = entry[0]
                # A 2a's bundle may be answered before the 2a itself: match by kind.
                at = len(reqs) - 1 if r.WhichOneof("msg") == "bundle" else 0
                got.append(reply_from_pb(self.index, r, reqs.pop(at)))
                if not r.more or not reqs:
                    del self.pending[r.seq]
                    got.extend(NoAnswer(m.txn_id, self.index, m) for m in reqs)
            if got:
                self.owner.deliver_many(got)


class StreamAcceptors:
    """The 2F+1 acceptors, indexed by acceptor id, each over one batched stream; the
    interface the drivers of the core send acceptor requests through."""

    def __init__(
        self,
        addresses: Sequence[str],
        deliver: Callable[[AcceptorReply], None],
        *,
        rpc_timeout: float = 3.0,
        deliver_many: Callable[[list[AcceptorReply]], None] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``deliver`` gets each reply (or NoAnswer); ``deliver_many``, if given, gets the
        replies of one incoming batch at once (the driver then runs one core step)."""
        self.addresses = check_addresses("acceptor", addresses)
        if len(self.addresses) % 2 == 0:
            raise ValueError(f"need 2F+1 acceptors (an odd number), got {len(self.addresses)}")
        self._deliver = deliver
        self._deliver_many = deliver_many
        self.rpc_timeout = rpc_timeout
        # credentials: mTLS (this process's certificate, the CA); None: plain text.
        self.channels = [open_channel(a, credentials) for a in self.addresses]
        #: Unary stubs, for health checks and ListUndecided.
        self.stubs: list[pb_grpc.AcceptorAsyncStub] = [pb_grpc.AcceptorStub(c) for c in self.channels]
        self._links: list[_Link] | None = None
        #: The last message sent and its protobuf body: a vote, a registrar's 2a or an
        #: outcome record goes to several acceptors in a row, converted once.
        self._last: tuple[AcceptorRequest | None, tuple[str, Any]] = (None, ("", None))
        self._prev: tuple[AcceptorRequest | None, tuple[str, Any]] = (None, ("", None))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        #: Channels replaced by set_credentials, closed with this object (their streams
        #: run on until they break; new ones use the new channels).
        self._retired: list[grpc.aio.Channel] = []

    def set_credentials(self, credentials: grpc.ChannelCredentials | None) -> None:
        """Rotated certificates: new channels with ``credentials``, used by every stream
        dialled from now on (a stream that is up keeps its connection)."""
        self._retired += self.channels
        self.channels = [open_channel(a, credentials) for a in self.addresses]
        self.stubs = [pb_grpc.AcceptorStub(c) for c in self.channels]
        for link, c in zip(self._links or (), self.channels, strict=False):
            link.stub = pb_grpc.AcceptorStub(c)

    @property
    def n(self) -> int:
        return len(self.addresses)

    def depth(self, acceptor: int) -> tuple[int, int]:
        """(requests queued for the link's next write, requests without an answer yet:
        sent or queued) of one acceptor's link; (0, 0) before the links start."""
        links = self._links
        if links is None:
            return 0, 0
        link = links[acceptor]
        return len(link.queue), len(link.pending)

    def deliver(self, msg: AcceptorReply) -> None:
        if not self._closed:
            self._deliver(msg)

    def deliver_many(self, msgs: list[AcceptorReply]) -> None:
        if self._closed:
            return
        if self._deliver_many is not None:
            self._deliver_many(msgs)
            return
        for m in msgs:
            self._deliver(m)

    def deliver_soon(self, msg: AcceptorReply) -> None:
        asyncio.get_running_loop().call_soon(self.deliver, msg)

    def send(self, acceptor: int, msg: AcceptorRequest) -> None:
        if self._closed:
            return
        if self._links is None:  # started lazily: the links need the running loop
            # Cached: asyncio.get_running_loop() is a getpid() system call in CPython 3.11.
            self._loop = loop = asyncio.get_running_loop()
            self._links = [_Link(self, i, c) for i, c in enumerate(self.channels)]
            self._sweeper = loop.create_task(self._sweep(), name="acceptor-link-sweep")
        assert self._loop is not None
        # The last two messages' bodies: a registrar's 2a goes out with its bundle request.
        (last, body), (prev, prev_body) = self._last, self._prev
        if last is not msg:
            body = prev_body if prev is msg else request_body(msg)
            self._prev = self._last
            self._last = (msg, body)
        self._links[acceptor].send(msg, self._loop.time(), body)

    async def _sweep(self) -> None:
        """Requests an acceptor never answered (it is paused, or lost them) become NoAnswer
        after their deadline, so nothing waits on them and the pending maps stay bounded."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            for link in self._links or ():
                link.fail_pending(older_than=loop.time())

    async def close(self) -> None:
        self._closed = True
        tasks = [link.task for link in self._links or ()]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in [*self.channels, *self._retired]:
            await c.close(None)


# ---------------------------------------------------------------- coordinator calls


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error the unary call would have raised, so callers handle both alike."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


def unwrap(r: pb.CoordinatorReply) -> pb.CoordinatorReply:
    """``r``, or the error the unary call would have raised if it is a refusal."""
    if r.WhichOneof("msg") == "refused":
        code = grpc.StatusCode[r.refused.code] if r.refused.code in grpc.StatusCode.__members__ else None
        raise _rpc_error(code or grpc.StatusCode.UNKNOWN, r.refused.detail)
    return r


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


class StreamCoordinator:
    """The Coordinator service's calls over one batched stream per coordinator address,
    with the unary stub's methods (``Begin(request, timeout=...)`` and so on), so every
    call of a process to that coordinator, from every transaction, shares one stream."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub: pb_grpc.CoordinatorAsyncStub = pb_grpc.CoordinatorStub(channel)
        self._queue: list[pb.CoordinatorRequest] = []
        self._pending: dict[int, asyncio.Future[pb.CoordinatorReply]] = {}
        #: Requests answered more than once (a following join): seq -> callback.
        self._follows: dict[int, Callable[[pb.CoordinatorReply | grpc.aio.AioRpcError], None]] = {}
        self._seq = itertools.count(1)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lazy: asyncio.TimerHandle | None = None

    async def Begin(self, request: pb.BeginRequest, timeout: float | None = None) -> pb.BeginReply:
        r = await self._call(pb.CoordinatorRequest(begin=request), timeout)
        return r.begin

    async def Join(self, request: pb.JoinRequest, timeout: float | None = None) -> pb.JoinReply:
        r = await self._call(pb.CoordinatorRequest(join=request), timeout)
        return r.join

    async def AwaitPrepare(
        self, request: pb.AwaitPrepareRequest, timeout: float | None = None
    ) -> pb.AwaitPrepareReply:
        r = await self._call(pb.CoordinatorRequest(await_prepare=request), timeout)
        return r.await_prepare

    async def Commit(self, request: pb.CommitRequest, timeout: float | None = None) -> pb.CommitReply:
        r = await self._call(pb.CoordinatorRequest(commit=request), timeout)
        return r.commit

    async def Abort(self, request: pb.AbortRequest, timeout: float | None = None) -> pb.AbortReply:
        r = await self._call(pb.CoordinatorRequest(abort=request), timeout)
        return r.abort

    async def GetOutcome(
        self, request: pb.GetOutcomeRequest, timeout: float | None = None
    ) -> pb.GetOutcomeReply:
        r = await self._call(pb.CoordinatorRequest(get_outcome=request), timeout)
        return r.get_outcome

    async def Acknowledge(
        self, request: pb.AcknowledgeRequest, timeout: float | None = None, lazy: bool = False
    ) -> pb.AcknowledgeReply:
        """``lazy``: nobody waits on it; it leaves with the next write (:data:`LAZY_FLUSH`)."""
        r = await self._call(pb.CoordinatorRequest(acknowledge=request), timeout, lazy)
        return r.acknowledge

    def follow(
        self,
        req: pb.CoordinatorRequest,
        on_reply: Callable[[pb.CoordinatorReply | grpc.aio.AioRpcError], None],
    ) -> int:
        """Send a request that may be answered several times (a JoinRequest with follow):
        ``on_reply`` gets each reply as it arrives, or the error that ends the stream
        (once; no reply follows it). Returns its seq, for :meth:`unfollow`."""
        self._ensure_running()
        seq = next(self._seq)
        req.seq = seq
        self._follows[seq] = on_reply
        self._queue.append(req)
        assert self._wake is not None
        self._wake.set()
        return seq

    def unfollow(self, seq: int) -> None:
        """Stop delivering replies to ``seq`` (its caller gave up on it)."""
        self._follows.pop(seq, None)

    def _ensure_running(self) -> asyncio.AbstractEventLoop:
        """Start the stream if it is not running; the loop it runs on (cached:
        asyncio.get_running_loop() is a getpid() system call in CPython 3.11)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="coordinator-link")
        return loop

    @property
    def connected(self) -> bool:
        """The stream is up (a request sent now goes on it, after what was sent before)."""
        return self._task is not None and not self._task.done()

    def submit(
        self, req: pb.CoordinatorRequest, timeout: float | None, lazy: bool = False
    ) -> asyncio.Future[pb.CoordinatorReply]:
        """Send ``req`` now without waiting for its answer: the future gets the reply (a
        refusal is raised by :func:`unwrap`) or the error the awaited call would raise.
        ``lazy``: it leaves with the next write, or after :data:`LAZY_FLUSH`."""
        loop = self._ensure_running()
        seq = next(self._seq)
        req.seq = seq
        fut: asyncio.Future[pb.CoordinatorReply] = loop.create_future()
        self._pending[seq] = fut
        self._queue.append(req)
        assert self._wake is not None
        self._lazy = kick(self._wake, lazy, self._lazy, loop)
        # A timer, not wait_for: no extra task per call.
        timer = None if timeout is None else loop.call_later(timeout, _expire, fut)

        def done(f: asyncio.Future[pb.CoordinatorReply]) -> None:
            self._pending.pop(seq, None)
            if timer is not None:
                timer.cancel()
            if not f.cancelled():
                f.exception()  # retrieved: the caller may never look (an abandoned transaction)

        fut.add_done_callback(done)
        return fut

    async def _call(
        self, req: pb.CoordinatorRequest, timeout: float | None, lazy: bool = False
    ) -> pb.CoordinatorReply:
        return unwrap(await self.submit(req, timeout, lazy))

    def _fail_all(self, details: str) -> None:
        self._lazy = flushed(self._lazy)
        pending, self._pending = self._pending, {}
        follows, self._follows = self._follows, {}
        self._queue.clear()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(_rpc_error(grpc.StatusCode.UNAVAILABLE, details))
        for cb in follows.values():
            cb(_rpc_error(grpc.StatusCode.UNAVAILABLE, details))

    async def _run(self) -> None:
        """One long-lived stream; a broken one fails its calls as UNAVAILABLE (the
        callers' retry logic is the unary one's), and the next call dials again."""
        assert self._wake is not None
        wake = self._wake
        call = self._stub.Stream(None)

        async def read() -> None:
            async for batch in call:
                tracing.merge(batch.lamport)
                for r in batch.replies:
                    fut = self._pending.get(r.seq)
                    if fut is not None:
                        if not fut.done():
                            fut.set_result(r)
                        continue
                    cb = self._follows.get(r.seq) if r.more else self._follows.pop(r.seq, None)
                    if cb is not None:
                        cb(r)

        reader = asyncio.get_running_loop().create_task(read())
        reader.add_done_callback(lambda _: wake.set())
        details = "the stream to the coordinator ended"
        try:
            while not reader.done():
                if not self._queue:
                    wake.clear()
                    await wake.wait()
                    continue
                batch, self._queue = self._queue, []
                self._lazy = flushed(self._lazy)
                await call.write(pb.CoordinatorRequestBatch(requests=batch, lamport=tracing.stamp()))
            if not reader.cancelled() and isinstance(reader.exception(), grpc.aio.AioRpcError):
                err = reader.exception()
                assert isinstance(err, grpc.aio.AioRpcError)
                details = err.details() or details
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            details = (exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)) or details
        finally:
            reader.cancel()
            call.cancel()
            self._fail_all(details)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await _ended(self._task)
        self._fail_all("closed")
