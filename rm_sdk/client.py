"""The application API: begin a transaction, hand its context to services, commit."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from rm_sdk import _context, otel
from rm_sdk._addresses import check_addresses, check_seconds
from rm_sdk._channels import TRANSIENT, Channels
from rm_sdk._streams import unwrap
from rm_sdk.core.messages import AbortCause, Decision
from rm_sdk.protocol import Outcome, validate_id
from rm_sdk.wire import decision_from_pb, outcome_from_pb, pb

__all__ = [
    "Cancelled",
    "Client",
    "CoordinatorFailed",
    "OutcomeUnknown",
    "RMRefused",
    "Transaction",
    "TransactionAborted",
    "TransactionContext",
    "TransactionNotFound",
    "TransactionTimeout",
    "VoteTimeout",
]

log = logging.getLogger("paxos_commit.client")

#: The coordinator refuses abort reasons longer than this (in UTF-8 bytes).
_MAX_REASON_BYTES = 1024


class TransactionAborted(Exception):
    """The transaction aborted; ``reason`` says why (which RM refused, a timeout, ...).

    :meth:`Transaction.commit` raises a subclass that names the cause when the
    coordinator's reason tells it: :class:`RMRefused`, :class:`VoteTimeout`,
    :class:`TransactionTimeout`, :class:`CoordinatorFailed` or :class:`Cancelled`. This
    base class itself is raised when the cause is not known, e.g. when the outcome was
    learned from a replica that did not decide it."""

    def __init__(self, txn_id: str, reason: str) -> None:
        super().__init__(f"transaction {txn_id} aborted: {reason}")
        self.txn_id = txn_id
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.txn_id, self.reason))

    @staticmethod
    def from_decision(txn_id: str, d: Decision) -> TransactionAborted:
        """The exception for an abort whose cause the coordinator named on the wire."""
        reason = d.reason or "aborted"
        if d.cause is AbortCause.RM_REFUSED:
            return RMRefused(txn_id, reason, d.rm_id)
        if d.cause is AbortCause.VOTE_TIMEOUT:
            return VoteTimeout(txn_id, reason, d.rm_id)
        if d.cause is AbortCause.TXN_TIMEOUT:
            return TransactionTimeout(txn_id, reason)
        if d.cause is AbortCause.COORDINATOR_FAILED:
            return CoordinatorFailed(txn_id, reason)
        if d.cause is AbortCause.APPLICATION:
            return Cancelled(txn_id, reason)
        if d.cause is None:  # a server that does not name causes: read its text
            return TransactionAborted.from_reason(txn_id, d.reason)
        return TransactionAborted(txn_id, reason)

    @staticmethod
    def from_reason(txn_id: str, reason: str) -> TransactionAborted:
        """The exception for an abort the coordinator explained with ``reason``: the
        subclass that names its cause, or this base class if the reason does not say."""
        m = _RM_REASON.fullmatch(reason)
        if m is not None:
            cls = RMRefused if m["what"] == "voted to abort" else VoteTimeout
            return cls(txn_id, reason, m["rm"])
        if reason == "transaction timeout":
            return TransactionTimeout(txn_id, reason)
        if reason.endswith("failed before registration closed"):
            return CoordinatorFailed(txn_id, reason)
        if reason in _UNATTRIBUTED:
            return TransactionAborted(txn_id, reason or "aborted")
        return Cancelled(txn_id, reason)


class RMRefused(TransactionAborted):
    """A resource manager voted to abort (``rm_id`` names it), e.g. a failed check or
    constraint at prepare time."""

    def __init__(self, txn_id: str, reason: str, rm_id: str) -> None:
        super().__init__(txn_id, reason)
        self.rm_id = rm_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.txn_id, self.reason, self.rm_id))


class VoteTimeout(TransactionAborted):
    """A resource manager (``rm_id``) did not vote within the coordinator's vote timeout,
    so a recovery ballot decided "aborted" for it."""

    def __init__(self, txn_id: str, reason: str, rm_id: str) -> None:
        super().__init__(txn_id, reason)
        self.rm_id = rm_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.txn_id, self.reason, self.rm_id))


class TransactionTimeout(TransactionAborted):
    """The owning coordinator aborted the transaction because commit was not asked for
    within its transaction timeout."""


class CoordinatorFailed(TransactionAborted):
    """The owning coordinator failed before registration closed; another replica
    aborted the transaction."""


class Cancelled(TransactionAborted):
    """The transaction was aborted through :meth:`Transaction.abort` (by this application
    or another holder of its id); ``reason`` is the text given to the abort."""


# The coordinator renders RM ids with repr(); ids are [A-Za-z0-9._:-] so no escapes.
# An RM that refused early (Participant.refuse) appends its own text after ": ".
_RM_REASON = re.compile(
    r"resource manager '(?P<rm>[^']*)' (?P<what>voted to abort|did not vote in time)(?:: .*)?", re.DOTALL
)
# Reasons of the coordinator's that do not say who caused the abort.
_UNATTRIBUTED = frozenset(
    {
        "",
        "aborted",
        "recorded at an acceptor",
        "registration ended without a participant set",
        "aborted before commit (by the application or the transaction timeout)",
    }
)


def _clip(text: str, limit: int = _MAX_REASON_BYTES) -> str:
    return text.encode()[:limit].decode(errors="ignore")


class TransactionNotFound(LookupError):
    """Every coordinator asked said it never heard of the transaction: no coordinator
    owns it and no acceptor holds anything of it (raised by :meth:`Client.outcome` with
    ``raise_not_found=True``). A transaction that is merely undecided is PENDING instead."""

    def __init__(self, txn_id: str) -> None:
        super().__init__(f"no coordinator or acceptor knows transaction {txn_id}")
        self.txn_id = txn_id


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
        """The context a :meth:`token` stands for; raises :class:`ValueError` (naming
        the problem) if ``token`` is malformed."""
        txn_id, sep, coordinator = token.partition("@")
        if not sep or not coordinator:
            raise ValueError(f"not a transaction token: {token[:80]!r}")
        return TransactionContext(validate_id("transaction id", txn_id), coordinator)


class Client:
    """Talks to coordinator replicas. Use as ``async with Client([...]) as client``.

    ``rpc_timeout`` bounds each request; ``outcome_timeout`` bounds how long
    :meth:`Transaction.commit` waits for the decision."""

    def __init__(
        self,
        coordinators: Sequence[str],
        *,
        rpc_timeout: float = 10.0,
        outcome_timeout: float = 120.0,
        channels: Channels | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.coordinators = check_addresses("coordinator", coordinators)
        self.rpc_timeout = check_seconds("rpc_timeout", rpc_timeout)
        self.outcome_timeout = check_seconds("outcome_timeout", outcome_timeout)
        # credentials: mTLS (rm_sdk.tls.credentials, an app/<name> certificate); None: plain text.
        self._channels = channels or Channels(credentials)
        self._own_channels = channels is None
        if self._channels.coordinator_name is None:
            self._channels.use_coordinator_name(self.coordinators)
        self._next = 0
        #: Each configured address's own address, as its Begin reply gave it (a Service
        #: name resolves to one replica per stream): where a Begin needs no round trip.
        self._owners: dict[str, str] = {}
        otel.configure("paxos-commit-client")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels this client opened."""
        if self._own_channels:
            await self._channels.close()

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Begin a transaction for an ``async with`` block::

            async with client.transaction() as txn:
                await bank_a.debit(txn.context, "alice", 30)
                ...

        While the block runs the transaction is current (:func:`rm_sdk.propagation.current`),
        so calls through the propagation interceptors carry it. Leaving the block normally
        commits: a :class:`TransactionAborted` subclass is raised if it aborts instead. An
        exception in the block aborts the transaction (the reason is the exception's
        ``repr``) and propagates. If the block already called ``txn.commit()`` or
        ``txn.abort()``, leaving it does nothing more."""
        return _TransactionBlock(self)

    async def begin(self) -> Transaction:
        """Start a transaction at the next coordinator in turn (the first that answers).

        No round trip once this client knows that coordinator's own address (from an
        earlier Begin): the Begin is sent on its stream and not waited for. The client's
        commit or abort follows it on that stream, and an RM's join that overtakes it
        waits there for it. An error of that Begin is raised by :meth:`Transaction.commit`."""
        last: Exception | None = None
        txn_id = uuid.uuid4().hex
        start = self._next
        self._next += 1
        root = otel.start_root(txn_id) if otel.on else None
        span = otel.start("paxos.begin", txn_id) if root is not None else None
        first = self.coordinators[start % len(self.coordinators)]
        owner = self._owners.get(first)
        if owner is not None:
            link = self._channels.coordinator(owner)
            if link.connected:
                begun = link.submit(
                    pb.CoordinatorRequest(begin=pb.BeginRequest(txn_id=txn_id)), self.rpc_timeout
                )
                otel.end(span, {"paxos.coordinator": owner})
                return Transaction(self, TransactionContext(txn_id, owner), root, begun=(first, begun))
        for k in range(len(self.coordinators)):
            address = self.coordinators[(start + k) % len(self.coordinators)]
            try:
                # The id is made here (nothing to learn from the reply but the owner).
                r = await self._channels.coordinator(address).Begin(
                    pb.BeginRequest(txn_id=txn_id), timeout=self.rpc_timeout
                )
                self._owners[address] = r.coordinator
                otel.end(span, {"paxos.coordinator": r.coordinator})
                return Transaction(self, TransactionContext(r.txn_id, r.coordinator), root)
            except grpc.aio.AioRpcError as exc:
                self._owners.pop(address, None)
                if exc.code() not in TRANSIENT:
                    otel.end(span, error=exc.code().name)
                    otel.end(root, error=exc.code().name)
                    raise
                last = exc
        otel.end(span, error="no coordinator answered")
        otel.end(root, error="no coordinator answered")
        raise ConnectionError(f"no coordinator answered: {last}")

    async def outcome(
        self, txn_id: str, wait: float = 5.0, prefer: str | None = None, *, raise_not_found: bool = False
    ) -> tuple[Outcome, str]:
        """Ask coordinators (``prefer`` first) until one knows the outcome or ``wait``
        seconds pass; returns (PENDING, "") if still undecided.

        A coordinator that never heard of ``txn_id`` answers NOT_FOUND. By default that
        counts as "not yet" (a replica that is not the owner may not know it before
        registration closes). With ``raise_not_found=True``, once every coordinator in
        turn has said NOT_FOUND, :class:`TransactionNotFound` is raised at once, without
        waiting out ``wait``."""
        deadline = time.monotonic() + wait
        order = ([prefer] if prefer else []) + [c for c in self.coordinators if c != prefer]
        attempt = 0
        not_found: set[str] = set()
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
                not_found.discard(address)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT and exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    not_found.add(address)
                    if raise_not_found and not_found >= set(order):
                        raise TransactionNotFound(txn_id) from exc
                else:
                    not_found.discard(address)
                await asyncio.sleep(min(0.2 * attempt, 1.0))
            if time.monotonic() >= deadline:
                return Outcome.PENDING, ""


class _TransactionBlock(AbstractAsyncContextManager["Transaction"]):
    """What :meth:`Client.transaction` returns."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._txn: Transaction | None = None
        self._token: contextvars.Token[TransactionContext | None] | None = None

    async def __aenter__(self) -> Transaction:
        self._txn = await self._client.begin()
        self._token = _context._current.set(self._txn.context)
        return self._txn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        txn, token = self._txn, self._token
        assert txn is not None and token is not None, "__aexit__ without __aenter__"
        _context._current.reset(token)
        if txn.finished:
            return
        if exc is None:
            await txn.commit()
            return
        await txn._abort_after(exc)


class Transaction:
    """One transaction, seen from the application that began it: pass :attr:`context`
    to the services that do its work, then :meth:`commit` (or :meth:`abort`)."""

    def __init__(
        self,
        client: Client,
        context: TransactionContext,
        span: Any = None,
        *,
        begun: tuple[str, asyncio.Future[pb.CoordinatorReply]] | None = None,
    ) -> None:
        self.client = client
        self.context = context
        #: A Begin not waited for (the configured address it stands for, its reply).
        self._begun = begun
        #: Joins of this process's RMs not waited for by their work: (rm id, join).
        self._joins: list[tuple[str, asyncio.Future[None]]] = []
        self._closing = False
        _context._local[context.txn_id] = self
        #: The transaction's root span (OpenTelemetry), ended with its outcome.
        self._span = span
        self._finished = False
        self._applied = False
        self._reason = ""
        self._aborted: TransactionAborted | None = None

    @property
    def txn_id(self) -> str:
        """The transaction's id."""
        return self.context.txn_id

    def defer_join(self, rm_id: str, join: asyncio.Future[None]) -> bool:
        """Let an RM of this process go on with its work while its join is on its way:
        :meth:`commit` waits for ``join`` before registration closes, and aborts the
        transaction if it failed. False once commit or abort began (wait for it then)."""
        if self._closing:
            return False
        self._joins.append((rm_id, join))
        return True

    async def _joins_done(self) -> tuple[str, str] | None:
        """Wait for the deferred joins; if one failed, its RM and the reason to abort."""
        joins, self._joins = self._joins, []
        if joins:
            await asyncio.wait([join for _, join in joins])
        for rm_id, join in joins:
            exc = "cancelled" if join.cancelled() else join.exception()
            if exc is not None:
                return rm_id, f"resource manager {rm_id!r} could not join: {exc!r}"
        return None

    @property
    def reason(self) -> str:
        """Why the transaction aborted, as the coordinator recorded it ("" until it
        finished, or if it committed). Kept after :meth:`abort`, which does not raise."""
        return self._reason

    @property
    def aborted(self) -> TransactionAborted | None:
        """The :class:`TransactionAborted` (subclass naming the cause) for an abort this
        transaction learned, by :meth:`commit` or :meth:`abort`; None otherwise."""
        return self._aborted

    @property
    def finished(self) -> bool:
        """True once :meth:`commit` or :meth:`abort` has learned the outcome."""
        return self._finished

    async def commit(self, *, wait_applied: bool = False) -> Outcome:
        """Close registration and decide. Returns COMMITTED or raises
        :class:`TransactionAborted`; if the owning coordinator dies meanwhile, the
        outcome is learned from another replica.

        ``wait_applied``: return only once every RM of the transaction acknowledged it
        applied the outcome (e.g. committed its database transaction), so a closed loop
        does not run ahead of its RMs. :attr:`applied` then says whether they all did
        before the owner's acknowledgement wait (2 s by default) ended."""
        return await self._finish(abort_reason=None, wait_applied=wait_applied)

    @property
    def applied(self) -> bool:
        """After ``commit(wait_applied=True)``: every RM acknowledged applying the outcome."""
        return self._applied

    async def abort(self, reason: str = "aborted by the application") -> Outcome:
        """Abort; returns ABORTED (or COMMITTED if the commit had already been decided).
        ``reason`` is kept with the outcome (clipped to 1024 bytes); the reason the
        coordinator recorded (``reason``, or an earlier cause such as an RM's refusal) is
        then :attr:`reason`, and :attr:`aborted` the exception :meth:`commit` would raise."""
        try:
            return await self._finish(abort_reason=_clip(reason) or "aborted by the application")
        except TransactionAborted:
            return Outcome.ABORTED

    async def _abort_after(self, exc: BaseException) -> None:
        """Abort because the application's block raised ``exc``, which the caller goes
        on to raise: a failure to abort must not hide it (the coordinator's transaction
        timeout aborts the transaction anyway), so it is only logged."""
        try:
            await asyncio.wait_for(self.abort(reason=repr(exc)), self.client.rpc_timeout)
        except Exception as abort_exc:
            log.warning("transaction %s: abort after %r failed: %r", self.txn_id, exc, abort_exc)

    async def _finish(self, abort_reason: str | None, wait_applied: bool = False) -> Outcome:
        span = None
        if self._span is not None:
            span = otel.start("paxos.commit" if abort_reason is None else "paxos.abort", self.txn_id)
        try:
            outcome = await self._finish_call(abort_reason, wait_applied)
        except TransactionAborted as exc:
            d = _span_decision(exc)
            otel.end(span, d)
            otel.end(self._span, d)
            self._span = None
            raise
        except BaseException as exc:
            otel.end(span, error=repr(exc))
            raise
        otel.end(span, {"paxos.outcome": outcome.value})
        otel.end(self._span, {"paxos.outcome": outcome.value})
        self._span = None
        return outcome

    async def _check_begun(self) -> grpc.aio.AioRpcError | None:
        """The Begin that was not waited for: raise its refusal; return the error of one
        that may not have arrived (the stream broke), None if it was answered."""
        if self._begun is None:
            return None
        configured, begun = self._begun
        self._begun = None
        try:
            unwrap(await begun)
        except grpc.aio.AioRpcError as exc:
            # Ask for this replica's address again (by a Begin that is waited for).
            if self.client._owners.get(configured) == self.context.coordinator:
                del self.client._owners[configured]
            if exc.code() not in TRANSIENT:
                raise
            return exc
        return None

    def _withheld(self, reason: str, rm_id: str) -> TransactionAborted:
        """The abort of a commit not sent: an RM that could not join, or a lost Begin."""
        if rm_id:
            return RMRefused(self.txn_id, reason, rm_id)
        return CoordinatorFailed(self.txn_id, reason)

    async def _finish_call(self, abort_reason: str | None, wait_applied: bool = False) -> Outcome:
        self._closing = True
        _context._local.pop(self.txn_id, None)
        begin_error = await self._check_begun()
        join_failed = await self._joins_done()
        #: Why commit was asked for and not sent: the transaction cannot commit then
        #: (only this client's Commit closes its registration), so it is aborted.
        withheld = None
        failed_rm = ""
        if abort_reason is None:
            if begin_error is not None:
                withheld = (
                    f"the Begin may not have reached {self.context.coordinator}: {begin_error.details()}"
                )
            elif join_failed is not None:
                failed_rm, withheld = join_failed  # registration must not close without it
            abort_reason = withheld
        stub = self.client._channels.coordinator(self.context.coordinator)
        try:
            r: pb.CommitReply | pb.AbortReply
            if abort_reason is None:
                r = await stub.Commit(
                    pb.CommitRequest(txn_id=self.txn_id, wait_applied=wait_applied),
                    timeout=self.client.outcome_timeout,
                )
                self._applied = r.applied
            else:
                r = await stub.Abort(
                    pb.AbortRequest(txn_id=self.txn_id, reason=abort_reason),
                    timeout=self.client.rpc_timeout if withheld else self.client.outcome_timeout,
                )
            decision = decision_from_pb(r.outcome, r.reason, r.cause, r.rm_id)
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND: the owner restarted and forgot us; otherwise it died or is cut off.
            if exc.code() not in TRANSIENT and exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            if withheld is not None:
                # No Commit was sent: the owner's recovery or its timeout aborts it, or no
                # replica ever had it. Nothing to wait for.
                self._finished = True
                self._reason = f"not committed: {withheld}; the abort could not be delivered: {exc.details()}"
                self._aborted = self._withheld(self._reason, failed_rm)
                raise self._aborted from exc
            outcome, reason = await self.client.outcome(self.txn_id, wait=self.client.outcome_timeout)
            if outcome is Outcome.PENDING:
                raise OutcomeUnknown(
                    f"transaction {self.txn_id}: no coordinator knows the outcome yet"
                ) from exc
            decision = Decision(outcome, None, "", reason)
        self._finished = True
        if decision.outcome is Outcome.ABORTED:
            self._reason = decision.reason
            if withheld is not None:
                self._aborted = self._withheld(decision.reason, failed_rm)
            else:
                self._aborted = TransactionAborted.from_decision(self.txn_id, decision)
            raise self._aborted
        return decision.outcome


def _span_decision(exc: TransactionAborted) -> dict[str, Any]:
    causes = {
        RMRefused: "rm_refused",
        VoteTimeout: "vote_timeout",
        TransactionTimeout: "txn_timeout",
        CoordinatorFailed: "coordinator_failed",
        Cancelled: "application",
    }
    cause = next((c for k, c in causes.items() if isinstance(exc, k)), "unknown")
    return otel.decision_attributes("aborted", cause, getattr(exc, "rm_id", ""), exc.reason)
