"""Joins not waited for by the work (``Participant.join(ctx, defer=True)``): an RM of the
process that began the transaction goes on with its work while its join travels; the
transaction's commit waits for every such join before registration closes, and aborts
if one failed. And Begin without a round trip: a join may overtake it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from rm_sdk import Client, Outcome, Participant, RMState, Vote, _context
from rm_sdk._streams import _rpc_error
from rm_sdk.client import CoordinatorFailed, RMRefused
from rm_sdk.testing import InProcessCluster


class RecordingRM:
    def __init__(self, rm_id: str) -> None:
        self.rm_id = rm_id
        self.calls: list[tuple[str, str]] = []

    async def prepare(self, txn_id: str) -> Vote:
        self.calls.append(("prepare", txn_id))
        return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        self.calls.append(("commit", txn_id))

    async def abort(self, txn_id: str) -> None:
        self.calls.append(("abort", txn_id))


async def test_deferred_joins_return_before_the_registrar_has_them_and_commit_waits_for_them() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        rms = [RecordingRM("a"), RecordingRM("b")]
        parts = [Participant(rm, cluster.coordinators) for rm in rms]
        for _ in range(3):
            txn = await client.begin()
            for p in parts:
                await p.join(txn.context, defer=True)
                # Returned at once: the join is on its way, not answered yet.
                assert p.joining(txn.txn_id) and txn.txn_id not in p.states
                await p.join(txn.context, defer=True)  # a second work block: a no-op
            assert await txn.commit() is Outcome.COMMITTED
            for p, rm in zip(parts, rms, strict=True):
                assert await p.applied(txn.txn_id) is RMState.COMMITTED
                assert ("prepare", txn.txn_id) in rm.calls, "the RM was in the registrar's set"
                assert not p.joining(txn.txn_id)
        assert len(txn._joins) == 0
        for p in parts:
            await p.close()


async def test_a_deferred_join_that_fails_aborts_the_transaction_and_undoes_the_work() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        good, bad = RecordingRM("good"), RecordingRM("bad")
        p_good = Participant(good, cluster.coordinators)
        p_bad = Participant(bad, cluster.coordinators)

        async def refused(*_: object) -> None:
            raise _rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "registration closed")

        p_bad._first_reply = refused  # type: ignore[method-assign,assignment]
        txn = await client.begin()
        await p_good.join(txn.context, defer=True)
        await p_bad.join(txn.context, defer=True)
        with pytest.raises(RMRefused, match="'bad' could not join") as info:
            await txn.commit()
        assert info.value.rm_id == "bad"
        assert await p_good.applied(txn.txn_id) is RMState.ABORTED
        for _ in range(50):
            if ("abort", txn.txn_id) in bad.calls:
                break
            await asyncio.sleep(0.01)
        assert bad.calls == [("abort", txn.txn_id)], "its work is undone, nothing else"
        assert not p_bad.joining(txn.txn_id) and txn.txn_id not in p_bad.states
        await p_good.close()
        await p_bad.close()


async def test_a_join_is_waited_for_when_the_transaction_is_not_this_process_or_is_closing() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        rm = RecordingRM("a")
        p = Participant(rm, cluster.coordinators)
        # Begun elsewhere (not in this process's table of local transactions).
        txn = await client.begin()
        _context._local.pop(txn.txn_id)
        await p.join(txn.context, defer=True)
        assert not p.joining(txn.txn_id) and p.states[txn.txn_id] is RMState.WORKING
        assert await txn.commit() is Outcome.COMMITTED
        # Commit under way: a join then is not deferred. It is answered before join()
        # returns: joined (if it reached the owner before the Commit) or refused.
        txn2 = await client.begin()
        late = RecordingRM("late")
        p_late = Participant(late, cluster.coordinators)
        await p.join(txn2.context, defer=True)
        commit = asyncio.ensure_future(txn2.commit())
        await asyncio.sleep(0)
        assert txn2._closing
        assert not txn2.defer_join("late", asyncio.get_running_loop().create_future())
        try:
            await p_late.join(txn2.context, defer=True)
        except grpc.aio.AioRpcError:
            assert txn2.txn_id not in p_late.states
        else:
            assert p_late.states[txn2.txn_id] is not None
        assert not p_late.joining(txn2.txn_id)
        assert await commit is Outcome.COMMITTED
        await p.close()
        await p_late.close()


async def test_begin_needs_no_round_trip_once_the_owner_is_known() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        first = await client.begin()
        assert first._begun is None, "the first Begin learns the owner's address"
        await first.abort()
        txn = await client.begin()
        assert txn._begun is not None and not txn._begun[1].done(), "sent, not waited for"
        assert txn.context.coordinator == first.context.coordinator
        rm = RecordingRM("a")
        p = Participant(rm, cluster.coordinators)
        await p.join(txn.context)
        assert await txn.commit() is Outcome.COMMITTED
        await p.close()


async def test_a_begin_that_may_not_have_arrived_aborts_at_once_and_commit_is_not_sent() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        client.outcome_timeout = 5.0
        await (await client.begin()).abort()
        txn = await client.begin()
        begun = txn._begun
        assert begun is not None
        # As if the stream broke with the Begin unsent: the owner never heard of it.
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[object] = loop.create_future()
        lost.set_exception(_rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream ended"))
        await asyncio.wait([begun[1]])
        txn._begun = (begun[0], lost)  # type: ignore[assignment]
        txn.context = type(txn.context)("f" * 32, txn.context.coordinator)
        with pytest.raises(CoordinatorFailed, match="the Begin may not have reached"):
            await txn.commit()
        assert client._owners == {}, "the next Begin asks for the owner's address again"
        # The owner had it (the Begin did arrive): the abort reached it, nothing waits.
        await (await client.begin()).abort()  # learns the owner's address again
        txn = await client.begin()
        begun = txn._begun
        assert begun is not None
        await asyncio.wait([begun[1]])
        txn._begun = (begun[0], lost)  # type: ignore[assignment]
        with pytest.raises(CoordinatorFailed, match="the Begin may not have reached"):
            await txn.commit()
        outcome, _ = await client.outcome(txn.txn_id, wait=1.0)
        assert outcome is Outcome.ABORTED


async def test_refusing_while_the_deferred_join_is_on_its_way_waits_for_it_and_votes_no() -> None:
    """Early abort (an RM whose work failed votes no at once) must not be lost because
    the join was not answered yet when the work failed."""
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        rm = RecordingRM("a")
        p = Participant(rm, cluster.coordinators)
        txn = await client.begin()
        await p.join(txn.context, defer=True)
        assert p.joining(txn.txn_id)
        assert await p.refuse(txn.txn_id, "the work failed") is True
        assert p.states[txn.txn_id] is RMState.ABORTED
        outcome, reason = await client.outcome(txn.txn_id, wait=10)
        assert outcome is Outcome.ABORTED and "the work failed" in reason
        with pytest.raises(RMRefused):
            await txn.commit()
        await p.close()
