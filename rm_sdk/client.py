"""The application API: begin a transaction, hand its context to services, commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc

from rm_sdk._channels import TRANSIENT, Channels
from rm_sdk.protocol import Outcome, validate_id
from rm_sdk.wire import outcome_from_pb, pb

__all__ = [
    "Client",
    "OutcomeUnknown",
    "Transaction",
    "TransactionAborted",
    "TransactionContext",
]


class TransactionAborted(Exception):
    """The transaction aborted; ``reason`` says why (which RM refused, a timeout, ...)."""

    def __init__(self, txn_id: str, reason: str) -> None:
        super().__init__(f"transaction {txn_id} aborted: {reason}")
        self.txn_id = txn_id
        self.reason = reason


class OutcomeUnknown(Exception):
    """No coordinator could say how the transaction ended within the time allowed. The
    outcome is decided (or will be) all the same; ask again with :meth:`Client.outcome`."""


@dataclass(frozen=True)
class TransactionContext:
    """What services need to join a transaction: its id and its owning coordinator."""

    txn_id: str
    coordinator: str

    def token(self) -> str:
        """A string form for headers and metadata: ``txn_id@host:port``."""
        return f"{self.txn_id}@{self.coordinator}"

    @staticmethod
    def parse(token: str) -> TransactionContext:
        txn_id, sep, coordinator = token.partition("@")
        if not sep or not coordinator:
            raise ValueError(f"not a transaction token: {token[:80]!r}")
        return TransactionContext(validate_id("transaction id", txn_id), coordinator)


class Client:
    """Talks to coordinator replicas. Use as ``async with Client([...]) as client``."""

    def __init__(
        self,
        coordinators: Sequence[str],
        *,
        rpc_timeout: float = 10.0,
        outcome_timeout: float = 120.0,
        channels: Channels | None = None,
    ) -> None:
        if not coordinators:
            raise ValueError("need at least one coordinator address")
        self.coordinators = list(coordinators)
        self.rpc_timeout = rpc_timeout
        self.outcome_timeout = outcome_timeout
        self._channels = channels or Channels()
        self._own_channels = channels is None
        self._next = 0

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channels:
            await self._channels.close()

    async def begin(self) -> Transaction:
        """Start a transaction at the first coordinator that answers."""
        last: Exception | None = None
        start = self._next
        self._next += 1
        for k in range(len(self.coordinators)):
            address = self.coordinators[(start + k) % len(self.coordinators)]
            try:
                r = await self._channels.coordinator(address).Begin(
                    pb.BeginRequest(), timeout=self.rpc_timeout
                )
                return Transaction(self, TransactionContext(r.txn_id, r.coordinator))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT:
                    raise
                last = exc
        raise ConnectionError(f"no coordinator answered: {last}")

    async def outcome(self, txn_id: str, wait: float = 5.0, prefer: str | None = None) -> tuple[Outcome, str]:
        """Ask coordinators (``prefer`` first) until one knows the outcome or ``wait``
        seconds pass; returns (PENDING, "") if still undecided."""
        deadline = time.monotonic() + wait
        order = ([prefer] if prefer else []) + [c for c in self.coordinators if c != prefer]
        attempt = 0
        while True:
            address = order[attempt % len(order)]
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                r = await self._channels.coordinator(address).GetOutcome(
                    pb.GetOutcomeRequest(txn_id=txn_id, wait_ms=int(max(0.0, min(remaining, 10.0)) * 1000)),
                    timeout=max(remaining, 0.0) + self.rpc_timeout,
                )
                o = outcome_from_pb(r.outcome)
                if o is not Outcome.PENDING:
                    return o, r.reason
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT and exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(min(0.2 * attempt, 1.0))
            if time.monotonic() >= deadline:
                return Outcome.PENDING, ""


class Transaction:
    """One transaction, seen from the application that began it.

    ``async with client.transaction() ...`` is not offered here on purpose: commit is an
    explicit step whose result the caller must look at (it may abort)."""

    def __init__(self, client: Client, context: TransactionContext) -> None:
        self.client = client
        self.context = context

    @property
    def txn_id(self) -> str:
        return self.context.txn_id

    async def commit(self) -> Outcome:
        """Close registration and decide. Returns COMMITTED or raises
        :class:`TransactionAborted`; if the owning coordinator dies meanwhile, the
        outcome is learned from another replica."""
        return await self._finish(abort_reason=None)

    async def abort(self, reason: str = "aborted by the application") -> Outcome:
        """Abort; returns ABORTED (or COMMITTED if the commit had already been decided)."""
        try:
            return await self._finish(abort_reason=reason)
        except TransactionAborted:
            return Outcome.ABORTED

    async def _finish(self, abort_reason: str | None) -> Outcome:
        stub = self.client._channels.coordinator(self.context.coordinator)
        try:
            r: pb.CommitReply | pb.AbortReply
            if abort_reason is None:
                r = await stub.Commit(
                    pb.CommitRequest(txn_id=self.txn_id), timeout=self.client.outcome_timeout
                )
            else:
                r = await stub.Abort(
                    pb.AbortRequest(txn_id=self.txn_id, reason=abort_reason),
                    timeout=self.client.outcome_timeout,
                )
            outcome, reason = outcome_from_pb(r.outcome), r.reason
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND: the owner restarted and forgot us; otherwise it died or is cut off.
            if exc.code() not in TRANSIENT and exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            outcome, reason = await self.client.outcome(self.txn_id, wait=self.client.outcome_timeout)
            if outcome is Outcome.PENDING:
                raise OutcomeUnknown(
                    f"transaction {self.txn_id}: no coordinator knows the outcome yet"
                ) from exc
        if outcome is Outcome.ABORTED:
            raise TransactionAborted(self.txn_id, reason or "aborted")
        return outcome
