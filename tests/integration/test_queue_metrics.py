"""Queue depths in the services' metrics: steps waiting for an acceptor's storage and in
the batch being written, requests unsent and unanswered on a coordinator's acceptor
links, and requests and replies waiting on a service's streams. Each is read when
scraped, so each test checks the figure a scrape gives while work is held up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc

from paxos_commit.metrics import AcceptorMetrics, CoordinatorMetrics
from paxos_commit.serving import StreamReplies, serve_stream
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk._streams import StreamAcceptors
from rm_sdk.core.messages import Phase2a
from rm_sdk.protocol import RM_BALLOT, Vote
from rm_sdk.wire import pb, phase2a_to_pb
from tests.integration.helpers import wait_until


def _vote(txn: str, seq: int) -> pb.AcceptorRequest:
    return pb.AcceptorRequest(seq=seq, phase2a=phase2a_to_pb(Phase2a(txn, RM_BALLOT, {"a": Vote.PREPARED})))


def _storage(m: AcceptorMetrics, state: str) -> float | None:
    return m.registry.get_sample_value("paxos_commit_acceptor_storage_queue_steps", {"state": state})


async def test_an_acceptor_reports_steps_waiting_for_storage_and_in_the_batch_being_written(
    servicer: Any,
) -> None:
    m: AcceptorMetrics = servicer.metrics
    assert (_storage(m, "waiting"), _storage(m, "writing")) == (0, 0)
    # Hold the writer thread, so the first batch cannot start writing.
    held = threading.Event()
    servicer.store._executor.submit(held.wait)
    try:
        first = StreamReplies()
        first.open += 2
        servicer._on_requests([_vote("t1", 1), _vote("t2", 2)], first)
        # Both steps are queued until the write loop takes them as one batch.
        assert (_storage(m, "waiting"), _storage(m, "writing")) == (2, 0)
        await wait_until(lambda: _storage(m, "writing") == 2, what="the batch taken")
        second = StreamReplies()
        second.open += 1
        servicer._on_requests([_vote("t3", 1)], second)
        assert (_storage(m, "waiting"), _storage(m, "writing")) == (1, 2)
        assert not first._out, "no reply before the batch is durable"
    finally:
        held.set()
    await wait_until(lambda: len(first._out) == 2 and len(second._out) == 1, what="the replies")
    assert (_storage(m, "waiting"), _storage(m, "writing")) == (0, 0)


class _SilentAcceptor(pb_grpc.AcceptorServicer):
    """Reads every batch and never answers (a paused acceptor, as the links see it)."""

    def __init__(self) -> None:
        self.requests = 0

    async def Stream(self, request_iterator: Any, context: Any) -> AsyncIterator[pb.AcceptorReplyBatch]:
        async for batch in request_iterator:
            self.requests += len(batch.requests)
        return
        yield  # an async generator: grpc.aio tells streaming handlers by that


def _link(m: CoordinatorMetrics, acceptor: int, state: str) -> float | None:
    return m.registry.get_sample_value(
        "paxos_commit_acceptor_link_requests", {"acceptor": str(acceptor), "state": state}
    )


async def test_a_coordinator_reports_each_acceptor_links_unsent_and_unanswered_requests() -> None:
    silent = _SilentAcceptor()
    server = grpc.aio.server()
    pb_grpc.add_AcceptorServicer_to_server(silent, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    links = StreamAcceptors([f"127.0.0.1:{port}"], lambda _: None, rpc_timeout=30.0)
    m = CoordinatorMetrics()
    m.watch_acceptor_links(links)
    try:
        assert (_link(m, 0, "unsent"), _link(m, 0, "unanswered")) == (0, 0)
        for t in ("t1", "t2", "t3"):
            links.send(0, Phase2a(t, RM_BALLOT, {"a": Vote.PREPARED}))
        # Queued for the link's first write, which has not run yet.
        assert (_link(m, 0, "unsent"), _link(m, 0, "unanswered")) == (3, 3)
        await wait_until(lambda: silent.requests == 3, what="the requests written")
        assert (_link(m, 0, "unsent"), _link(m, 0, "unanswered")) == (0, 3)
    finally:
        await links.close()
        await server.stop(None)


async def test_a_service_reports_its_streams_their_open_requests_and_unsent_replies() -> None:
    m = CoordinatorMetrics()
    live = m.open_streams
    incoming: asyncio.Queue[pb.CoordinatorRequestBatch | None] = asyncio.Queue()
    held: list[StreamReplies] = []

    async def batches() -> AsyncIterator[pb.CoordinatorRequestBatch]:
        while (b := await incoming.get()) is not None:
            yield b

    def on_requests(requests: Any, replies: StreamReplies) -> None:
        held.append(replies)  # answered later, by the test

    def sample(name: str) -> float | None:
        return m.registry.get_sample_value(name)

    stream = serve_stream(batches(), on_requests, lambda out, clock: out)
    assert sample("paxos_commit_streams_open") == 0
    first = asyncio.ensure_future(stream.__anext__())  # the stream runs until its first write
    await incoming.put(pb.CoordinatorRequestBatch(requests=[pb.CoordinatorRequest(seq=i) for i in (1, 2, 3)]))
    await wait_until(lambda: bool(held), what="the batch read")
    assert sample("paxos_commit_streams_open") == 0, "not counted: the stream was not given `live`"
    await incoming.put(None)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await stream.aclose()

    held.clear()
    stream = serve_stream(batches(), on_requests, lambda out, clock: list(out), live=live)
    first = asyncio.ensure_future(stream.__anext__())
    await incoming.put(pb.CoordinatorRequestBatch(requests=[pb.CoordinatorRequest(seq=i) for i in (1, 2, 3)]))
    await wait_until(lambda: bool(held), what="the batch read")
    assert sample("paxos_commit_streams_open") == 1
    assert sample("paxos_commit_stream_requests_open") == 3
    assert sample("paxos_commit_stream_replies_unsent") == 0
    # Two answers, lazy: they wait for the stream's next write (or LAZY_FLUSH).
    held[0].emit(pb.CoordinatorReply(seq=1), lazy=True)
    held[0].emit(pb.CoordinatorReply(seq=2), lazy=True)
    assert sample("paxos_commit_stream_requests_open") == 1
    assert sample("paxos_commit_stream_replies_unsent") == 2
    written = await asyncio.wait_for(first, 5)
    assert [r.seq for r in written] == [1, 2]
    assert sample("paxos_commit_stream_replies_unsent") == 0
    await incoming.put(None)
    await stream.aclose()
    assert sample("paxos_commit_streams_open") == 0


def _scrape(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines() if line and line[0] != "#")
    }


async def test_the_services_serve_their_queue_depths(tmp_path: Any) -> None:
    """The wiring: each service counts its own open streams and storage or links."""
    from acceptor.service import serve_acceptor
    from acceptor.storage import sqlite_url
    from coordinator.service import CoordinatorConfig, serve_coordinator

    async with serve_acceptor(0, sqlite_url(tmp_path / "a.db"), init=True, metrics_port=0) as acc:
        config = CoordinatorConfig(acceptors=[acc.address], recovery_interval=0)
        async with serve_coordinator(config, metrics_port=0) as coord:
            for handle, stub_cls, batch in (
                (acc, pb_grpc.AcceptorStub, pb.AcceptorRequestBatch),
                (coord, pb_grpc.CoordinatorStub, pb.CoordinatorRequestBatch),
            ):
                port = handle.metrics_port
                assert port is not None
                before = await asyncio.to_thread(_scrape, port)
                async with grpc.aio.insecure_channel(handle.address) as channel:
                    call = stub_cls(channel).Stream()
                    await call.write(batch())  # hello: answered with an empty batch
                    await call.read()
                    opened = await asyncio.to_thread(_scrape, port)
                    assert opened["paxos_commit_streams_open"] == before["paxos_commit_streams_open"] + 1
                    call.cancel()

                async def closed(port: int = port, n: float = before["paxos_commit_streams_open"]) -> bool:
                    return (await asyncio.to_thread(_scrape, port))["paxos_commit_streams_open"] == n

                for _ in range(100):
                    if await closed():
                        break
                    await asyncio.sleep(0.05)
                assert await closed(), "a closed stream is no longer counted"
            got = await asyncio.to_thread(_scrape, acc.metrics_port or 0)
            assert got['paxos_commit_acceptor_storage_queue_steps{state="waiting"}'] == 0
            assert got['paxos_commit_acceptor_storage_queue_steps{state="writing"}'] == 0
            got = await asyncio.to_thread(_scrape, coord.metrics_port or 0)
            for state in ("unsent", "unanswered"):
                assert got[f'paxos_commit_acceptor_link_requests{{acceptor="0",state="{state}"}}'] == 0
