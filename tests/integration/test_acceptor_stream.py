"""The acceptor's batched stream handler: a whole incoming batch is one group of durable
steps; bundle requests wait on callbacks; a bad request is refused alone."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from acceptor.storage import sqlite_url
from paxos_commit.serving import StreamReplies
from rm_sdk.core.messages import Phase2a
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, RMSet, Vote
from rm_sdk.wire import pb, phase2a_to_pb


def _vote(txn: str, rm: str, seq: int) -> pb.AcceptorRequest:
    return pb.AcceptorRequest(seq=seq, phase2a=phase2a_to_pb(Phase2a(txn, RM_BALLOT, {rm: Vote.PREPARED})))


def _register(txn: str, rms: list[str], seq: int) -> pb.AcceptorRequest:
    return pb.AcceptorRequest(
        seq=seq, phase2a=phase2a_to_pb(Phase2a(txn, RM_BALLOT, {REGISTRAR: RMSet.of(rms)}))
    )


def _await_bundle(txn: str, seq: int, wait_ms: int) -> pb.AcceptorRequest:
    return pb.AcceptorRequest(seq=seq, await_phase2b=pb.AwaitPhase2bRequest(txn_id=txn, wait_ms=wait_ms))


async def _replies(r: StreamReplies, n: int, within: float = 2.0) -> list[Any]:
    """The replies emitted so far, once there are ``n`` (or ``within`` seconds passed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(r._out) < n and loop.time() < deadline:
        r._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(r._wake.wait(), deadline - loop.time())
    return list(r._out)


async def _until(cond: Any) -> None:
    while not cond():  # noqa: ASYNC110 (no event to wait on: the store's commit is internal)
        await asyncio.sleep(0.01)


async def test_a_bundle_request_sees_a_vote_committed_in_the_same_storage_batch(servicer: Any) -> None:
    # The owner's registrar 2a and bundle request, and the RM's vote from another stream,
    # land in one storage transaction with the vote after the bundle's read: the bundle
    # must still be answered when that transaction commits, not when its wait ends.
    owner, rm = StreamReplies(), StreamReplies()
    for r, reqs in (
        (owner, [_register("t1", ["a"], 1), _await_bundle("t1", 2, 5000)]),
        (rm, [_vote("t1", "a", 1)]),
    ):
        r.open += len(reqs)
        servicer._on_requests(reqs, r)
    got = await _replies(owner, 2, within=1.0)
    kinds = sorted(x.WhichOneof("msg") for x in got)
    assert kinds == ["bundle", "phase2b"], got
    bundle = next(x.bundle for x in got if x.WhichOneof("msg") == "bundle")
    assert bundle.complete
    assert owner.open == 0


async def test_a_bundle_request_waits_for_the_vote_and_times_out_without_it(servicer: Any) -> None:
    r = StreamReplies()
    reqs = [_register("t2", ["a", "b"], 1), _await_bundle("t2", 2, 200)]
    r.open += 2
    servicer._on_requests(reqs, r)
    first = await _replies(r, 1)
    assert [x.WhichOneof("msg") for x in first] == ["phase2b"]
    vote = StreamReplies()
    vote.open += 1
    servicer._on_requests([_vote("t2", "a", 7)], vote)
    await _replies(vote, 1)
    await asyncio.sleep(0.05)
    assert len(r._out) == 1, "a bundle missing b's vote must wait"
    got = await _replies(r, 2, within=1.0)
    bundle = got[1].bundle
    assert got[1].seq == 2 and not bundle.complete  # answered at the end of its wait
    assert {s.instance for s in bundle.states} == {REGISTRAR, "a"}


async def test_a_malformed_request_is_refused_alone_and_changes_nothing(servicer: Any) -> None:
    r = StreamReplies()
    bad = pb.AcceptorRequest(seq=2, phase2a=pb.Phase2aRequest(txn_id="t3"))  # no ballot
    empty = pb.AcceptorRequest(seq=3)
    reqs = [_vote("t3", "a", 1), bad, empty, _vote("t3", "b", 4)]
    r.open += len(reqs)
    servicer._on_requests(reqs, r)
    got = {x.seq: x for x in await _replies(r, 4)}
    assert got[2].refused.code == "INVALID_ARGUMENT" and "ballot" in got[2].refused.detail
    assert got[3].refused.code == "INVALID_ARGUMENT"
    assert got[1].WhichOneof("msg") == got[4].WhichOneof("msg") == "phase2b"
    rec = servicer.store.cached("t3")
    assert set(rec.instances) == {"a", "b"}


async def test_a_closed_stream_cancels_its_bundle_waits(servicer: Any) -> None:
    r = StreamReplies()
    r.open += 1
    servicer._on_requests([_await_bundle("t4", 1, 60_000)], r)
    await asyncio.wait_for(_until(lambda: bool(r.on_close)), 2.0)
    assert r.on_close and servicer.store._watchers.get("t4")
    r.closed = True
    for cb in r.on_close:
        cb()
    assert not servicer.store._watchers.get("t4")


async def test_storage_failure_answers_unavailable_never_a_durable_reply(servicer: Any) -> None:
    def fail(*_: Any) -> Any:
        raise OSError("disk gone")

    servicer.store._write = fail
    r = StreamReplies()
    reqs = [_vote("t5", "a", 1), _register("t5", ["a"], 2)]
    r.open += 2
    servicer._on_requests(reqs, r)
    got = await _replies(r, 2)
    assert [x.refused.code for x in got] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert servicer.store.cached("t5") is None


async def test_a_registrar_2a_and_its_bundle_request_travel_as_one_message(tmp_path: Path) -> None:
    from acceptor.service import serve_acceptor
    from rm_sdk._streams import StreamAcceptors
    from rm_sdk.core.messages import Bundle, BundleRequest, Phase2b

    async with serve_acceptor(0, sqlite_url(tmp_path / "a.db"), init=True) as handle:
        got: list[Any] = []
        done = asyncio.Event()

        def deliver(m: Any) -> None:
            got.append(m)
            if len(got) >= 2:
                done.set()

        links = StreamAcceptors([handle.address], deliver)
        try:
            links.send(0, Phase2a("t6", RM_BALLOT, {REGISTRAR: RMSet.of([])}))
            links.send(0, BundleRequest("t6", 5.0))
            link = links._links[0]  # type: ignore[index]
            assert len(link.queue) == 1 and link.queue[0].HasField("then_bundle")
            await asyncio.wait_for(done.wait(), 5.0)
        finally:
            await links.close()
    assert [type(m) for m in got] == [Phase2b, Bundle]
    assert got[1].states[REGISTRAR].val == RMSet.of([])  # an empty set decides at once
