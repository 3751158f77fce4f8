"""The SQLite ready-made RMs on their hot path: one connection for every transaction
(none opened per transaction), and TCC's early abort when a try fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rm_sdk import Client, Ledger, Outcome, RMRefused, RMState
from rm_sdk.tcc import TccParticipant
from rm_sdk.testing import InProcessCluster
from tests.integration.test_tcc import Seats


async def test_ledger_and_tcc_open_no_connection_per_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with InProcessCluster(acceptors=1) as cluster, Client(cluster.coordinators) as client:
        bank = Ledger(tmp_path / "bank.db", "bank", cluster.coordinators)
        bank.open_account("alice", 1000)
        seats = Seats({f"s{i}" for i in range(20)})
        tcc = TccParticipant(
            tmp_path / "seats.db",
            "seats",
            cluster.coordinators,
            try_=seats.try_,
            confirm=seats.confirm,
            cancel=seats.cancel,
            acceptors=cluster.acceptors,
        )
        ours = {str(tmp_path / "bank.db"), str(tmp_path / "seats.db")}
        opened: list[str] = []
        real_connect = sqlite3.connect

        def counting_connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            if str(database) in ours:
                opened.append(str(database))
            return real_connect(database, *args, **kwargs)

        monkeypatch.setattr(sqlite3, "connect", counting_connect)
        for i in range(20):
            txn = await client.begin()
            await bank.debit(txn.context, "alice", 1)
            await tcc.enlist(txn.context, {"seat": f"s{i}"})
            assert await txn.commit() is Outcome.COMMITTED
            assert await bank.participant.applied(txn.txn_id) is RMState.COMMITTED
            assert await tcc.participant.applied(txn.txn_id) is RMState.COMMITTED
        assert opened == []
        assert bank.balances() == {"alice": 980} and len(seats.sold) == 20
        await bank.close()
        await tcc.close()


async def test_tcc_failed_try_aborts_at_once(tmp_path: Path) -> None:
    """A try that raises aborts the transaction before commit is asked: the payload is
    cancelled, and commit() raises RMRefused with the try's error."""
    seats = Seats({"1A"})
    async with InProcessCluster() as cluster, Client(cluster.coordinators) as client:
        tcc = TccParticipant(
            tmp_path / "seats.db",
            "seats",
            cluster.coordinators,
            try_=seats.try_,
            confirm=seats.confirm,
            cancel=seats.cancel,
            acceptors=cluster.acceptors,
        )
        txn = await client.begin()
        with pytest.raises(ValueError):
            await tcc.enlist(txn.context, {"seat": "9Z"})
        assert await tcc.participant.applied(txn.txn_id) is RMState.ABORTED
        assert ("cancel", txn.txn_id, "9Z") in seats.calls
        outcome, _ = await client.outcome(txn.txn_id, wait=30)
        assert outcome is Outcome.ABORTED
        with pytest.raises(RMRefused) as info:
            await txn.commit()
        assert info.value.rm_id == "seats" and "seat 9Z is taken" in info.value.reason
        assert tcc.in_doubt() == []
        await tcc.close()
