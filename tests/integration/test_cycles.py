"""No reference cycles per transaction on the failure-free path (coordinator, acceptors,
client and participants): their state is freed by reference counting, which is what
lets rm_sdk.tune_gc() collect rarely without memory growing between collections."""

from __future__ import annotations

import asyncio
import collections
import gc

from paxos_commit.bench import NullRM
from rm_sdk import Client, Participant
from rm_sdk.testing import InProcessCluster


async def test_a_committed_transaction_leaves_no_cyclic_garbage() -> None:
    async with InProcessCluster(acceptors=3, coordinators=1, recovery_interval=0) as cluster:
        client = Client(cluster.coordinators)
        rms = [Participant(NullRM(f"rm-{i}"), cluster.coordinators) for i in range(2)]

        async def one() -> None:
            txn = await client.begin()
            await asyncio.gather(*(rm.join(txn.context) for rm in rms))
            await txn.commit()

        async def worker(n: int) -> None:
            for _ in range(n):
                await one()

        try:
            await worker(30)  # streams, caches and metrics children exist from here on
            await asyncio.sleep(0.3)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                n = 100
                await asyncio.gather(*(worker(n // 4) for _ in range(4)))
                await asyncio.sleep(0.5)  # lazy acknowledgements and outcome records
                gc.collect()
                kinds = collections.Counter(getattr(o, "__qualname__", type(o).__name__) for o in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            # Before: 59 objects per transaction (closures of following joins and bundle
            # waits naming each other); one-offs of gRPC's own are allowed.
            assert sum(kinds.values()) < n // 2, kinds.most_common(10)
        finally:
            await client.close()
            for rm in rms:
                await rm.close()
