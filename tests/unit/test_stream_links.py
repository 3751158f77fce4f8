"""Stopping a stream link: a cancellation is never swallowed, whatever the link was doing.

A link whose stream just broke waits for the stream's reader to end before it redials. If
it was told to stop (``close``) during that wait and swallowed the cancellation, it would
redial forever and ``close`` (and so the process's shutdown) would hang."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from paxos_commit.bench import NullRM
from rm_sdk import Participant
from rm_sdk._streams import StreamAcceptors, StreamCoordinator
from rm_sdk.core.messages import AcceptorReply, RecordOutcome
from rm_sdk.protocol import Outcome


class _BrokenStream:
    """A stream whose first write fails once ``broken`` is set, and whose reader takes
    ``linger`` seconds to end after it is cancelled (as a real one may, mid-read)."""

    def __init__(self, broken: asyncio.Event, reader_stopping: asyncio.Event, linger: float) -> None:
        self.broken = broken
        self.reader_stopping = reader_stopping
        self.linger = linger

    async def write(self, _batch: Any) -> None:
        await self.broken.wait()
        await asyncio.sleep(0.01)  # the reader is reading by now
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "broken", None
        )

    def cancel(self) -> bool:
        return True

    def __aiter__(self) -> _BrokenStream:
        return self

    async def __anext__(self) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.reader_stopping.set()
            await asyncio.sleep(self.linger)
            raise
        raise StopAsyncIteration


class _Stub:
    def __init__(self, broken: asyncio.Event, reader_stopping: asyncio.Event, linger: float) -> None:
        self.streams: list[_BrokenStream] = []
        self.args = (broken, reader_stopping, linger)

    def Stream(self, _metadata: Any) -> _BrokenStream:
        s = _BrokenStream(*self.args)
        self.streams.append(s)
        return s


async def test_close_while_a_broken_stream_winds_down_stops_the_link() -> None:
    got: list[AcceptorReply] = []
    acceptors = StreamAcceptors(["127.0.0.1:9"], got.append)
    broken, stopping = asyncio.Event(), asyncio.Event()
    stub = _Stub(broken, stopping, 0.2)
    acceptors.send(0, RecordOutcome("t1", Outcome.COMMITTED))  # starts the link (not yet run)
    assert acceptors._links is not None
    link = acceptors._links[0]
    link.stub = stub  # type: ignore[assignment]
    broken.set()  # the first write fails: the link winds its stream down
    await asyncio.wait_for(stopping.wait(), 2.0)
    # The link now waits for the reader to end: stop it right there.
    await asyncio.wait_for(acceptors.close(), 2.0)
    assert link.task.cancelled()
    assert len(stub.streams) == 1  # it never redialled
    assert got == []  # closed: nothing delivered after close


async def test_a_cancelled_close_of_a_coordinator_stream_reraises_the_cancellation() -> None:
    # close() itself cancelled while it waits for its stream task to end: the caller's
    # cancellation reaches the caller, it is not swallowed with the task's.
    coord = StreamCoordinator(grpc.aio.insecure_channel("127.0.0.1:9"))
    stopping = asyncio.Event()

    async def lingering() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()
            await asyncio.sleep(0.3)
            raise

    coord._task = asyncio.ensure_future(lingering())
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(coord.close())
    await asyncio.wait_for(stopping.wait(), 2.0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(coord.close(), 2.0)  # a second close finishes the job
    assert coord._task.cancelled()


def test_no_code_of_ours_swallows_a_cancellation() -> None:
    # The class of the bug above: `suppress(CancelledError)` around an await swallows the
    # waiter's own cancellation too. Wait with asyncio.wait([task]) instead.
    root = Path(__file__).resolve().parents[2]
    found = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("rm_sdk", "acceptor", "coordinator", "paxos_commit")
        for path in sorted((root / folder).rglob("*.py"))
        if "_gen" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"suppress\([^)]*CancelledError", line)
    ]
    assert found == []


async def test_a_closed_participant_opens_no_new_acceptor_links() -> None:
    # A join answered after close (the application's own call, not a task close cancels)
    # must not leave a link behind that nobody closes: its stream would outlive the
    # participant and keep the process's loop from ending.
    p = Participant(NullRM("rm-a"), ["127.0.0.1:9"])
    assert p._use_acceptors(["127.0.0.1:9"]) == 1
    await p.close()
    assert p._links == {}
    p._use_acceptors(["127.0.0.1:7"])
    assert p._links == {}
