"""Carry the current transaction from the application to the services it calls.

A transaction is *current* in a task or thread (a :mod:`contextvars` variable):
``async with client.transaction()`` makes it current, and so does :func:`use`. Calls
made while it is current carry it, and the services they reach see it as current too:

- gRPC: :func:`async_client_interceptors` (``grpc.aio``) and :class:`ClientInterceptor`
  (sync ``grpc``) add the metadata ``paxos-commit-txn: <token>``;
  :class:`AsyncServerInterceptor` and :class:`ServerInterceptor` read it and make the
  transaction current while the handler runs, so a handler can simply call
  ``await participant.join(current())``. A malformed token ends the call with
  ``INVALID_ARGUMENT`` before the handler runs.
- HTTP: :func:`inject` writes the ``Paxos-Commit-Txn`` header, :func:`extract` reads it.

The token is :meth:`TransactionContext.token` (``txn_id@coordinator-host:port``).

Example (a client and a server)::

    channel = grpc.aio.insecure_channel(address, interceptors=async_client_interceptors())
    async with client.transaction():
        await BankStub(channel).Debit(request)  # carries the transaction

    server = grpc.aio.server(interceptors=[AsyncServerInterceptor()])
    ...
    async def Debit(self, request, context):
        await ledger.debit(current(), request.account, request.amount)
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import grpc

from rm_sdk._context import current, use
from rm_sdk.client import TransactionContext

__all__ = [
    "HTTP_HEADER",
    "METADATA_KEY",
    "AsyncServerInterceptor",
    "ClientInterceptor",
    "ServerInterceptor",
    "async_client_interceptors",
    "current",
    "extract",
    "inject",
    "use",
]

#: The gRPC metadata key that carries a transaction token (gRPC keys are lower case).
METADATA_KEY = "paxos-commit-txn"
#: The HTTP header that carries a transaction token (header names are case-insensitive).
HTTP_HEADER = "Paxos-Commit-Txn"


# ------------------------------------------------------------------------------ HTTP


def inject(headers: MutableMapping[str, str], ctx: TransactionContext | None = None) -> None:
    """Add the ``Paxos-Commit-Txn`` header for ``ctx`` (default: the current
    transaction) to ``headers``. Without a transaction, ``headers`` is left as it is."""
    ctx = ctx if ctx is not None else current()
    if ctx is not None:
        headers[HTTP_HEADER] = ctx.token()


def extract(headers: Mapping[str, str]) -> TransactionContext | None:
    """The transaction named by the ``Paxos-Commit-Txn`` header of ``headers`` (looked up
    case-insensitively), or None if there is no such header. Raises :class:`ValueError`
    if the header is malformed (answer 400 Bad Request)."""
    value = headers.get(HTTP_HEADER)
    if value is None:
        wanted = HTTP_HEADER.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    if value is None:
        return None
    return TransactionContext.parse(value.strip())


# ------------------------------------------------------------------------ gRPC client


def _with_token(metadata: Any, token: str) -> list[tuple[str, str | bytes]]:
    """``metadata`` plus our key, unless the caller already set it explicitly."""
    items: list[tuple[str, str | bytes]] = [(k, v) for k, v in (metadata or ())]
    if not any(k == METADATA_KEY for k, _ in items):
        items.append((METADATA_KEY, token))
    return items


if TYPE_CHECKING:
    _AioUnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _AioUnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _AioStreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _AioStreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
    _AioServer = grpc.aio.ServerInterceptor[Any, Any]
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.StreamStreamClientInterceptor[Any, Any]
    _Server = grpc.ServerInterceptor[Any, Any]
else:
    _AioUnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _AioUnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _AioStreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _AioStreamStream = grpc.aio.StreamStreamClientInterceptor
    _AioServer = grpc.aio.ServerInterceptor
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor
    _StreamUnary = grpc.StreamUnaryClientInterceptor
    _StreamStream = grpc.StreamStreamClientInterceptor
    _Server = grpc.ServerInterceptor


def _aio_details(details: Any) -> Any:
    ctx = current()
    if ctx is None:
        return details
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*_with_token(details.metadata, ctx.token())),
        details.credentials,
        details.wait_for_ready,
    )


# grpc.aio files each interceptor object under one call kind only (the first base class
# it matches), so there is one class per kind; async_client_interceptors() gives all four.


class _AioUnaryUnaryInterceptor(_AioUnaryUnary):
    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request)


class _AioUnaryStreamInterceptor(_AioUnaryStream):
    async def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request)


class _AioStreamUnaryInterceptor(_AioStreamUnary):
    async def intercept_stream_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request_iterator)


class _AioStreamStreamInterceptor(_AioStreamStream):
    async def intercept_stream_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request_iterator)


def async_client_interceptors() -> list[Any]:
    """``grpc.aio`` client interceptors, one for each call kind (unary and streaming),
    that send the current transaction's token as ``paxos-commit-txn`` metadata; calls
    made with no current transaction are left untouched. Pass them to a channel::

        grpc.aio.insecure_channel(address, interceptors=async_client_interceptors())

    (Add your own interceptors to the same list.)"""
    return [
        _AioUnaryUnaryInterceptor(),
        _AioUnaryStreamInterceptor(),
        _AioStreamUnaryInterceptor(),
        _AioStreamStreamInterceptor(),
    ]


class _SyncCallDetails(
    collections.namedtuple(
        "_SyncCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """Call details with our metadata added (sync grpc gives no public way to copy)."""


class ClientInterceptor(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """A synchronous ``grpc`` client interceptor (all four call kinds) that sends the
    current transaction's token as ``paxos-commit-txn`` metadata. Use it with
    ``grpc.intercept_channel(channel, ClientInterceptor())``."""

    @staticmethod
    def _details(details: Any) -> Any:
        ctx = current()
        if ctx is None:
            return details
        return _SyncCallDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, ctx.token()),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the token to a unary-unary call."""
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """Add the token to a unary-stream call."""
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Add the token to a stream-unary call."""
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Add the token to a stream-stream call."""
        return continuation(self._details(client_call_details), request_iterator)


# ------------------------------------------------------------------------ gRPC server


class _Malformed(Exception):
    pass


def _incoming(metadata: Any) -> TransactionContext | None:
    """The transaction named in a call's metadata; raises :class:`_Malformed`."""
    values = {v for k, v in (metadata or ()) if k == METADATA_KEY}
    if not values:
        return None
    if len(values) > 1:
        raise _Malformed(f"{METADATA_KEY} metadata given {len(values)} different values")
    (value,) = values
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        return TransactionContext.parse(value)
    except ValueError as exc:
        raise _Malformed(f"malformed {METADATA_KEY} metadata: {exc}") from None


def _handler_factory(handler: Any) -> Callable[..., Any]:
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler
    return grpc.unary_unary_rpc_method_handler


def _behavior(handler: Any) -> Callable[..., Any]:
    return (  # type: ignore[no-any-return]
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


def _rebuild(handler: Any, behavior: Callable[..., Any]) -> Any:
    return _handler_factory(handler)(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _step_sync(iterator: Iterator[Any], ctx: TransactionContext | None) -> Iterator[Any]:
    # Each step is run with the transaction current and reset at once: successive steps
    # may run on different threads (grpc.aio runs sync handlers in an executor).
    while True:
        with use(ctx):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


async def _step_async(iterator: AsyncIterator[Any], ctx: TransactionContext | None) -> AsyncIterator[Any]:
    while True:
        with use(ctx):
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
        yield item


def _within(behavior: Callable[..., Any], ctx: TransactionContext | None) -> Callable[..., Any]:
    """``behavior`` run with ``ctx`` current, of the same kind (coroutine function, async
    generator function or plain function) since grpc.aio dispatches on the kind."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            async for item in _step_async(behavior(request, context), ctx):
                yield item

        return stream
    if inspect.iscoroutinefunction(behavior):

        async def coroutine(request: Any, context: Any) -> Any:
            with use(ctx):
                return await behavior(request, context)

        return coroutine

    def plain(request: Any, context: Any) -> Any:
        with use(ctx):
            result = behavior(request, context)
        if isinstance(result, Iterator):
            return _step_sync(result, ctx)
        return result

    return plain


class AsyncServerInterceptor(_AioServer):
    """A ``grpc.aio`` server interceptor: a call that carries ``paxos-commit-txn``
    metadata runs its handler with that transaction current (:func:`current`); a call
    without it runs with no transaction current. A malformed token is answered with
    ``INVALID_ARGUMENT`` naming the problem, and the handler is not run. Pass it in
    ``grpc.aio.server(interceptors=[...])``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """Wrap the handler found by ``continuation`` (see the class docstring)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        try:
            ctx = _incoming(handler_call_details.invocation_metadata)
        except _Malformed as exc:
            problem = str(exc)

            async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

            return _rebuild(handler, refuse)
        return _rebuild(handler, _within(_behavior(handler), ctx))


class ServerInterceptor(_Server):
    """A synchronous ``grpc`` server interceptor: a call that carries
    ``paxos-commit-txn`` metadata runs its handler with that transaction current
    (:func:`current`); a call without it runs with no transaction current. A malformed
    token is answered with ``INVALID_ARGUMENT`` naming the problem, and the handler is
    not run. Pass it in ``grpc.server(executor, interceptors=[...])``."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        """Wrap the handler found by ``continuation`` (see the class docstring)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        try:
            ctx = _incoming(handler_call_details.invocation_metadata)
        except _Malformed as exc:
            problem = str(exc)

            def refuse(request: Any, context: grpc.ServicerContext) -> None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

            return _rebuild(handler, refuse)
        return _rebuild(handler, _within(_behavior(handler), ctx))
