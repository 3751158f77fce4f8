"""The synchronous API against a real cluster: from plain (loop-less) code, and from a
worker thread of a running event loop, which ``asyncio.run()`` per call could not do."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from paxos_commit.cluster import LocalCluster
from rm_sdk import Outcome, RMState, TransactionContext, Vote
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.client import Cancelled, RMRefused, VoteTimeout
from rm_sdk.propagation import current
from rm_sdk.sync import SyncClient, SyncParticipant
from rm_sdk.wire import pb


class BlockingRM:
    """A sync resource manager that records each callback and the thread it ran on."""

    def __init__(self, rm_id: str, vote: Vote = Vote.PREPARED) -> None:
        self.rm_id = rm_id
        self.vote = vote
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        self.threads: set[str] = set()

    def _record(self, step: str, txn_id: str) -> None:
        with self._lock:
            self.calls.append((step, txn_id))
            self.threads.add(threading.current_thread().name)

    def prepare(self, txn_id: str) -> Vote:
        threading.Event().wait(0.01)  # a blocking call, as a database driver would make
        self._record("prepare", txn_id)
        return self.vote

    def commit(self, txn_id: str) -> None:
        self._record("commit", txn_id)

    def abort(self, txn_id: str) -> None:
        self._record("abort", txn_id)

    def steps(self, txn_id: str) -> list[str]:
        with self._lock:
            return [step for step, t in self.calls if t == txn_id]


def test_sync_commit_abort_and_exception_in_with(cluster: LocalCluster) -> None:
    coords = cluster.coordinator_addresses
    a, b = BlockingRM("sync-a"), BlockingRM("sync-b")
    with SyncClient(coords) as client, SyncParticipant(a, coords) as pa, SyncParticipant(b, coords) as pb_:
        # Commit on leaving the block; joining uses the current transaction.
        with client.transaction() as txn:
            assert current() == txn.context
            pa.join()
            pb_.join(txn.context)
        assert current() is None and txn.finished
        assert pa.wait(txn.txn_id, timeout=10) is RMState.COMMITTED
        assert pb_.wait(txn.txn_id, timeout=10) is RMState.COMMITTED
        assert a.steps(txn.txn_id) == ["prepare", "commit"] == b.steps(txn.txn_id)
        # The callbacks ran in worker threads, not here and not on the private loop.
        assert a.threads and all("-worker" in name for name in a.threads)
        assert client.outcome(txn.txn_id) == (Outcome.COMMITTED, "")

        # An explicit abort.
        txn2 = client.begin()
        pa.join(txn2.context)
        assert txn2.abort("changed my mind") is Outcome.ABORTED
        assert pa.wait(txn2.txn_id, timeout=10) is RMState.ABORTED
        assert a.steps(txn2.txn_id) == ["abort"]
        assert client.outcome(txn2.txn_id, prefer=txn2.context.coordinator) == (
            Outcome.ABORTED,
            "changed my mind",
        )

        # An exception inside the block aborts and propagates.
        with pytest.raises(KeyError, match="boom"), client.transaction() as txn3:
            pa.join()
            raise KeyError("boom")
        assert pa.wait(txn3.txn_id, timeout=10) is RMState.ABORTED
        assert a.steps(txn3.txn_id) == ["abort"]
        outcome, reason = client.outcome(txn3.txn_id, prefer=txn3.context.coordinator)
        assert outcome is Outcome.ABORTED and reason == "KeyError('boom')"


def test_sync_typed_aborts(cluster: LocalCluster) -> None:
    coords = cluster.coordinator_addresses
    ok, refuser = BlockingRM("ok"), BlockingRM("refuser", vote=Vote.ABORTED)
    opened: list[grpc.Channel] = []

    def owner(ctx: TransactionContext) -> pb_grpc.CoordinatorStub:
        opened.append(grpc.insecure_channel(ctx.coordinator))
        return pb_grpc.CoordinatorStub(opened[-1])

    with (
        SyncClient(coords) as client,
        SyncParticipant(ok, coords) as po,
        SyncParticipant(refuser, coords) as pr,
    ):
        with pytest.raises(RMRefused) as refused, client.transaction():
            po.join()
            pr.join()
        assert refused.value.rm_id == "refuser" and "refuser" in str(refused.value)

        # "silent" joins through the raw API and then never votes.
        with pytest.raises(VoteTimeout) as silent, client.transaction() as txn:
            po.join()
            owner(txn.context).Join(pb.JoinRequest(txn_id=txn.txn_id, rm_id="silent"), timeout=5)
        assert silent.value.rm_id == "silent"
        assert po.wait(txn.txn_id, timeout=10) is RMState.ABORTED

        # Someone else aborts the transaction with a reason: commit says it was cancelled.
        txn = client.begin()
        po.join(txn.context)
        owner(txn.context).Abort(pb.AbortRequest(txn_id=txn.txn_id, reason="out of stock"), timeout=10)
        with pytest.raises(Cancelled) as cancelled:
            txn.commit()
        assert cancelled.value.reason == "out of stock"
    for ch in opened:
        ch.close()


def test_sync_applied_and_refuse(cluster: LocalCluster) -> None:
    coords = cluster.coordinator_addresses
    a, b = BlockingRM("sync-c"), BlockingRM("sync-d")
    with SyncClient(coords) as client, SyncParticipant(a, coords) as pa, SyncParticipant(b, coords) as pb_:
        txn = client.begin()
        pa.join(txn.context)
        pb_.join(txn.context)
        assert txn.commit() is Outcome.COMMITTED
        assert pa.applied(txn.txn_id, timeout=10) is RMState.COMMITTED
        assert a.steps(txn.txn_id) == ["prepare", "commit"]
        with pytest.raises(LookupError):
            pa.applied("never-joined", timeout=5)

        # The RM's work failed before prepare: it refuses, and commit says who and why.
        txn2 = client.begin()
        pa.join(txn2.context)
        pb_.join(txn2.context)
        assert pb_.refuse(txn2.txn_id, "insufficient funds") is True
        assert b.steps(txn2.txn_id) == ["abort"]
        with pytest.raises(RMRefused) as refused:
            txn2.commit()
        assert refused.value.rm_id == "sync-d" and "insufficient funds" in str(refused.value)
        assert pa.applied(txn2.txn_id, timeout=10) is RMState.ABORTED
        # Once finished there is nothing to refuse.
        assert pb_.refuse(txn2.txn_id) is False


async def test_sync_api_from_a_running_loops_worker_thread(cluster: LocalCluster) -> None:
    """The event loop of this test is running; the sync API is used from its executor
    threads (and once, blocking, from the coroutine itself)."""
    coords = cluster.coordinator_addresses
    rm = BlockingRM("threaded")
    client = SyncClient(coords)
    participant = SyncParticipant(rm, coords)

    def transfer() -> str:
        with client.transaction() as txn:
            participant.join()
        return txn.txn_id

    try:
        txn_id = await asyncio.to_thread(transfer)
        assert await asyncio.to_thread(participant.wait, txn_id, 10) is RMState.COMMITTED
        assert rm.steps(txn_id) == ["prepare", "commit"]
        loop = asyncio.get_running_loop()
        txn_id2 = await loop.run_in_executor(None, transfer)
        assert await asyncio.to_thread(participant.wait, txn_id2, 10) is RMState.COMMITTED
        # Not asyncio.run() underneath: a (blocking) call from the loop's own thread works.
        assert client.outcome(txn_id2, wait=2) == (Outcome.COMMITTED, "")
    finally:
        await asyncio.to_thread(participant.close)
        await asyncio.to_thread(client.close)
