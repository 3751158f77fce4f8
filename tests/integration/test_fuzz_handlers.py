"""A bounded property-based fuzz (hypothesis) of the acceptor's request handlers (issue
9), in process over a real SQLite store: every request, from every identity, gets a reply
carrying its seq, with a code we mean (never UNKNOWN or INTERNAL) and a bounded detail,
and a refused request changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paxos_commit.guard import Undecodable
from rm_sdk.identity import Identity
from rm_sdk.wire import pb
from tests.unit.test_fuzz import identities, requests

_ALLOWED_CODES = {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "UNAUTHENTICATED"}


async def _one(servicer: Any, req: Any, ident: Identity | None) -> pb.AcceptorReply:
    """One request through the stream handler (as one batch), and its one reply."""
    from paxos_commit.serving import StreamReplies

    replies = StreamReplies()
    servicer._on_requests([req], replies, ident)
    while not replies._out:
        replies._wake.clear()
        await replies._wake.wait()
    (reply,) = replies._out
    assert isinstance(reply, pb.AcceptorReply)
    return reply


async def _run_acceptor(batch: list[tuple[pb.AcceptorRequest, Identity | None]], root: Path) -> None:
    from acceptor.service import AcceptorServicer
    from acceptor.storage import AcceptorStore, sqlite_url

    store = AcceptorStore(sqlite_url(root / "a.db"), 0, init=True)
    await store.start()
    try:
        servicer = AcceptorServicer(store, secure=True)
        for seq, (req, ident) in enumerate(batch, 1):
            req.seq = seq
            before = await store.read(
                (req.WhichOneof("msg") and getattr(req, req.WhichOneof("msg")).txn_id) or "t1"
            )
            reply = await asyncio.wait_for(_one(servicer, req, ident), 5)
            assert reply.seq == seq
            code = reply.refused.code if reply.WhichOneof("msg") == "refused" else "OK"
            assert code in _ALLOWED_CODES, (req, code, reply.refused.detail)
            assert len(reply.refused.detail.encode()) <= 1024
            if code != "OK" and req.WhichOneof("msg"):
                # A refusal changes nothing.
                txn = getattr(req, req.WhichOneof("msg")).txn_id
                assert await store.read(txn or "t1") == before
        # An undecodable request is answered alone, by its seq.
        r = await _one(servicer, Undecodable("bad utf-8", 99), None)
        assert r.seq == 99 and r.refused.code == "INVALID_ARGUMENT"
    finally:
        await store.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(st.tuples(requests, identities), min_size=1, max_size=12))
def test_acceptor_handlers_answer_everything_with_a_meant_code(batch: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run_acceptor(batch, Path(tmp)))


class _Aborted(Exception):
    pass


class _Context:
    """The little of a grpc.aio servicer context the unary handlers use."""

    def __init__(self) -> None:
        self.code: Any = None

    def auth_context(self) -> dict[str, Any]:
        return {"peer_uri": [b"spiffe://paxos-commit/coordinator/c0"]}

    async def abort(self, code: Any, details: str) -> None:
        self.code = code
        raise _Aborted(details)


class _BrokenStore:
    """A store whose database does not answer."""

    acceptor_id = 0

    def now_ms(self) -> int:
        return 0

    async def apply(self, *_: Any) -> Any:
        raise OSError("disk I/O error")

    async def read(self, *_: Any) -> Any:
        raise OSError("disk I/O error")

    async def list_undecided(self, *_: Any) -> Any:
        raise OSError("disk I/O error")


async def test_storage_errors_on_unary_calls_are_unavailable() -> None:
    import grpc

    from acceptor.service import AcceptorServicer

    servicer = AcceptorServicer(_BrokenStore(), secure=True)  # type: ignore[arg-type]
    ctxs = [_Context() for _ in range(3)]
    calls = [
        servicer.Phase2a(
            pb.Phase2aRequest(
                txn_id="t",
                ballot=pb.Ballot(round=0),
                proposals=[pb.Proposal(instance="@registrar", value=pb.Value(no_set=pb.NoSet()))],
            ),
            ctxs[0],  # type: ignore[arg-type]
        ),
        servicer.RecordOutcome(pb.RecordOutcomeRequest(txn_id="t", outcome=pb.OUTCOME_ABORTED), ctxs[1]),  # type: ignore[arg-type]
        servicer.ListUndecided(pb.ListUndecidedRequest(), ctxs[2]),  # type: ignore[arg-type]
    ]
    for call, ctx in zip(calls, ctxs, strict=True):
        with contextlib.suppress(_Aborted):
            await call
        assert ctx.code == grpc.StatusCode.UNAVAILABLE
