"""Carries the core's acceptor requests as unary RPCs and brings the replies back as core
messages. A lost call becomes :class:`~rm_sdk.core.messages.NoAnswer`, a refusal
:class:`~rm_sdk.core.messages.Refused`: the core decides what to do about either."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from rm_sdk import tracing
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
from rm_sdk.protocol import ProtocolError
from rm_sdk.wire import (
    bundle_from_pb,
    outcome_to_pb,
    pb,
    phase1a_to_pb,
    phase1b_from_pb,
    phase2a_to_pb,
    phase2b_from_pb,
)

__all__ = ["UnaryAcceptors"]

log = logging.getLogger("paxos_commit.acceptors")

#: Status codes that mean "no answer", not "the request was wrong".
_LOST = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})


class UnaryAcceptors:
    """Channels to the 2F+1 acceptors, indexed by acceptor id; one RPC per request."""

    def __init__(
        self,
        addresses: Sequence[str],
        deliver: Callable[[AcceptorReply], None],
        *,
        rpc_timeout: float = 3.0,
    ) -> None:
        if not addresses or len(addresses) % 2 == 0:
            raise ValueError(f"need 2F+1 acceptors (an odd number), got {len(addresses)}")
        self.addresses = list(addresses)
        self.deliver = deliver
        self.rpc_timeout = rpc_timeout
        self.channels = [
            grpc.aio.insecure_channel(a, interceptors=tracing.client_interceptors()) for a in self.addresses
        ]
        self.stubs: list[pb_grpc.AcceptorAsyncStub] = [pb_grpc.AcceptorStub(c) for c in self.channels]
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def n(self) -> int:
        return len(self.addresses)

    def send(self, acceptor: int, msg: AcceptorRequest) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._call(acceptor, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, i: int, msg: AcceptorRequest) -> None:
        stub = self.stubs[i]
        reply: AcceptorReply
        try:
            if isinstance(msg, Phase1a):
                reply = phase1b_from_pb(i, await stub.Phase1a(phase1a_to_pb(msg), timeout=self.rpc_timeout))
            elif isinstance(msg, Phase2a):
                reply = phase2b_from_pb(i, await stub.Phase2a(phase2a_to_pb(msg), timeout=self.rpc_timeout))
            elif isinstance(msg, BundleRequest):
                req = pb.AwaitPhase2bRequest(txn_id=msg.txn_id, wait_ms=int(msg.wait * 1000))
                reply = bundle_from_pb(i, await stub.AwaitPhase2b(req, timeout=msg.wait + self.rpc_timeout))
            else:
                assert isinstance(msg, RecordOutcome)
                rec = pb.RecordOutcomeRequest(txn_id=msg.txn_id, outcome=outcome_to_pb(msg.outcome))
                await stub.RecordOutcome(rec, timeout=self.rpc_timeout)
                reply = OutcomeRecorded(msg.txn_id, i)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _LOST:
                reply = NoAnswer(msg.txn_id, i, msg)
            else:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    log.warning("acceptor %d: %s: %s", i, exc.code().name, exc.details())
                reply = Refused(msg.txn_id, i, msg, exc.details() or exc.code().name)
        except ProtocolError as exc:  # a reply we cannot read: as good as lost
            log.warning("acceptor %d: malformed reply: %s", i, exc)
            reply = NoAnswer(msg.txn_id, i, msg)
        if not self._closed:
            self.deliver(reply)

    async def close(self) -> None:
        self._closed = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self.channels:
            await c.close(None)
