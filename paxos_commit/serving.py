"""What every paxos-commit gRPC server shares: limits, error mapping, lifecycle."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rm_sdk import tracing
from rm_sdk._streams import flushed, kick
from rm_sdk.protocol import ProtocolError

__all__ = [
    "EVENT_LOOP_ENV",
    "MAX_DETAIL_BYTES",
    "MAX_MESSAGE_BYTES",
    "ServerHandle",
    "abort_on_error",
    "bounded",
    "clamp_wait_ms",
    "run",
    "serve_stream",
    "StreamReplies",
    "wait_for_signal",
    "write_port_file",
    "start_server",
]

log = logging.getLogger("paxos_commit")

#: Requests above this size are refused with RESOURCE_EXHAUSTED before any handler runs.
MAX_MESSAGE_BYTES = 1 << 20
#: Cap on any long-poll wait a client asks for.
MAX_WAIT_MS = 60_000
#: Error details are cut to this many bytes (a request may carry a 1 MB name).
MAX_DETAIL_BYTES = 1024

T = TypeVar("T")


def clamp_wait_ms(wait_ms: int) -> float:
    """A client's wait in seconds, capped."""
    return min(wait_ms, MAX_WAIT_MS) / 1000.0


def bounded(detail: str) -> str:
    """An error detail cut to MAX_DETAIL_BYTES (whole characters)."""
    raw = detail.encode()
    return detail if len(raw) <= MAX_DETAIL_BYTES else raw[:MAX_DETAIL_BYTES].decode(errors="ignore")


async def abort_on_error(context: grpc.aio.ServicerContext[Any, Any], call: Awaitable[T]) -> T:
    """Await a handler's work, turning protocol errors into gRPC statuses (details
    bounded) and any other failure (storage) into UNAVAILABLE: a unary call never ends
    UNKNOWN because the database did not answer."""
    try:
        return await call
    except ProtocolError as exc:
        await context.abort(grpc.StatusCode[exc.status], bounded(str(exc)))
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as exc:
        log.warning("request failed: %s", bounded(repr(exc)))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "storage failed; try again or another acceptor")
    raise AssertionError("unreachable")


class ServerHandle:
    """A started server: its address, health servicer, and a graceful stop."""

    def __init__(self, server: grpc.aio.Server, address: str, health_servicer: Any) -> None:
        self.server = server
        self.address = address
        self.health = health_servicer
        self.service_names: list[str] = []
        #: Where /metrics is served, if it is.
        self.metrics_port: int | None = None
        #: Whether the port speaks TLS (mTLS: peers present certificates).
        self.secure = False
        #: The plain-text health-only server, if any, and its port.
        self.health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None

    async def set_serving(self, serving: bool) -> None:
        """Readiness of the named services: NOT_SERVING while a dependency (storage,
        acceptors) is unreachable. The overall service "" stays SERVING while the process
        runs, so a liveness check on it does not restart a healthy process in an outage."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.service_names:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


async def start_server(
    listen: str,
    register: Callable[[grpc.aio.Server], None],
    service_names: list[str],
    advertise_host: str | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
    health_listen: str | None = None,
) -> ServerHandle:
    """Bind ``listen`` (port 0: the OS picks), register services, health and reflection,
    start. ``credentials``: TLS (see :func:`paxos_commit.certs.server_credentials`);
    None listens in plain text. ``health_listen``: also serve only the health service,
    in plain text, there (for kubelet probes, which cannot present a certificate)."""
    server = grpc.aio.server(
        interceptors=[*tracing.server_interceptors(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    register(server)
    health_servicer: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, reflection.SERVICE_NAME, "grpc.health.v1.Health"], server
    )
    port = (
        server.add_insecure_port(listen)
        if credentials is None
        else server.add_secure_port(listen, credentials)
    )
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    if health_listen is not None:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(health_listen)
        if health_port == 0:
            raise OSError(f"cannot listen on {health_listen}")
        await health_server.start()
    host = advertise_host or listen.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    address = f"{host}:{port}"
    handle = ServerHandle(server, address, health_servicer)
    handle.service_names = list(service_names)
    handle.secure = credentials is not None
    handle.health_server, handle.health_port = health_server, health_port
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await handle.set_serving(True)
    return handle


def write_port_file(path: str | None, info: dict[str, Any]) -> None:
    """Tell a supervisor where we listen: written atomically once serving."""
    if not path:
        return
    tmp = Path(path + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


#: The environment variable that picks a process's event loop: ``uvloop`` (the default,
#: when installed) or ``asyncio``.
EVENT_LOOP_ENV = "PAXOS_COMMIT_EVENT_LOOP"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine to completion, on uvloop when it is installed (the
    ``server`` extra brings it: in ``paxos-commit bench`` it cut CPU per transaction by
    5-10%), else on asyncio's own loop; ``PAXOS_COMMIT_EVENT_LOOP=asyncio`` forces that."""
    choice = os.environ.get(EVENT_LOOP_ENV, "uvloop") or "uvloop"
    if choice not in ("uvloop", "asyncio"):
        main.close()
        raise SystemExit(f"{EVENT_LOOP_ENV} must be 'uvloop' or 'asyncio', not {choice!r}")
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # not on this platform, or the SDK alone: asyncio's loop
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM (the caller then stops gracefully)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: stopping")


# ---------------------------------------------------------------- batched streams

Batch = TypeVar("Batch")

#: Requests of one stream being worked on at once; beyond, the stream is not read.
MAX_IN_FLIGHT = 10_000


class StreamReplies:
    """Where a batch handler puts the replies of one stream, now or later (from a
    storage completion or a timer). Each request gets exactly one reply; replies after the
    stream ended are dropped, and ``on_close`` callbacks run then (cancel timers)."""

    __slots__ = ("_lazy", "_out", "_wake", "closed", "on_close", "open")

    def __init__(self) -> None:
        self._out: list[Any] = []
        self._wake = asyncio.Event()
        #: The flush of lazy replies nothing else has carried yet (see :data:`rm_sdk._streams.LAZY_FLUSH`).
        self._lazy: asyncio.TimerHandle | None = None
        self.closed = False
        self.on_close: list[Callable[[], None]] = []
        #: Requests read and not answered yet.
        self.open = 0

    def emit(self, reply: Any, lazy: bool = False) -> None:
        """``lazy``: nobody waits on this reply (an acknowledgement's answer, a vote's
        2b): it leaves with the stream's next write, or after :data:`rm_sdk._streams.LAZY_FLUSH`."""
        if self.closed:
            return
        self._out.append(reply)
        self.open -= 1
        self._lazy = kick(self._wake, lazy, self._lazy)

    @property
    def unsent(self) -> int:
        """Replies ready and not written yet."""
        return len(self._out)

    def emit_all(self, replies: Iterable[Any], lazy: bool = False) -> None:
        if self.closed:
            return
        n = len(self._out)
        self._out.extend(replies)
        self.open -= len(self._out) - n
        self._lazy = kick(self._wake, lazy, self._lazy)


async def serve_stream(
    request_batches: AsyncIterator[Any],
    on_requests: Callable[[Sequence[Any], StreamReplies], None],
    make_batch: Callable[[list[Any], int], Batch],
    on_batch: Callable[[int], None] | None = None,
    on_reply_batch: Callable[[int], None] | None = None,
    live: set[StreamReplies] | None = None,
) -> AsyncIterator[Batch]:
    """The server side of a batched stream whose handler takes a whole incoming batch at
    once (``on_requests``: synchronous; it answers through :class:`StreamReplies`, at once
    or later). Replies are written in batches of everything ready while the previous write
    was in flight (no timer; lazy replies wait for the next write or LAZY_FLUSH). An empty
    incoming batch is answered with an empty one (the peer's way to learn the stream is
    up). Reading stops while MAX_IN_FLIGHT requests are open. ``on_batch`` and
    ``on_reply_batch`` get the size of each incoming and outgoing batch. ``live``: the
    service's open streams (for its queue-depth metrics); this one is in it while open."""
    replies = StreamReplies()
    if live is not None:
        live.add(replies)
    hello = False
    ended = False
    room = asyncio.Event()
    room.set()

    async def read() -> None:
        nonlocal hello, ended
        try:
            async for batch in request_batches:
                tracing.merge(batch.lamport)
                if on_batch is not None:
                    on_batch(len(batch.requests))
                if not batch.requests:
                    hello = True
                    replies._wake.set()
                    continue
                replies.open += len(batch.requests)
                on_requests(batch.requests, replies)
                while replies.open >= MAX_IN_FLIGHT:
                    room.clear()
                    await room.wait()
        finally:
            ended = True
            replies._wake.set()

    reader = asyncio.get_running_loop().create_task(read())
    try:
        while True:
            if not replies._out and not hello:
                if ended and replies.open <= 0:
                    return
                replies._wake.clear()
                await replies._wake.wait()
                continue
            out, replies._out = replies._out, []
            replies._lazy = flushed(replies._lazy)
            hello = False
            if replies.open < MAX_IN_FLIGHT:
                room.set()
            if on_reply_batch is not None:
                on_reply_batch(len(out))
            yield make_batch(out, tracing.stamp())
    finally:
        replies.closed = True
        if live is not None:
            live.discard(replies)
        replies._lazy = flushed(replies._lazy)
        reader.cancel()
        for cb in replies.on_close:
            cb()
