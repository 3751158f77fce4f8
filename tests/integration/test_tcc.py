"""TCC resource managers: try at enlist, durable prepared record, confirm/cancel on the
outcome, and recovery of in-doubt records after a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rm_sdk import Client, Outcome, Participant, RMState, TransactionAborted
from rm_sdk._channels import Channels
from rm_sdk.protocol import RM_BALLOT
from rm_sdk.tcc import TccParticipant
from rm_sdk.testing import InProcessCluster
from tests.integration.helpers import ScriptedRM, acceptor_states, wait_until


async def voted(acceptors: list[str], txn_id: str, rm_id: str) -> bool:
    """True once a majority of acceptors accepted ``rm_id``'s ballot-0 vote."""
    channels = Channels()
    try:
        states = [await acceptor_states(channels, a, txn_id) for a in acceptors]
    finally:
        await channels.close()
    return sum(rm_id in s and s[rm_id].bal == RM_BALLOT for s in states) > len(acceptors) // 2


class Seats:
    """A non-database resource: seats held by try, sold by confirm, freed by cancel."""

    def __init__(self, free: set[str]) -> None:
        self.free = set(free)
        self.held: dict[str, str] = {}
        self.sold: dict[str, str] = {}
        self.calls: list[tuple[str, str, str]] = []

    async def try_(self, txn_id: str, payload: Any) -> None:
        seat = payload["seat"]
        self.calls.append(("try", txn_id, seat))
        if seat not in self.free:
            raise ValueError(f"seat {seat} is taken")
        self.free.discard(seat)
        self.held[seat] = txn_id

    async def confirm(self, txn_id: str, payload: Any) -> None:
        seat = payload["seat"]
        self.calls.append(("confirm", txn_id, seat))
        if self.held.get(seat) == txn_id:
            self.sold[seat] = self.held.pop(seat)

    async def cancel(self, txn_id: str, payload: Any) -> None:
        seat = payload["seat"]
        self.calls.append(("cancel", txn_id, seat))
        if self.held.get(seat) == txn_id:
            del self.held[seat]
            self.free.add(seat)


def tcc(path: Path, seats: Seats, cluster: InProcessCluster) -> TccParticipant:
    return TccParticipant(
        path,
        "seats",
        cluster.coordinators,
        try_=seats.try_,
        confirm=seats.confirm,
        cancel=seats.cancel,
        acceptors=cluster.acceptors,
        recovery_timeout=1.0,
    )


async def test_tcc_commit_and_refusal(tmp_path: Path) -> None:
    seats = Seats({"1A", "1B"})
    async with InProcessCluster() as cluster, Client(cluster.coordinators) as client:
        rm = tcc(tmp_path / "seats.db", seats, cluster)
        txn = await client.begin()
        await rm.enlist(txn.context, {"seat": "1A"})
        assert await txn.commit() is Outcome.COMMITTED
        assert await rm.participant.wait(txn.txn_id) is RMState.COMMITTED
        assert seats.sold == {"1A": txn.txn_id} and rm.in_doubt() == []

        txn = await client.begin()
        with pytest.raises(ValueError):
            await rm.enlist(txn.context, {"seat": "1A"})  # taken: try refuses
        with pytest.raises(TransactionAborted) as info:
            await txn.commit()
        assert "seats" in info.value.reason
        assert await rm.participant.wait(txn.txn_id) is RMState.ABORTED
        assert ("cancel", txn.txn_id, "1A") in seats.calls and seats.sold == {"1A": seats.sold["1A"]}
        await rm.close()


async def test_tcc_crash_after_prepare_recovers_the_outcome(tmp_path: Path) -> None:
    seats = Seats({"1A", "2B"})
    async with InProcessCluster() as cluster, Client(cluster.coordinators, outcome_timeout=20) as client:
        rm = tcc(tmp_path / "seats.db", seats, cluster)
        other = ScriptedRM("other")
        other.release.clear()
        po = Participant(other, cluster.coordinators)
        txn = await client.begin()
        await rm.enlist(txn.context, {"seat": "1A"})
        await po.join(txn.context)
        commit = asyncio.create_task(txn.commit())
        await other.preparing.wait()
        await wait_until(lambda: voted(cluster.acceptors, txn.txn_id, "seats"), what="the vote on a majority")
        assert rm.in_doubt() == [txn.txn_id]
        await rm.close()  # "crash": the prepared record stays, the outcome is not applied
        other.release.set()
        assert await commit is Outcome.COMMITTED
        assert seats.sold == {} and seats.held == {"1A": txn.txn_id}

        # A working (never prepared) record left by a crash is cancelled at recovery.
        txn2 = await client.begin()
        rm2 = tcc(tmp_path / "seats.db", seats, cluster)
        await rm2.enlist(txn2.context, {"seat": "2B"})
        await rm2.participant.close()
        rm2._db.close()

        restarted = tcc(tmp_path / "seats.db", seats, cluster)
        assert await restarted.recover() == [txn.txn_id]
        assert await restarted.participant.wait(txn.txn_id) is RMState.COMMITTED
        assert seats.sold == {"1A": txn.txn_id}
        assert "2B" in seats.free and ("cancel", txn2.txn_id, "2B") in seats.calls
        assert restarted.in_doubt() == [] and await restarted.recover() == []
        await restarted.close()
        await po.close()
