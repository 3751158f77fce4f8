"""``rm_sdk.testing.InProcessCluster``: what application developers test against."""

from __future__ import annotations

import pytest

from rm_sdk import Client, Outcome, Participant, RMState, TransactionAborted, Vote
from rm_sdk.testing import InProcessCluster
from tests.integration.helpers import ScriptedRM


async def test_in_process_cluster_commits_and_aborts() -> None:
    async with InProcessCluster(acceptors=3) as cluster:
        assert len(cluster.acceptors) == 3 and len(cluster.coordinators) == 1
        a, b = ScriptedRM("a"), ScriptedRM("b")
        pa, pb_ = Participant(a, cluster.coordinators), Participant(b, cluster.coordinators)
        async with Client(cluster.coordinators) as client:
            txn = await client.begin()
            await pa.join(txn.context)
            await pb_.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED
            assert await pa.wait(txn.txn_id) is RMState.COMMITTED
            assert await pb_.wait(txn.txn_id) is RMState.COMMITTED
            assert a.committed == [txn.txn_id] and b.committed == [txn.txn_id]

            b.vote = Vote.ABORTED
            txn = await client.begin()
            await pa.join(txn.context)
            await pb_.join(txn.context)
            with pytest.raises(TransactionAborted):
                await txn.commit()
            assert await pa.wait(txn.txn_id) is RMState.ABORTED
            assert a.aborted == [txn.txn_id]
        await pa.close()
        await pb_.close()
    assert cluster.coordinators == []


async def test_in_process_cluster_with_tls_and_per_role_credentials() -> None:
    """tls=True: mTLS on every hop; each test client presents its own role's certificate,
    and a wrong one is refused (issue 9)."""
    import grpc

    async with InProcessCluster(acceptors=1, tls=True) as cluster:
        rm = ScriptedRM("bank-a")
        p = Participant(rm, cluster.coordinators, credentials=cluster.credentials("rm", "bank-a"))
        impostor = Participant(
            ScriptedRM("bank-a"), cluster.coordinators, credentials=cluster.credentials("rm", "x")
        )
        async with Client(cluster.coordinators, credentials=cluster.credentials("app", "test")) as client:
            txn = await client.begin()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await impostor.join(txn.context)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            await p.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED
            assert await p.wait(txn.txn_id) is RMState.COMMITTED
        async with Client(cluster.coordinators, rpc_timeout=2) as plain:  # no certificate: nothing
            with pytest.raises(ConnectionError):
                await plain.begin()
        await p.close()
        await impostor.close()
