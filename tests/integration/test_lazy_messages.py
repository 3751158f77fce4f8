"""Lazy messages: those nobody waits on (acknowledgements, outcome records, their answers,
the 2b of an RM's own vote) do not wake their stream's writer. They leave with the next
message that does, or after ``LAZY_FLUSH``; every other message is written at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import rm_sdk._streams as streams
from acceptor.service import serve_acceptor
from acceptor.storage import sqlite_url
from coordinator.service import CoordinatorConfig, CoordinatorServicer
from paxos_commit.serving import StreamReplies, serve_stream
from rm_sdk._streams import StreamAcceptors, StreamCoordinator
from rm_sdk.core.messages import OutcomeRecorded, Phase2a, Phase2b, RecordOutcome
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Outcome, RMSet, Vote
from rm_sdk.wire import pb, phase2a_to_pb, record_outcome_to_pb


def _vote(txn: str, rm: str, seq: int, vote: Vote = Vote.PREPARED) -> pb.AcceptorRequest:
    return pb.AcceptorRequest(seq=seq, phase2a=phase2a_to_pb(Phase2a(txn, RM_BALLOT, {rm: vote})))


def _register(txn: str, rms: list[str], seq: int) -> pb.AcceptorRequest:
    return pb.AcceptorRequest(
        seq=seq, phase2a=phase2a_to_pb(Phase2a(txn, RM_BALLOT, {REGISTRAR: RMSet.of(rms)}))
    )


def _record(txn: str, seq: int) -> pb.AcceptorRequest:
    msg = RecordOutcome(txn, Outcome.COMMITTED, frozenset({"a"}), frozenset({"a"}))
    return pb.AcceptorRequest(seq=seq, record_outcome=record_outcome_to_pb(msg))


async def _until(cond: Any, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():  # polled: the store's commit has no event to wait on
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


@pytest.fixture
def no_timer_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lazy messages leave only with an urgent one (the timer would take a minute)."""
    monkeypatch.setattr(streams, "LAZY_FLUSH", 60.0)


async def test_serve_stream_holds_a_lazy_reply_until_an_urgent_one_or_the_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "LAZY_FLUSH", 0.3)
    requests: asyncio.Queue[Any] = asyncio.Queue()
    streams_replies: list[StreamReplies] = []

    async def incoming() -> AsyncIterator[Any]:
        while True:
            item = await requests.get()
            if item is None:
                return
            yield item

    def on_requests(reqs: Any, replies: StreamReplies) -> None:
        streams_replies.append(replies)
        for r in reqs:
            replies.emit(r.seq, lazy=r.seq % 2 == 1)  # odd seqs: lazy

    batches: asyncio.Queue[list[Any]] = asyncio.Queue()

    sizes: list[int] = []

    async def writer() -> None:
        async for b in serve_stream(incoming(), on_requests, lambda out, _clock: out, None, sizes.append):
            await batches.put(b)

    task = asyncio.get_running_loop().create_task(writer())
    try:
        await requests.put(pb.CoordinatorRequestBatch(requests=[pb.CoordinatorRequest(seq=1)]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batches.get(), 0.15)  # lazy: not written yet
        await requests.put(pb.CoordinatorRequestBatch(requests=[pb.CoordinatorRequest(seq=2)]))
        assert await asyncio.wait_for(batches.get(), 2.0) == [1, 2]  # carried by the urgent one
        assert streams_replies[0]._lazy is None  # nothing owed once carried
        await requests.put(pb.CoordinatorRequestBatch(requests=[pb.CoordinatorRequest(seq=3)]))
        assert await asyncio.wait_for(batches.get(), 2.0) == [3]  # alone: after the flush
        assert sizes == [2, 1]  # each outgoing batch is counted (the writes metric)
    finally:
        await requests.put(None)
        task.cancel()


async def test_acceptor_replies_to_votes_and_records_are_lazy_to_the_registrar_urgent(
    servicer: Any, no_timer_flush: None
) -> None:
    rm = StreamReplies()
    rm.open += 1
    servicer._on_requests([_vote("t1", "a", 1)], rm)
    await _until(lambda: bool(rm._out))
    assert not rm._wake.is_set() and rm._lazy is not None  # durable, held for the next write

    owner = StreamReplies()
    owner.open += 1
    servicer._on_requests([_record("t0", 1)], owner)
    await _until(lambda: bool(owner._out))
    assert owner._out[0].WhichOneof("msg") == "recorded" and not owner._wake.is_set()
    # The owner's registrar 2a is waited for: its reply wakes the writer, which carries
    # the record's reply along.
    owner.open += 1
    servicer._on_requests([_register("t1", ["a"], 2)], owner)
    await _until(owner._wake.is_set)
    assert [r.seq for r in owner._out] == [1, 2]


async def test_a_registrar_2a_with_its_bundle_request_is_answered_with_the_bundle(
    servicer: Any, no_timer_flush: None
) -> None:
    owner = StreamReplies()
    req = _register("t6", ["a"], 1)
    req.then_bundle.wait_ms = 60_000
    owner.open += 2
    servicer._on_requests([req], owner)
    await _until(lambda: bool(owner._out))
    assert owner._out[0].WhichOneof("msg") == "phase2b" and not owner._wake.is_set()
    rm = StreamReplies()
    rm.open += 1
    servicer._on_requests([_vote("t6", "a", 1)], rm)  # the bundle is now complete
    await _until(owner._wake.is_set)
    assert [r.WhichOneof("msg") for r in owner._out] == ["phase2b", "bundle"]


async def test_a_refused_vote_is_answered_at_once(servicer: Any, no_timer_flush: None) -> None:
    rm = StreamReplies()
    rm.open += 1
    servicer._on_requests([_vote("t7", "a", 1)], rm)
    await _until(lambda: bool(rm._out))
    rm.open += 1
    servicer._on_requests([_vote("t7", "a", 2, Vote.ABORTED)], rm)  # another value at ballot 0
    await _until(rm._wake.is_set)
    assert rm._out[1].WhichOneof("msg") == "refused"


async def test_a_vote_refused_for_failed_storage_is_answered_at_once(
    servicer: Any, no_timer_flush: None
) -> None:
    def fail(*_: Any) -> Any:
        raise OSError("disk gone")

    servicer.store._write = fail
    rm = StreamReplies()
    rm.open += 1
    servicer._on_requests([_vote("t2", "a", 1)], rm)
    await _until(rm._wake.is_set)
    assert rm._out[0].refused.code == "UNAVAILABLE"  # the RM moves on to another acceptor


async def test_an_outcome_record_waits_on_its_link_for_the_next_urgent_request(
    tmp_path: Path, no_timer_flush: None
) -> None:
    async with serve_acceptor(0, sqlite_url(tmp_path / "a.db"), init=True) as handle:
        got: list[Any] = []
        links = StreamAcceptors([handle.address], got.append)
        try:
            links.send(0, Phase2a("t3", RM_BALLOT, {REGISTRAR: RMSet.of([])}))
            await _until(lambda: len(got) == 1)  # the stream is up and idle
            links.send(0, RecordOutcome("t3", Outcome.ABORTED, frozenset(), frozenset()))
            link = links._links[0]  # type: ignore[index]
            await asyncio.sleep(0.2)
            assert len(link.queue) == 1 and link.lazy is not None and len(got) == 1  # still queued
            links.send(0, Phase2a("t4", RM_BALLOT, {REGISTRAR: RMSet.of([])}))
            await _until(lambda: len(got) == 3)
            assert link.lazy is None
        finally:
            await links.close()
    assert [type(m).__name__ for m in got[1:]].count(OutcomeRecorded.__name__) == 1
    assert [type(m) for m in got].count(Phase2b) == 2


async def test_a_lazy_coordinator_call_does_not_wake_the_stream(no_timer_flush: None) -> None:
    coord = StreamCoordinator(grpc.aio.insecure_channel("127.0.0.1:9"))
    try:
        coord.submit(pb.CoordinatorRequest(acknowledge=pb.AcknowledgeRequest(txn_id="t")), 5.0, lazy=True)
        assert coord._wake is not None and not coord._wake.is_set() and coord._lazy is not None
        coord.submit(pb.CoordinatorRequest(get_outcome=pb.GetOutcomeRequest(txn_id="t")), 5.0)
        assert coord._wake.is_set() and len(coord._queue) == 2
    finally:
        await coord.close()
    assert coord._lazy is None


async def test_the_coordinator_answers_an_acknowledgement_lazily(no_timer_flush: None) -> None:
    servicer = CoordinatorServicer(
        CoordinatorConfig(acceptors=["127.0.0.1:9"], name="c", recovery_interval=0)
    )
    try:
        r = StreamReplies()
        r.open += 2
        servicer._emit(r, 1, "acknowledge", pb.AcknowledgeReply())
        assert len(r._out) == 1 and not r._wake.is_set()
        servicer._emit(r, 2, "get_outcome", pb.GetOutcomeReply())
        assert r._wake.is_set() and len(r._out) == 2
    finally:
        await servicer.acceptors.close()
