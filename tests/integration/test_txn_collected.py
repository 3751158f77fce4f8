"""Operators' reads of a collected transaction: ``txn show`` says so, ``txn list`` lists it
by its compact outcome record (unless a filter needs the instances that are gone)."""

from __future__ import annotations

import asyncio

from paxos_commit.admin import Admin, Filters
from rm_sdk import Client, Outcome, Participant, RMState, Vote
from rm_sdk.testing import InProcessCluster
from rm_sdk.wire import pb


class NullRM:
    rm_id = "r1"

    async def prepare(self, txn_id: str) -> Vote:
        return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        return None

    async def abort(self, txn_id: str) -> None:
        return None


async def test_a_collected_transaction_is_shown_and_listed_from_its_record() -> None:
    async with InProcessCluster(acceptors=1) as cluster, Client(cluster.coordinators) as client:
        p = Participant(NullRM(), cluster.coordinators)
        try:
            txn = await client.begin()
            await p.join(txn.context)
            assert await txn.commit(wait_applied=True) is Outcome.COMMITTED
            assert await p.applied(txn.txn_id) is RMState.COMMITTED
            async with Admin(cluster.acceptors, cluster.coordinators) as admin:
                for _ in range(100):  # the collector's pass (every 0.5-1 s)
                    v = await admin.show(txn.txn_id)
                    if v.collection_state().startswith("collected"):
                        break
                    await asyncio.sleep(0.1)
                assert v.collection_state() == "collected at acceptor 0"
                assert v.outcome is Outcome.COMMITTED and v.instances() == []
                assert not v.in_doubt and v.age_s is None  # the compact record keeps no time
                raw = await admin._acceptor(0).ListTransactions(pb.ListTransactionsRequest(), timeout=5)
                (rec,) = [r for r in raw.transactions if r.txn_id == txn.txn_id]
                assert rec.collected and rec.outcome == pb.OUTCOME_COMMITTED and not rec.states
                listed = await admin.list_transactions(Filters(outcome=Outcome.COMMITTED))
                assert [x.txn_id for x in listed] == [txn.txn_id]
                assert await admin.list_transactions(Filters(outcome=Outcome.ABORTED)) == []
                assert await admin.list_transactions(Filters(in_doubt=True)) == []
                # An RM filter needs the instances, which collection removed.
                assert await admin.list_transactions(Filters(rm_id="r1")) == []
        finally:
            await p.close()
