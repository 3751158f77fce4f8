"""The acceptor store: durable before reply, group commit, refuses to start blank."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from acceptor.rules import phase1b, phase2b
from acceptor.storage import AcceptorStore, StorageError, TxnRecord, sqlite_url
from rm_sdk.protocol import RM_BALLOT, Ballot, ConflictError, InstanceState, RMSet, Vote


def _url(storage_urls: list[str] | None, tmp_path: Path) -> str:
    return storage_urls[0] if storage_urls else sqlite_url(tmp_path / "acc.db")


def _vote(rm: str, val: Vote):  # type: ignore[no-untyped-def]
    def step(rec: TxnRecord | None) -> tuple[TxnRecord, InstanceState]:
        base = rec or TxnRecord(first_seen_ms=1)
        st = phase2b(base.instances.get(rm, InstanceState()), RM_BALLOT, val)
        return replace(base, instances={**base.instances, rm: st}), st

    return step


async def test_group_commit_batches_concurrent_steps_and_state_survives_reopen(
    storage_urls: list[str] | None, tmp_path: Path
) -> None:
    url = _url(storage_urls, tmp_path)
    store = AcceptorStore(url, 0, init=True)
    batches: list[int] = []
    store.on_batch.append(lambda size, _secs: batches.append(size))
    await store.start()
    n = 300
    await asyncio.gather(*(store.apply(f"t{i}", _vote("rm", Vote.PREPARED)) for i in range(n)))
    assert sum(batches) == n
    assert len(batches) < n / 3, f"{len(batches)} storage transactions for {n} concurrent steps"
    await store.close()

    again = AcceptorStore(url, 0)  # no init: the state must be there
    await again.start()
    for i in (0, n // 2, n - 1):
        rec = await again.read(f"t{i}")
        assert rec is not None and rec.instances["rm"].val is Vote.PREPARED
    assert await again.read("never") is None
    await again.close()


async def test_refused_step_changes_nothing(storage_urls: list[str] | None, tmp_path: Path) -> None:
    store = AcceptorStore(_url(storage_urls, tmp_path), 0, init=True)
    await store.start()
    await store.apply("t", _vote("rm", Vote.PREPARED))
    with pytest.raises(ConflictError):
        await store.apply("t", _vote("rm", Vote.ABORTED))
    rec = await store.read("t")
    assert rec is not None and rec.instances["rm"].val is Vote.PREPARED

    def promise(rec: TxnRecord | None) -> tuple[TxnRecord, None]:
        assert rec is not None
        st = phase1b(rec.instances["rm"], Ballot(3, "L"))
        reg = InstanceState(bal=RM_BALLOT, val=RMSet.of(["rm"]))
        return replace(rec, instances={**rec.instances, "rm": st, "@registrar": reg}), None

    await store.apply("t", promise)
    await store.close()
    again = AcceptorStore(_url(storage_urls, tmp_path), 0)
    await again.start()
    rec = await again.read("t")
    assert rec is not None
    assert rec.instances["rm"].mbal == Ballot(3, "L") and rec.instances["rm"].val is Vote.PREPARED
    assert rec.instances["@registrar"].val == RMSet.of(["rm"])
    await again.close()


async def test_refuses_to_start_blank_or_as_another_acceptor(
    storage_urls: list[str] | None, tmp_path: Path
) -> None:
    url = _url(storage_urls, tmp_path)
    with pytest.raises(StorageError, match="refusing to start blank"):
        await AcceptorStore(url, 0).start()
    first = AcceptorStore(url, 0, init=True)
    await first.start()
    await first.close()
    with pytest.raises(StorageError, match="belongs to acceptor 0"):
        await AcceptorStore(url, 1).start()
