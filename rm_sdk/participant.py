"""The resource-manager role: join, vote with a ballot-0 phase 2a, learn the outcome.

A :class:`ResourceManager` says how to prepare, commit and abort its own work; a
:class:`Participant` runs the protocol for it. Rules (DESIGN.md pitfalls 3 and 7): a
prepared vote is durable before it leaves; an RM may abort on its own only before it
prepared; a prepared RM learns the outcome and never guesses.

A prepared RM learns the outcome from the coordinators. When none has told it within
``recovery_timeout`` (all dead, or cut off), it asks the acceptors itself: it reads what
they accepted and, if that does not decide the transaction, runs higher ballots as a
leader of its own (:class:`rm_sdk.leader.Leader`, with a fresh leader id). The acceptors
are the ones learned at join, given to :meth:`Participant.resume`, or configured with
``acceptors=``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import grpc

from rm_sdk import tracing
from rm_sdk._channels import TRANSIENT, Channels
from rm_sdk.ballots import Tally
from rm_sdk.client import Client, TransactionContext
from rm_sdk.leader import AcceptorPeers, Leader
from rm_sdk.protocol import RM_BALLOT, Outcome, Vote, majority, validate_id
from rm_sdk.wire import ballot_to_pb, outcome_from_pb, pb, states_from_pb, value_to_pb

__all__ = ["Participant", "ResourceManager", "RMState"]

log = logging.getLogger("paxos_commit.rm")


class ResourceManager(Protocol):
    """What a participant's resource does at each step; each must be idempotent."""

    rm_id: str

    async def prepare(self, txn_id: str) -> Vote:
        """Make the work durable and ready to commit, then return PREPARED; or return
        ABORTED to refuse. PREPARED must survive a crash of this process."""
        ...

    async def commit(self, txn_id: str) -> None:
        """Apply the commit. Raise if it could not be applied now (it is retried with
        backoff); return normally if it is already applied."""
        ...

    async def abort(self, txn_id: str) -> None:
        """Undo the work (prepared or not). Raise to be retried; return normally if there
        is nothing (left) to undo."""
        ...


class RMState(enum.Enum):
    """Spec ``rmState``: working -> prepared -> committed | aborted; working -> aborted."""

    WORKING = "working"
    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"


class Participant:
    """Runs the RM side of Paxos Commit for one :class:`ResourceManager`.

    ``owner_timeout``: abort on our own if not asked to prepare and the owner is gone this
    long. ``recovery_timeout``: once prepared, ask the acceptors directly (running higher
    ballots if needed) when no coordinator told the outcome within this many seconds.
    ``acceptors``: the acceptor addresses, for recovering transactions whose acceptors
    were not recorded (e.g. a Postgres RM after a restart); learned at each join too."""

    def __init__(
        self,
        rm: ResourceManager,
        coordinators: Sequence[str],
        *,
        owner_timeout: float = 15.0,
        rpc_timeout: float = 5.0,
        recovery_timeout: float = 30.0,
        acceptors: Sequence[str] = (),
        channels: Channels | None = None,
    ) -> None:
        validate_id("rm id", rm.rm_id)
        self.rm = rm
        self.owner_timeout = owner_timeout
        self.rpc_timeout = rpc_timeout
        self.recovery_timeout = recovery_timeout
        #: Acceptor addresses: configured, or the latest learned at a join.
        self.acceptors: list[str] = list(acceptors)
        self._channels = channels or Channels()
        self._own_channels = channels is None
        self.client = Client(coordinators, channels=self._channels, rpc_timeout=rpc_timeout)
        self.states: dict[str, RMState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._joined: dict[str, tuple[TransactionContext, list[str]]] = {}
        #: Transactions past the point of an early abort: prepare began, or refused.
        self._voting: set[str] = set()

    async def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._own_channels:
            await self._channels.close()

    async def join(self, ctx: TransactionContext) -> None:
        """Join the transaction (once; later calls are no-ops). Returns when the
        registrar has the join, so the application may commit after this."""
        if ctx.txn_id in self.states:
            return
        r = await self._channels.coordinator(ctx.coordinator).Join(
            pb.JoinRequest(txn_id=ctx.txn_id, rm_id=self.rm.rm_id), timeout=self.rpc_timeout
        )
        if ctx.txn_id in self.states:
            return
        self._joined[ctx.txn_id] = (ctx, list(r.acceptors))
        if r.acceptors:
            self.acceptors = list(r.acceptors)
        self.states[ctx.txn_id] = RMState.WORKING
        self._tasks[ctx.txn_id] = asyncio.create_task(
            self._run(ctx, list(r.acceptors)), name=f"rm-{ctx.txn_id}"
        )

    def joined(self, txn_id: str) -> tuple[TransactionContext, list[str]] | None:
        """The context and acceptor addresses of a transaction this RM joined: what a
        resource manager records with its prepared state so :meth:`resume` can finish it."""
        return self._joined.get(txn_id)

    async def wait(self, txn_id: str) -> RMState:
        """Wait until this RM has applied the outcome of ``txn_id``."""
        task = self._tasks.get(txn_id)
        if task is not None:
            await asyncio.shield(task)
        return self.states.get(txn_id, RMState.WORKING)

    async def applied(self, txn_id: str) -> RMState:
        """Wait until this RM has applied the outcome of ``txn_id`` (its ``commit`` or
        ``abort`` returned) and return COMMITTED or ABORTED.

        :meth:`Transaction.commit` returns once the outcome is decided, which may be
        before an RM ran it: a caller that next reads this RM's data, or that runs
        transactions in a closed loop (each one holding a prepared transaction until it is
        applied), waits here. Raises :class:`LookupError` for a transaction this
        participant is not running and has not finished."""
        task = self._tasks.get(txn_id)
        if task is not None:
            await asyncio.wait({task})  # its failure or cancellation is not the caller's
        state = self.states.get(txn_id)
        if state in (RMState.COMMITTED, RMState.ABORTED):
            return state
        raise LookupError(f"rm {self.rm.rm_id} is not running transaction {txn_id}")

    async def refuse(self, txn_id: str, reason: str = "") -> bool:
        """Abort ``txn_id`` at once, before being asked to prepare (pitfall 3 allows it
        only before preparing): undo the work (``abort``), vote ``aborted`` at ballot 0,
        and ask the owning coordinator to abort with ``reason``, so the transaction
        aborts without waiting for its commit or a timeout, and ``commit()`` raises
        :class:`~rm_sdk.client.RMRefused` naming this RM (``reason`` in its text).

        Returns False, doing nothing, once this RM began to prepare (it then votes as its
        ``prepare`` says) or finished the transaction."""
        if self.states.get(txn_id) is not RMState.WORKING or txn_id in self._voting:
            return False
        self._voting.add(txn_id)  # from here on _run never prepares it
        joined = self._joined.get(txn_id)
        ctx, acceptors = joined if joined is not None else (None, list(self.acceptors))
        task = self._tasks.get(txn_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # it is waiting to be asked to prepare, or applying an abort
            await asyncio.gather(task, return_exceptions=True)
            # A task cancelled before it ran never ran its own cleanup.
            if self._tasks.get(txn_id) is task:
                del self._tasks[txn_id]
            self._voting.add(txn_id)  # the task's own cleanup dropped the mark
        try:
            await self._apply(txn_id, Outcome.ABORTED, learned=False)
            await self._send_vote(txn_id, list(acceptors), Vote.ABORTED)
            if ctx is not None:
                text = f"resource manager {self.rm.rm_id!r} voted to abort"
                if reason:
                    text = f"{text}: {reason}"
                try:
                    await self._channels.coordinator(ctx.coordinator).Abort(
                        pb.AbortRequest(txn_id=txn_id, reason=text.encode()[:1024].decode(errors="ignore")),
                        timeout=self.rpc_timeout,
                    )
                except grpc.aio.AioRpcError as exc:
                    # The ballot-0 vote alone decides the abort once commit is asked.
                    log.info("rm %s: could not tell the coordinator about %s: %s", self.rm.rm_id, txn_id, exc)
        finally:
            self._voting.discard(txn_id)
            self._joined.pop(txn_id, None)
        return True

    def active(self, txn_id: str) -> bool:
        """True while this participant is running ``txn_id`` (joined or resumed, not
        finished): a recovery scan must leave such a transaction alone."""
        return txn_id in self._tasks

    async def resume(
        self, txn_id: str, acceptors: Sequence[str] = (), coordinator: str | None = None
    ) -> None:
        """After a restart: finish a transaction the resource holds as prepared. The vote
        is sent again (harmless if it arrived) and the outcome learned, never guessed.
        A no-op while the transaction is :meth:`active`. Without ``acceptors``, the
        configured (or last learned) ones are used."""
        if self.active(txn_id):
            return
        acceptors = list(acceptors) or list(self.acceptors)
        self.states[txn_id] = RMState.PREPARED
        self._joined[txn_id] = (
            TransactionContext(txn_id, coordinator or self.client.coordinators[0]),
            list(acceptors),
        )
        ctx = TransactionContext(txn_id, coordinator or self.client.coordinators[0])
        self._tasks[txn_id] = asyncio.create_task(self._resumed(ctx, list(acceptors)), name=f"rm-{txn_id}")

    async def abandon(self, txn_id: str, acceptors: Sequence[str] = ()) -> None:
        """After a restart: abort a transaction this RM joined but never prepared (it may,
        pitfall 3), and vote ``aborted`` so the transaction need not wait for a timeout."""
        if self.active(txn_id):
            return
        await self._apply(txn_id, Outcome.ABORTED, learned=False)
        await self._send_vote(txn_id, list(acceptors) or list(self.acceptors), Vote.ABORTED)

    async def _resumed(self, ctx: TransactionContext, acceptors: list[str]) -> None:
        try:
            await self._finish_prepared(ctx, acceptors)
        finally:
            self._tasks.pop(ctx.txn_id, None)
            self._joined.pop(ctx.txn_id, None)

    # ------------------------------------------------------------------ protocol

    async def _run(self, ctx: TransactionContext, acceptors: list[str]) -> None:
        try:
            prepare = await self._await_prepare(ctx)
            if prepare is None:
                return
            if ctx.txn_id in self._voting:
                return  # refused meanwhile (see refuse)
            if not prepare:
                # Never asked to prepare and the owner is gone: abort on our own (allowed
                # only before preparing), and say so so that recovery can finish.
                await self._apply(ctx.txn_id, Outcome.ABORTED, learned=False)
                await self._send_vote(ctx.txn_id, acceptors, Vote.ABORTED)
                return
            self._voting.add(ctx.txn_id)  # too late for refuse() now
            try:
                vote = await self.rm.prepare(ctx.txn_id)
            except Exception:
                log.exception("rm %s: prepare of %s failed: voting abort", self.rm.rm_id, ctx.txn_id)
                vote = Vote.ABORTED
            if vote is Vote.ABORTED:
                await self._apply(ctx.txn_id, Outcome.ABORTED, learned=False)
                await self._send_vote(ctx.txn_id, acceptors, Vote.ABORTED)
                return
            self.states[ctx.txn_id] = RMState.PREPARED
            tracing.event("RMPrepare", ctx.txn_id, proc=f"rm:{self.rm.rm_id}", rm=self.rm.rm_id)
            await self._finish_prepared(ctx, acceptors)
        finally:
            self._tasks.pop(ctx.txn_id, None)
            self._joined.pop(ctx.txn_id, None)
            self._voting.discard(ctx.txn_id)

    async def _await_prepare(self, ctx: TransactionContext) -> bool | None:
        """True: prepare now. False: the owner is gone before asking. None: the outcome
        (an abort) came first and was applied."""
        stub = self._channels.coordinator(ctx.coordinator)
        lost_since: float | None = None
        while True:
            try:
                r = await stub.AwaitPrepare(
                    pb.AwaitPrepareRequest(txn_id=ctx.txn_id, rm_id=self.rm.rm_id, wait_ms=10_000),
                    timeout=10.0 + self.rpc_timeout,
                )
                lost_since = None
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT and exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                now = time.monotonic()
                lost_since = lost_since or now
                o, _ = await self.client.outcome(ctx.txn_id, wait=0.5, prefer=None)
                if o is not Outcome.PENDING:
                    await self._apply(ctx.txn_id, o)
                    return None
                if exc.code() == grpc.StatusCode.NOT_FOUND or now - lost_since > self.owner_timeout:
                    return False
                await asyncio.sleep(0.2)
                continue
            if r.prepare:
                return True
            o = outcome_from_pb(r.outcome)
            if o is not Outcome.PENDING:
                await self._apply(ctx.txn_id, o)
                return None

    async def _finish_prepared(self, ctx: TransactionContext, acceptors: list[str]) -> None:
        await self._send_vote(ctx.txn_id, acceptors, Vote.PREPARED)
        waiting_since = time.monotonic()
        while True:
            wait = max(0.5, min(10.0, self.recovery_timeout))
            o, _ = await self.client.outcome(ctx.txn_id, wait=wait, prefer=ctx.coordinator)
            if o is not Outcome.PENDING:
                await self._apply(ctx.txn_id, o)
                return
            if time.monotonic() - waiting_since >= self.recovery_timeout:
                # No coordinator told us: the acceptors hold everything needed to decide.
                o = await self.learn_from_acceptors(ctx.txn_id, acceptors or self.acceptors)
                if o is not Outcome.PENDING:
                    await self._apply(ctx.txn_id, o)
                    return
            # Still unknown: our vote may have been lost; resending it is harmless.
            await self._send_vote(ctx.txn_id, acceptors, Vote.PREPARED)

    async def learn_from_acceptors(self, txn_id: str, acceptors: Sequence[str]) -> Outcome:
        """Learn the outcome of ``txn_id`` from the acceptors, without any coordinator:
        read what they accepted (or recorded) and, if that does not decide it, run higher
        ballots as a leader with a fresh id (free instances get ``aborted``, pitfall 4).
        Returns PENDING if no majority of acceptors answered. Records nothing itself."""
        if not acceptors or len(acceptors) % 2 == 0:
            log.warning("rm %s: cannot recover %s: acceptors unknown", self.rm.rm_id, txn_id)
            return Outcome.PENDING
        peers = AcceptorPeers(list(acceptors))
        try:
            leader = Leader(f"rm-{self.rm.rm_id}-{uuid.uuid4().hex[:8]}", peers)
            tally = Tally(peers.n)
            decision = await leader.await_bundles(txn_id, tally, None, wait=0.2)
            if decision is None:
                log.info("rm %s: no coordinator answers; running ballots on %s", self.rm.rm_id, txn_id)
                decision = await leader.recover(txn_id, tally, None, attempts=8)
        finally:
            await peers.close()
        if decision is None:
            return Outcome.PENDING
        # Acting as a leader, this RM decided: the spec's Decide step (then it applies it).
        tracing.event("Decide", txn_id, proc=f"rm:{self.rm.rm_id}", outcome=decision.outcome.value)
        log.info("rm %s: learned %s for %s from the acceptors", self.rm.rm_id, decision.outcome.value, txn_id)
        return decision.outcome

    async def _send_vote(self, txn_id: str, acceptors: list[str], vote: Vote) -> None:
        """Phase 2a at ballot 0 to a majority first, the rest only if some fail. Stops
        once a majority accepted, or an acceptor shows a leader's higher ballot (then the
        outcome no longer depends on this message)."""
        if not acceptors:
            return
        n = len(acceptors)
        need = majority(n)
        req = pb.Phase2aRequest(
            txn_id=txn_id,
            ballot=ballot_to_pb(RM_BALLOT),
            proposals=[pb.Proposal(instance=self.rm.rm_id, value=value_to_pb(vote))],
        )
        accepted: set[int] = set()
        for attempt in range(6):
            targets = [i for i in range(n) if i not in accepted]
            if attempt == 0:
                targets = targets[:need]
            replies = await asyncio.gather(
                *(
                    self._channels.acceptor(acceptors[i]).Phase2a(req, timeout=self.rpc_timeout)
                    for i in targets
                ),
                return_exceptions=True,
            )
            for i, rep in zip(targets, replies, strict=True):
                if isinstance(rep, BaseException):
                    if isinstance(rep, grpc.aio.AioRpcError) and rep.code() in TRANSIENT:
                        continue
                    if isinstance(rep, grpc.aio.AioRpcError):
                        log.warning("rm %s: acceptor %d refused vote: %s", self.rm.rm_id, i, rep.details())
                        continue
                    raise rep
                st = states_from_pb(rep.states).get(self.rm.rm_id)
                if st is None:
                    continue
                if st.mbal > RM_BALLOT:
                    return  # a leader took over this instance
                if st.bal == RM_BALLOT:
                    accepted.add(i)
            if len(accepted) >= need:
                return
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        log.warning("rm %s: vote for %s reached only %d acceptors", self.rm.rm_id, txn_id, len(accepted))

    async def _apply(self, txn_id: str, outcome: Outcome, *, learned: bool = True) -> None:
        """Apply an outcome: one ``learned`` from the protocol, or this RM's own abort
        (allowed only while working)."""
        if learned:
            name = "RMRcvCommitMsg" if outcome is Outcome.COMMITTED else "RMRcvAbortMsg"
        else:
            name = "RMChooseToAbort"
        tracing.event(name, txn_id, proc=f"rm:{self.rm.rm_id}", rm=self.rm.rm_id)
        delay = 0.1
        while True:
            try:
                if outcome is Outcome.COMMITTED:
                    await self.rm.commit(txn_id)
                    self.states[txn_id] = RMState.COMMITTED
                else:
                    await self.rm.abort(txn_id)
                    self.states[txn_id] = RMState.ABORTED
                return
            except Exception:
                # The outcome is decided; applying it must not be lost: retry with backoff.
                log.exception(
                    "rm %s: applying %s to %s failed; retrying", self.rm.rm_id, outcome.value, txn_id
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
