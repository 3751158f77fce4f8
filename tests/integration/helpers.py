"""Test resource managers and raw protocol helpers for integration tests."""

from __future__ import annotations

import asyncio

from rm_sdk import Vote
from rm_sdk._channels import Channels
from rm_sdk.protocol import Instance, InstanceState
from rm_sdk.wire import pb, states_from_pb


class ScriptedRM:
    """An RM whose prepare the test controls: vote, block, and see what was applied."""

    def __init__(self, rm_id: str, vote: Vote = Vote.PREPARED) -> None:
        self.rm_id = rm_id
        self.vote = vote
        self.release = asyncio.Event()
        self.release.set()
        self.preparing = asyncio.Event()
        self.prepared: list[str] = []
        self.committed: list[str] = []
        self.aborted: list[str] = []

    async def prepare(self, txn_id: str) -> Vote:
        self.preparing.set()
        await self.release.wait()
        if self.vote is Vote.PREPARED:
            self.prepared.append(txn_id)
        return self.vote

    async def commit(self, txn_id: str) -> None:
        if txn_id not in self.committed:
            self.committed.append(txn_id)

    async def abort(self, txn_id: str) -> None:
        if txn_id not in self.aborted:
            self.aborted.append(txn_id)


async def acceptor_states(channels: Channels, address: str, txn_id: str) -> dict[Instance, InstanceState]:
    """One acceptor's accepted state of a transaction (a 2b bundle read at once)."""
    r = await channels.acceptor(address).AwaitPhase2b(
        pb.AwaitPhase2bRequest(txn_id=txn_id, wait_ms=0),
        timeout=5,
        wait_for_ready=True,  # an acceptor the test restarted: reconnect rather than fail fast
    )
    return states_from_pb(r.states)


async def wait_until(predicate: object, limit: float = 10.0, what: str = "condition") -> None:
    """Poll an async or sync predicate until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
