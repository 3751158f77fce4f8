"""Early abort (Participant.refuse) and the applied wait, with scripted RMs.

Spec: an RM may choose to abort only while working (``RMChooseToAbort`` requires
``rmState[r] = "working"``); its ballot-0 ``aborted`` then decides the transaction."""

from __future__ import annotations

import asyncio

import pytest

from rm_sdk import Client, Outcome, Participant, RMRefused, RMState
from rm_sdk.testing import InProcessCluster
from tests.integration.helpers import ScriptedRM


async def test_refuse_while_working_aborts_without_a_commit() -> None:
    async with InProcessCluster() as cluster, Client(cluster.coordinators) as client:
        bad, good = ScriptedRM("bad"), ScriptedRM("good")
        p_bad = Participant(bad, cluster.coordinators, acceptors=cluster.acceptors)
        p_good = Participant(good, cluster.coordinators, acceptors=cluster.acceptors)
        txn = await client.begin()
        await p_good.join(txn.context)
        await p_bad.join(txn.context)
        assert await p_bad.refuse(txn.txn_id, "out of stock") is True
        assert bad.aborted == [txn.txn_id] and bad.prepared == []
        assert await p_bad.refuse(txn.txn_id, "again") is False  # finished: no-op
        # Decided with no commit asked; the other RM learns and applies it.
        assert await p_good.applied(txn.txn_id) is RMState.ABORTED
        assert good.prepared == [] and good.aborted == [txn.txn_id]
        with pytest.raises(RMRefused) as info:
            await txn.commit()
        assert info.value.rm_id == "bad" and info.value.reason.endswith(": out of stock")
        await p_bad.close()
        await p_good.close()


async def test_refuse_after_prepare_began_is_refused_and_the_vote_stands() -> None:
    """Two different ballot-0 votes from one RM would break pitfall 2: once prepare
    began, refuse() does nothing."""
    async with InProcessCluster() as cluster, Client(cluster.coordinators) as client:
        rm = ScriptedRM("slow")
        rm.release.clear()
        p = Participant(rm, cluster.coordinators, acceptors=cluster.acceptors)
        txn = await client.begin()
        await p.join(txn.context)
        commit = asyncio.create_task(txn.commit())
        await rm.preparing.wait()
        assert await p.refuse(txn.txn_id, "too late") is False
        rm.release.set()
        assert await commit is Outcome.COMMITTED
        assert await p.applied(txn.txn_id) is RMState.COMMITTED
        assert rm.aborted == []
        await p.close()
