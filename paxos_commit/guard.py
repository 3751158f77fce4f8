"""Bad bytes never reach a handler: request decoding that answers INVALID_ARGUMENT.

gRPC's generated handlers decode with ``Message.FromString``; a request that does not
decode (e.g. invalid UTF-8 in a string field) makes gRPC log an ERROR with a traceback and
answer UNKNOWN, and the request never reaches the request metrics. :class:`InputGuard`
swaps every method's decoder for one that never raises:

- a unary request that does not decode is answered INVALID_ARGUMENT, counted, and logged
  as one WARNING line (at most one a second; the rest are counted);
- a stream batch that does not decode is decoded request by request: each request that
  does not decode becomes an :class:`Undecodable` carrying its ``seq`` (the service answers
  it alone, INVALID_ARGUMENT), the others run; a batch that cannot even be split into
  requests reads as an empty batch (answered with an empty one) with a warning, and the
  stream goes on. Only the decoder changes: the stream handler itself is not wrapped (the
  hot path gains nothing but the fast path's ``try``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError, Message

__all__ = ["DecodedBatch", "InputGuard", "Undecodable", "decode_batch"]

log = logging.getLogger("paxos_commit.input")


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request that did not decode; ``seq`` is its stream seq when it could be read."""

    error: str
    seq: int = 0


@dataclass(slots=True)
class DecodedBatch:
    """A batch decoded request by request (what :func:`decode_batch` returns when the fast
    path failed): the same ``requests`` / ``lamport`` as the batch message."""

    requests: list[Any] = field(default_factory=list)
    lamport: int = 0


class _Warn:
    """One WARNING line a second at most; the lines skipped are counted in the next."""

    def __init__(self) -> None:
        self.last = 0.0
        self.skipped = 0

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            self.skipped += 1
            return
        more = f" (and {self.skipped} more since the last report)" if self.skipped else ""
        self.last, self.skipped = now, 0
        log.warning("undecodable request refused: %s%s", what[:300], more)


_warn = _Warn()


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data) or shift > 63:
            raise DecodeError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """The top-level (field number, wire type, value) of a message's wire bytes."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        num, wt = key >> 3, key & 7
        v: Any
        if wt == 0:
            v, i = _varint(data, i)
        elif wt == 2:
            n, i = _varint(data, i)
            if i + n > len(data):
                raise DecodeError("truncated field")
            v, i = data[i : i + n], i + n
        elif wt == 1:
            v, i = data[i : i + 8], i + 8
        elif wt == 5:
            v, i = data[i : i + 4], i + 4
        else:
            raise DecodeError(f"wire type {wt} unsupported")
        if i > len(data):
            raise DecodeError("truncated field")
        out.append((num, wt, v))
    return out


def _seq_of(data: bytes) -> int:
    """Field 1 (``seq``) of a request's wire bytes, 0 if it cannot be read."""
    try:
        for num, wt, v in _fields(data):
            if num == 1 and wt == 0:
                return int(v)
    except DecodeError:
        pass
    return 0


def decode_batch(batch_cls: type[Message], item_cls: type[Message], data: bytes) -> Any:
    """A batch message (``repeated Item requests = 1; uint64 lamport = 2``): decoded at
    once if it can be, else request by request; an empty :class:`DecodedBatch` if not even
    that (nothing in it can be answered: no seq can be read)."""
    try:
        return batch_cls.FromString(data)
    except DecodeError:
        pass
    out = DecodedBatch()
    try:
        fields = _fields(data)
    except DecodeError as exc:
        _warn(f"{batch_cls.__name__}: {exc}")
        return out
    for num, wt, v in fields:
        if num == 1 and wt == 2:
            try:
                out.requests.append(item_cls.FromString(v))
            except DecodeError as exc:
                _warn(f"{item_cls.__name__} in a batch: {exc}")
                out.requests.append(Undecodable(str(exc) or "undecodable", _seq_of(v)))
        elif num == 2 and wt == 0:
            out.lamport = int(v)
    return out


def _tolerant(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # DecodeError, or a decoder's own error
            return Undecodable(str(exc) or type(exc).__name__)

    return tolerant


def _batch_item(decode: Callable[[bytes], Any]) -> tuple[type[Message], type[Message]] | None:
    """(batch class, request class) if ``decode`` is ``Batch.FromString`` of a batch message."""
    cls = getattr(decode, "__self__", None)
    if not isinstance(cls, type) or not issubclass(cls, Message):
        return None
    f = cls.DESCRIPTOR.fields_by_name.get("requests")
    if f is None or f.number != 1 or f.message_type is None:
        return None
    from google.protobuf import message_factory

    return cls, message_factory.GetMessageClass(f.message_type)  # type: ignore[arg-type]


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class InputGuard(_Interceptor):
    """Decoding that never raises (see the module doc). ``on_undecodable(method)`` counts
    each unary request refused; in-batch ones are counted by the service's stream metrics."""

    def __init__(self, on_undecodable: Callable[[str], None] | None = None) -> None:
        self.on_undecodable = on_undecodable

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        decode = handler.request_deserializer
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary
            on_bad = self.on_undecodable

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if isinstance(request, Undecodable):
                    if on_bad is not None:
                        on_bad(method)
                    _warn(f"{method}: {request.error}")
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"undecodable request: {request.error[:200]}"
                    )
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=_tolerant(decode), response_serializer=handler.response_serializer
            )
        if handler.stream_stream is not None:
            pair = _batch_item(decode)
            if pair is None:
                return handler
            batch_cls, item_cls = pair
            return grpc.stream_stream_rpc_method_handler(
                handler.stream_stream,
                request_deserializer=lambda data: decode_batch(batch_cls, item_cls, data),
                response_serializer=handler.response_serializer,
            )
        return handler
