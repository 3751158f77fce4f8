"""A following join: one stream request carries an RM's join, its wait for Prepare and its
outcome question; when it ends early the RM falls back to plain requests."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import grpc
import pytest

from rm_sdk import Client, Outcome, Participant, RMState, Vote
from rm_sdk._streams import StreamCoordinator, _rpc_error
from rm_sdk.core.messages import AskOutcome, AwaitPrepare, Decided, Pending, Prepare, Unknown
from rm_sdk.core.participant import Unreachable
from rm_sdk.participant import _follow_to_core
from rm_sdk.testing import InProcessCluster
from rm_sdk.wire import pb


class NullRM:
    def __init__(self, rm_id: str) -> None:
        self.rm_id = rm_id
        self.applied: list[tuple[str, str]] = []

    async def prepare(self, txn_id: str) -> Vote:
        return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        self.applied.append(("commit", txn_id))

    async def abort(self, txn_id: str) -> None:
        self.applied.append(("abort", txn_id))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Coordinator requests by kind, as the SDK's streams send them."""
    seen: dict[str, int] = {}
    real_follow, real_submit = StreamCoordinator.follow, StreamCoordinator.submit

    def follow(self: StreamCoordinator, req: pb.CoordinatorRequest, on_reply: Any) -> int:
        seen["follow"] = seen.get("follow", 0) + 1
        return real_follow(self, req, on_reply)

    # Every request but a following join goes through submit (awaited or not).
    def submit(self: StreamCoordinator, req: pb.CoordinatorRequest, timeout: Any, lazy: bool = False) -> Any:
        kind = req.WhichOneof("msg") or ""
        seen[kind] = seen.get(kind, 0) + 1
        return real_submit(self, req, timeout, lazy)

    monkeypatch.setattr(StreamCoordinator, "submit", submit)
    monkeypatch.setattr(StreamCoordinator, "follow", follow)
    return seen


async def test_one_request_per_rm_and_transaction_on_the_happy_path(calls: dict[str, int]) -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        rms = [NullRM("a"), NullRM("b")]
        parts = [Participant(rm, cluster.coordinators) for rm in rms]
        for _ in range(5):
            txn = await client.begin()
            for p in parts:
                await p.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED
            for p in parts:
                assert await p.applied(txn.txn_id) is RMState.COMMITTED
        # Per transaction: begin and commit from the application; per RM, one following
        # join (join, Prepare, outcome) and the acknowledgement of the applied outcome
        # (sent once applied() returned: the last one may still be on its way).
        for _ in range(100):
            if calls.get("acknowledge", 0) >= 10:
                break
            await asyncio.sleep(0.02)
        assert calls == {"begin": 5, "commit": 5, "follow": 10, "acknowledge": 10}, calls
        assert all(not p._follows for p in parts), "a finished transaction keeps no follow"
        for p in parts:
            await p.close()


async def test_a_follow_that_ends_before_prepare_falls_back_to_plain_requests(calls: dict[str, int]) -> None:
    async with InProcessCluster(acceptors=1) as cluster, Client(cluster.coordinators) as client:
        rm = NullRM("a")
        p = Participant(rm, cluster.coordinators)
        p._core.timeouts = replace(p._core.timeouts, prepare_wait=0.2)
        txn = await client.begin()
        await p.join(txn.context)
        # The coordinator's wait for this commit runs out first: the follow ends "not yet".
        await asyncio.sleep(0.6)
        assert txn.txn_id not in p._follows
        assert await txn.commit() is Outcome.COMMITTED
        assert await p.applied(txn.txn_id) is RMState.COMMITTED
        assert calls.get("await_prepare", 0) >= 1, calls
        await p.close()


def test_follow_replies_map_to_what_the_plain_request_would_have_answered() -> None:
    ap = AwaitPrepare("t", "a", 1.0)
    ask = AskOutcome("t", 1.0)
    ok = pb.CoordinatorReply(await_prepare=pb.AwaitPrepareReply(prepare=True), more=True)
    assert _follow_to_core(ap, ok) == Prepare("t", "a")
    not_yet = pb.CoordinatorReply(
        await_prepare=pb.AwaitPrepareReply(prepare=False, outcome=pb.OUTCOME_PENDING)
    )
    assert _follow_to_core(ap, not_yet) == Prepare("t", "a", prepare=False)
    decided = pb.CoordinatorReply(await_prepare=pb.AwaitPrepareReply(outcome=pb.OUTCOME_ABORTED, reason="x"))
    d = _follow_to_core(ap, decided)
    assert isinstance(d, Decided) and d.decision.outcome is Outcome.ABORTED
    committed = pb.CoordinatorReply(get_outcome=pb.GetOutcomeReply(outcome=pb.OUTCOME_COMMITTED))
    c = _follow_to_core(ask, committed)
    assert isinstance(c, Decided) and c.decision.outcome is Outcome.COMMITTED
    pending = pb.CoordinatorReply(get_outcome=pb.GetOutcomeReply(outcome=pb.OUTCOME_PENDING))
    assert _follow_to_core(ask, pending) == Pending("t")
    # A reply of the wrong kind for the request it answers is no answer, never a guess.
    assert isinstance(_follow_to_core(ap, committed), Unreachable)
    gone = pb.CoordinatorReply(refused=pb.Refusal(code="NOT_FOUND", detail="unknown"))
    assert _follow_to_core(ask, gone) == Unknown("t", "unknown")
    broken = _rpc_error(grpc.StatusCode.UNAVAILABLE, "stream ended")
    assert isinstance(_follow_to_core(ask, broken), Unreachable)
