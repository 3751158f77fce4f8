"""``Client.outcome`` tells "never heard of" from "pending", and ``Transaction.abort``
keeps the reason (issue 10, item 5: what an outside test found awkward in the SDK)."""

from __future__ import annotations

import pytest

from rm_sdk import Client, Outcome, Participant, RMRefused, TransactionNotFound, Vote
from rm_sdk.testing import InProcessCluster
from tests.integration.helpers import ScriptedRM


async def test_outcome_raises_not_found_for_a_transaction_nobody_knows_and_waits_by_default() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        with pytest.raises(TransactionNotFound) as info:
            await client.outcome("never-begun-0001", wait=60.0, raise_not_found=True)
        assert info.value.txn_id == "never-begun-0001"
        # The default keeps "not yet" semantics: PENDING once the (short) wait runs out.
        assert await client.outcome("never-begun-0002", wait=0.5) == (Outcome.PENDING, "")


async def test_outcome_of_a_begun_undecided_transaction_is_pending_not_not_found() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        txn = await client.begin()
        assert await client.outcome(txn.txn_id, wait=0.3, raise_not_found=True) == (Outcome.PENDING, "")
        await txn.abort("done")
        outcome, reason = await client.outcome(txn.txn_id, wait=5.0, raise_not_found=True)
        assert (outcome, reason) == (Outcome.ABORTED, "done")


async def test_abort_keeps_the_reason_and_the_cause() -> None:
    async with InProcessCluster(acceptors=3) as cluster, Client(cluster.coordinators) as client:
        txn = await client.begin()
        assert txn.reason == "" and txn.aborted is None
        assert await txn.abort("the user pressed cancel") is Outcome.ABORTED
        assert txn.reason == "the user pressed cancel"
        assert txn.aborted is not None and txn.aborted.reason == "the user pressed cancel"

        rm = ScriptedRM("bank")
        rm.vote = Vote.ABORTED
        part = Participant(rm, cluster.coordinators)
        txn = await client.begin()
        await part.join(txn.context)
        with pytest.raises(RMRefused):
            await txn.commit()
        assert isinstance(txn.aborted, RMRefused) and txn.aborted.rm_id == "bank"
        assert "bank" in txn.reason
        await part.close()
