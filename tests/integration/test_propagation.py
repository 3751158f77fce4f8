"""Context propagation: an application calls services over gRPC (and HTTP) and the
services join the transaction it made current, with no context passed by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Ledger, RMState, TransactionContext
from rm_sdk.client import RMRefused
from rm_sdk.propagation import (
    HTTP_HEADER,
    METADATA_KEY,
    AsyncServerInterceptor,
    ClientInterceptor,
    ServerInterceptor,
    async_client_interceptors,
    current,
    extract,
    inject,
    use,
)

# A tiny "bank" service with raw bytes messages: "account:amount" in, b"ok" out.


def _parse(request: bytes) -> tuple[str, int]:
    account, _, amount = request.decode().partition(":")
    return account, int(amount)


def _token() -> bytes:
    ctx = current()
    return ctx.token().encode() if ctx else b""


def _bank_handler(ledger: Ledger) -> grpc.GenericRpcHandler:
    async def debit(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        ctx = current()
        if ctx is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no transaction")
        account, amount = _parse(request)
        await ledger.debit(ctx, account, amount)  # joins the transaction the call carried
        return b"ok"

    async def credit(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        ctx = current()
        if ctx is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no transaction")
        account, amount = _parse(request)
        await ledger.credit(ctx, account, amount)
        return b"ok"

    async def whoami(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return _token()

    async def whoami_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(2):
            yield _token()

    return grpc.method_handlers_generic_handler(
        "bank.Bank",
        {
            "Debit": grpc.unary_unary_rpc_method_handler(debit),
            "Credit": grpc.unary_unary_rpc_method_handler(credit),
            "Whoami": grpc.unary_unary_rpc_method_handler(whoami),
            "WhoamiStream": grpc.unary_stream_rpc_method_handler(whoami_stream),
        },
    )


async def _start_bank(ledger: Ledger) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=[AsyncServerInterceptor()])
    server.add_generic_rpc_handlers((_bank_handler(ledger),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_grpc_services_join_the_propagated_transaction(cluster: LocalCluster, tmp_path: Path) -> None:
    coords = cluster.coordinator_addresses
    a = Ledger(tmp_path / "a.db", "bank-a", coords)
    b = Ledger(tmp_path / "b.db", "bank-b", coords)
    a.open_account("alice", 100)
    b.open_account("bob", 0)
    server_a, addr_a = await _start_bank(a)
    server_b, addr_b = await _start_bank(b)
    interceptors = async_client_interceptors()
    ch_a = grpc.aio.insecure_channel(addr_a, interceptors=interceptors)
    ch_b = grpc.aio.insecure_channel(addr_b, interceptors=interceptors)
    debit_a = ch_a.unary_unary("/bank.Bank/Debit")
    credit_b = ch_b.unary_unary("/bank.Bank/Credit")
    try:
        async with Client(coords) as client:
            # Commit: the services got the transaction from the metadata alone.
            async with client.transaction() as txn:
                assert current() == txn.context
                assert await debit_a(b"alice:30") == b"ok"
                assert await credit_b(b"bob:30") == b"ok"
            assert current() is None
            assert await a.participant.wait(txn.txn_id) is RMState.COMMITTED
            assert await b.participant.wait(txn.txn_id) is RMState.COMMITTED
            assert a.balances() == {"alice": 70} and b.balances() == {"bob": 30}

            # Refused at bank-a: leaving the block raises the typed abort naming it.
            with pytest.raises(RMRefused) as info:
                async with client.transaction() as txn:
                    await debit_a(b"alice:500")
                    await credit_b(b"bob:500")
            assert info.value.rm_id == "bank-a"
            assert await b.participant.wait(txn.txn_id) is RMState.ABORTED
            assert a.balances() == {"alice": 70} and b.balances() == {"bob": 30}

            # An exception in the block aborts the transaction and propagates.
            with pytest.raises(RuntimeError, match="bank app failed"):
                async with client.transaction() as txn:
                    await debit_a(b"alice:5")
                    raise RuntimeError("bank app failed")
            assert await a.participant.wait(txn.txn_id) is RMState.ABORTED
            assert a.balances() == {"alice": 70}

        # Outside a transaction the call carries nothing and the handler sees none.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await debit_a(b"alice:1")
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION

        # A malformed token never reaches the handler.
        for bad in ("no-at-sign", "bad id!@127.0.0.1:1", "t1@"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch_a.unary_unary("/bank.Bank/Debit")(b"alice:1", metadata=((METADATA_KEY, bad),))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert METADATA_KEY in (err.value.details() or "")
        assert a.balances() == {"alice": 70}
    finally:
        await ch_a.close()
        await ch_b.close()
        await server_a.stop(None)
        await server_b.stop(None)
        await a.close()
        await b.close()


async def test_async_interceptors_carry_the_context_on_streams_too(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "x.db", "bank-x", ["127.0.0.1:1"])  # never reached
    server, address = await _start_bank(ledger)
    ch = grpc.aio.insecure_channel(address, interceptors=async_client_interceptors())
    try:
        ctx = TransactionContext("t-stream", "127.0.0.1:7800")
        whoami, stream = ch.unary_unary("/bank.Bank/Whoami"), ch.unary_stream("/bank.Bank/WhoamiStream")
        assert await whoami(b"") == b""
        with use(ctx):
            assert await whoami(b"") == ctx.token().encode()
            assert [r async for r in stream(b"")] == [ctx.token().encode()] * 2
            # A token the caller sets explicitly wins over the current one.
            other = TransactionContext("t-other", "127.0.0.1:7801")
            assert await whoami(b"", metadata=((METADATA_KEY, other.token()),)) == other.token().encode()
        assert [r async for r in stream(b"")] == [b"", b""]
    finally:
        await ch.close()
        await server.stop(None)
        await ledger.close()


def test_sync_interceptors_carry_the_context() -> None:
    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        return _token()

    def whoami_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield _token()
        yield _token()

    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ServerInterceptor()])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bank.Bank",
                {
                    "Whoami": grpc.unary_unary_rpc_method_handler(whoami),
                    "WhoamiStream": grpc.unary_stream_rpc_method_handler(whoami_stream),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    raw = grpc.insecure_channel(f"127.0.0.1:{port}")
    ch = grpc.intercept_channel(raw, ClientInterceptor())
    try:
        ctx = TransactionContext("t-sync", "127.0.0.1:7800")
        call, stream = ch.unary_unary("/bank.Bank/Whoami"), ch.unary_stream("/bank.Bank/WhoamiStream")
        assert call(b"", timeout=5) == b""
        with use(ctx):
            assert call(b"", timeout=5) == ctx.token().encode()
            assert list(stream(b"", timeout=5)) == [ctx.token().encode()] * 2
        assert list(stream(b"", timeout=5)) == [b"", b""]
        with pytest.raises(grpc.RpcError) as err:
            raw.unary_unary("/bank.Bank/Whoami")(b"", timeout=5, metadata=((METADATA_KEY, "junk"),))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "not a transaction token" in err.value.details()  # type: ignore[attr-defined]
    finally:
        raw.close()
        server.stop(None)


def test_http_headers_round_trip() -> None:
    ctx = TransactionContext("t-http", "10.0.0.7:7800")
    headers: dict[str, str] = {"Accept": "application/json"}
    inject(headers)  # nothing current: nothing added
    assert headers == {"Accept": "application/json"}
    with use(ctx):
        inject(headers)
    assert headers[HTTP_HEADER] == ctx.token()
    assert extract(headers) == ctx
    # Header names are case-insensitive (servers often lower-case them).
    assert extract({k.lower(): v for k, v in headers.items()}) == ctx
    assert extract({"Accept": "*/*"}) is None
    with pytest.raises(ValueError, match="not a transaction token"):
        extract({HTTP_HEADER: "garbage"})
    other = TransactionContext("t-explicit", "10.0.0.8:7800")
    inject(headers, other)
    assert extract(headers) == other
