"""Protocol event logs for trace validation (see ``docs/trace-format.md``).

When enabled, each process appends one NDJSON line per durable protocol step or message
sent, stamped with a Lamport clock. The clock travels in gRPC metadata both ways (client
interceptors stamp requests and merge replies, a server interceptor merges requests and
stamps replies), so sorting the merged logs by (clock, process) gives an order consistent
with causality. Disabled, every call here is a cheap no-op.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from rm_sdk.core.ready import trace_ballot, trace_value

__all__ = [
    "TraceLog",
    "current",
    "disable",
    "enable",
    "event",
    "merge",
    "stamp",
    "trace_ballot",
    "trace_value",
]

METADATA_KEY = "paxos-lamport"


class TraceLog:
    """One process's event log and Lamport clock."""

    def __init__(self, path: Path | str, process: str) -> None:
        self.process = process
        # A restarted process goes on from its last clock, so its new events sort after
        # its old ones (a Lamport clock must never go back).
        self.clock = _last_clock(Path(path))
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process

    def event(self, event: str, txn: str, proc: str | None = None, **fields: Any) -> None:
        with self._lock:
            self.clock += 1
            doc = {"clock": self.clock, "proc": proc or self.process, "txn": txn, "event": event, **fields}
            self._file.write(json.dumps(doc, sort_keys=True) + "\n")
            self._file.flush()

    def stamp(self) -> int:
        with self._lock:
            return self.clock

    def merge(self, clock: int) -> None:
        with self._lock:
            if clock > self.clock:
                self.clock = clock

    def close(self) -> None:
        self._file.close()


def _last_clock(path: Path) -> int:
    if not path.exists():
        return 0
    last = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                last = max(last, int(json.loads(line)["clock"]))
            except (ValueError, KeyError):
                continue  # a torn last line after a crash
    return last


_current: TraceLog | None = None


def enable(path: Path | str, process: str) -> TraceLog:
    """Start logging this process's protocol events to ``path``."""
    global _current
    _current = TraceLog(path, process)
    return _current


def disable() -> None:
    """Stop logging (tests that enabled it in their own process)."""
    global _current
    if _current is not None:
        _current.close()
    _current = None


def current() -> TraceLog | None:
    return _current


def stamp() -> int:
    """This process's clock, for a message it sends (0 when tracing is off)."""
    log = _current
    return log.stamp() if log is not None else 0


def merge(clock: int) -> None:
    """Take in the clock a received message carries (0: the sender does not trace)."""
    log = _current
    if log is not None and clock:
        log.merge(clock)


def event(event_name: str, txn: str, proc: str | None = None, **fields: Any) -> None:
    """Log one protocol event if tracing is enabled."""
    log = _current
    if log is not None:
        log.event(event_name, txn, proc, **fields)


def _clock_from(metadata: Any) -> int | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            try:
                return int(value)
            except ValueError:
                return None
    return None


if TYPE_CHECKING:
    _ClientBase = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _ServerBase = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ClientBase = grpc.aio.UnaryUnaryClientInterceptor
    _ServerBase = grpc.aio.ServerInterceptor


class ClientClock(_ClientBase):
    """Stamps outgoing requests with our clock; merges the clock of each reply."""

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        log = _current
        if log is None:
            return await continuation(client_call_details, request)
        metadata = [*(client_call_details.metadata or ()), (METADATA_KEY, str(log.stamp()))]
        details = client_call_details._replace(metadata=metadata)
        call = await continuation(details, request)
        try:
            clock = _clock_from(await call.trailing_metadata())
        except grpc.aio.AioRpcError:
            clock = None
        if clock is not None:
            log.merge(clock)
        return call


class ServerClock(_ServerBase):
    """Merges the clock of each request; stamps each reply with ours."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        log = _current
        if log is None or handler is None or handler.unary_unary is None:
            return handler
        clock = _clock_from(handler_call_details.invocation_metadata)
        inner: Any = handler.unary_unary

        async def clocked(request: Any, context: Any) -> Any:
            if clock is not None:
                log.merge(clock)
            try:
                return await inner(request, context)
            finally:
                context.set_trailing_metadata(((METADATA_KEY, str(log.stamp())),))

        return grpc.unary_unary_rpc_method_handler(
            clocked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def client_interceptors() -> list[Any] | None:
    """Interceptors for a new channel: the clock's, if tracing is on (else none: free)."""
    return [ClientClock()] if _current is not None else None


def server_interceptors() -> list[Any]:
    return [ServerClock()] if _current is not None else []
