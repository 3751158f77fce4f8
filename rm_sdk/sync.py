"""The synchronous API: :class:`SyncClient` for applications and :class:`SyncParticipant`
for resource managers written with plain (blocking) functions.

Design. The SDK is asynchronous at heart (``grpc.aio``); this module is its twin for code
that does not run an event loop. It is *not* ``asyncio.run()`` per call: that raises when
called from code an event loop is running (a coroutine, a loop callback, a Jupyter cell),
and each call would make a new loop, throwing away the ``grpc.aio`` channels (bound to
their loop) and the participant's background tasks.

Instead each sync object owns one private event loop running in a daemon thread,
started on first use and stopped by :meth:`close` (or leaving the ``with`` block). Each
call submits the matching coroutine of the async API to that loop with
:func:`asyncio.run_coroutine_threadsafe` and waits for its result with a timeout derived
from the client's own timeouts, so a caller is never blocked forever. Because the loop is
private, the caller may be anything: a plain script, a thread of a web server's pool,
or a thread that a running event loop started with ``loop.run_in_executor`` or
:func:`asyncio.to_thread`. (Calling from a coroutine works too but blocks that loop for
the duration of the call; async code should use :class:`rm_sdk.Client` instead.)

A participant's work outlives the calls: after :meth:`SyncParticipant.join`, the
protocol task for the transaction keeps running on the private loop, and the resource
manager's ``prepare``/``commit``/``abort`` are called from it in worker threads
(:func:`asyncio.to_thread` on a thread pool owned by the loop), so they may block, e.g.
on a database driver. A resource manager must therefore be thread-safe: callbacks for
different transactions may run at the same time.

The current transaction (:func:`rm_sdk.propagation.current`) is per thread here:
``with client.transaction()`` makes it current in the calling thread, where the sync
:class:`rm_sdk.propagation.ClientInterceptor` finds it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Coroutine, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol, TypeVar

import grpc

from rm_sdk import _context
from rm_sdk.client import Client, OutcomeUnknown, Transaction, TransactionContext
from rm_sdk.participant import Participant, RMState
from rm_sdk.protocol import Outcome, Vote, validate_id

__all__ = ["SyncClient", "SyncParticipant", "SyncResourceManager", "SyncTransaction"]

log = logging.getLogger("paxos_commit.sync")

T = TypeVar("T")

#: Added to every wait for the private loop, beyond the time the call itself may take.
_SLACK = 5.0


class _LoopThread:
    """A private event loop in a daemon thread: started on first use, stopped by close."""

    def __init__(self, name: str, max_workers: int | None = None) -> None:
        self._name = name
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                executor = concurrent.futures.ThreadPoolExecutor(
                    self._max_workers, thread_name_prefix=f"{self._name}-worker"
                )
                loop.set_default_executor(executor)
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._main, args=(loop, executor, ready), name=self._name, daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _main(
        loop: asyncio.AbstractEventLoop,
        executor: concurrent.futures.ThreadPoolExecutor,
        ready: threading.Event,
    ) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Do not wait for callbacks still blocked in worker threads: they may never return.
            executor.shutdown(wait=False, cancel_futures=True)
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` on the private loop and wait up to ``timeout`` seconds for it;
        raises :class:`TimeoutError` (having cancelled it) if it takes longer."""
        try:
            loop = self._start()
            if threading.current_thread() is self._thread:
                raise RuntimeError(f"a blocking call on {self._name} from its own event loop would deadlock")
        except BaseException:
            coro.close()
            raise
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self._name}: no result within {timeout:.1f}s") from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in the caller: do not leave it running
            raise

    def close(self, final: Coroutine[Any, Any, None] | None, timeout: float) -> None:
        """Run ``final`` (a cleanup coroutine) if the loop was started, then stop it."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop, self._thread, self._closed = None, None, True
        if loop is None or thread is None:
            if final is not None:
                final.close()
            return
        try:
            if final is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(final, loop).result(timeout)
        except Exception:
            log.warning("%s: cleanup failed", self._name, exc_info=True)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)


# ------------------------------------------------------------------------ application


class SyncClient:
    """The synchronous :class:`rm_sdk.Client`: begin transactions, commit, ask outcomes.

    Use as ``with SyncClient([...]) as client`` (or call :meth:`close`). Thread-safe: any
    number of threads may share one client."""

    def __init__(
        self,
        coordinators: Sequence[str],
        *,
        rpc_timeout: float = 10.0,
        outcome_timeout: float = 120.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._client = Client(
            coordinators, rpc_timeout=rpc_timeout, outcome_timeout=outcome_timeout, credentials=credentials
        )
        self._runner = _LoopThread("paxos-commit-client")

    @property
    def coordinators(self) -> list[str]:
        """The coordinator addresses this client talks to."""
        return self._client.coordinators

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channels and stop the private event loop."""
        self._runner.close(self._client.close(), timeout=self._client.rpc_timeout + _SLACK)

    def begin(self) -> SyncTransaction:
        """Start a transaction at the first coordinator that answers."""
        limit = self._client.rpc_timeout * len(self._client.coordinators) + _SLACK
        return SyncTransaction(self, self._runner.run(self._client.begin(), limit))

    def transaction(self) -> AbstractContextManager[SyncTransaction]:
        """Begin a transaction for a ``with`` block::

            with client.transaction() as txn:
                bank_a.debit(txn.context, "alice", 30)

        While the block runs the transaction is current in this thread
        (:func:`rm_sdk.propagation.current`). Leaving the block normally commits: a
        :class:`rm_sdk.TransactionAborted` subclass is raised if it aborts instead. An
        exception in the block aborts the transaction (reason: the exception's ``repr``)
        and propagates. If the block already committed or aborted, leaving does nothing."""
        return _SyncTransactionBlock(self)

    def outcome(self, txn_id: str, wait: float = 5.0, prefer: str | None = None) -> tuple[Outcome, str]:
        """Ask coordinators (``prefer`` first) until one knows the outcome or ``wait``
        seconds pass; returns (PENDING, "") if still undecided."""
        return self._runner.run(
            self._client.outcome(txn_id, wait=wait, prefer=prefer),
            wait + self._client.rpc_timeout + _SLACK,
        )


class SyncTransaction:
    """One transaction, seen from the application that began it (the synchronous
    :class:`rm_sdk.Transaction`)."""

    def __init__(self, client: SyncClient, txn: Transaction) -> None:
        self.client = client
        self._txn = txn

    @property
    def context(self) -> TransactionContext:
        """What services need to join: pass it (or its :meth:`~TransactionContext.token`)."""
        return self._txn.context

    @property
    def txn_id(self) -> str:
        """The transaction's id."""
        return self._txn.txn_id

    @property
    def finished(self) -> bool:
        """True once :meth:`commit` or :meth:`abort` has learned the outcome."""
        return self._txn.finished

    def _limit(self) -> float:
        # Commit waits up to outcome_timeout at the owner, then as long again elsewhere.
        return 2 * self._txn.client.outcome_timeout + self._txn.client.rpc_timeout + _SLACK

    def commit(self) -> Outcome:
        """Close registration and decide. Returns COMMITTED or raises a
        :class:`rm_sdk.TransactionAborted` subclass saying why; raises
        :class:`rm_sdk.OutcomeUnknown` if no coordinator could tell in time."""
        try:
            return self.client._runner.run(self._txn.commit(), self._limit())
        except TimeoutError as exc:
            raise OutcomeUnknown(f"transaction {self.txn_id}: no outcome in time") from exc

    def abort(self, reason: str = "aborted by the application") -> Outcome:
        """Abort; returns ABORTED (or COMMITTED if the commit had already been decided)."""
        try:
            return self.client._runner.run(self._txn.abort(reason), self._limit())
        except TimeoutError as exc:
            raise OutcomeUnknown(f"transaction {self.txn_id}: no outcome in time") from exc

    def _abort_after(self, exc: BaseException) -> None:
        try:
            self.client._runner.run(self._txn._abort_after(exc), self._txn.client.rpc_timeout + _SLACK)
        except Exception as abort_exc:
            log.warning("transaction %s: abort after %r failed: %r", self.txn_id, exc, abort_exc)


class _SyncTransactionBlock(AbstractContextManager[SyncTransaction]):
    """What :meth:`SyncClient.transaction` returns."""

    def __init__(self, client: SyncClient) -> None:
        self._client = client
        self._txn: SyncTransaction | None = None
        self._token: contextvars.Token[TransactionContext | None] | None = None

    def __enter__(self) -> SyncTransaction:
        self._txn = self._client.begin()
        self._token = _context._current.set(self._txn.context)
        return self._txn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        txn, token = self._txn, self._token
        assert txn is not None and token is not None, "__exit__ without __enter__"
        _context._current.reset(token)
        if txn.finished:
            return
        if exc is None:
            txn.commit()
        else:
            txn._abort_after(exc)


# ---------------------------------------------------------------------- resource manager


class SyncResourceManager(Protocol):
    """A resource manager with plain (blocking) methods, run by :class:`SyncParticipant`.
    Each step must be idempotent, and the object thread-safe (see the module docstring)."""

    rm_id: str

    def prepare(self, txn_id: str) -> Vote:
        """Make the work durable and ready to commit, then return PREPARED; or return
        ABORTED to refuse. PREPARED must survive a crash of this process."""
        ...

    def commit(self, txn_id: str) -> None:
        """Apply the work of a prepared transaction that committed."""
        ...

    def abort(self, txn_id: str) -> None:
        """Undo the work of a transaction that aborted (prepared or not)."""
        ...


class _ThreadedRM:
    """An async resource manager that calls a sync one in worker threads."""

    def __init__(self, rm: SyncResourceManager) -> None:
        self.rm_id = rm.rm_id
        self._rm = rm

    async def prepare(self, txn_id: str) -> Vote:
        return await asyncio.to_thread(self._rm.prepare, txn_id)

    async def commit(self, txn_id: str) -> None:
        await asyncio.to_thread(self._rm.commit, txn_id)

    async def abort(self, txn_id: str) -> None:
        await asyncio.to_thread(self._rm.abort, txn_id)


class SyncParticipant:
    """Runs the RM side of Paxos Commit for a :class:`SyncResourceManager` (the
    synchronous :class:`rm_sdk.Participant`).

    A service calls :meth:`join` when it first does work for a transaction; from then on
    the protocol runs in the background and calls the resource manager's ``prepare``,
    then ``commit`` or ``abort``, in worker threads (at most ``max_workers`` at once).
    Use as ``with SyncParticipant(rm, [...]) as participant`` (or call :meth:`close`)."""

    def __init__(
        self,
        rm: SyncResourceManager,
        coordinators: Sequence[str],
        *,
        owner_timeout: float = 15.0,
        rpc_timeout: float = 5.0,
        max_workers: int | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        validate_id("rm id", rm.rm_id)
        self.rm = rm
        self._participant = Participant(
            _ThreadedRM(rm),
            coordinators,
            owner_timeout=owner_timeout,
            rpc_timeout=rpc_timeout,
            credentials=credentials,
        )
        self._runner = _LoopThread(f"paxos-commit-rm-{rm.rm_id}", max_workers)

    def __enter__(self) -> SyncParticipant:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the protocol tasks, close the channels and stop the private event loop.
        A transaction this RM prepared but did not finish is finished after a restart
        with :meth:`resume`."""
        self._runner.close(self._participant.close(), timeout=self._participant.rpc_timeout + _SLACK)

    def join(self, ctx: TransactionContext | None = None) -> None:
        """Join ``ctx`` (default: the current transaction, :func:`rm_sdk.propagation.current`),
        once; later calls are no-ops. Returns when the registrar has the join."""
        ctx = ctx if ctx is not None else _context.current()
        if ctx is None:
            raise ValueError("no transaction given and none is current")
        self._runner.run(self._participant.join(ctx), self._participant.rpc_timeout + _SLACK)

    def joined(self, txn_id: str) -> tuple[TransactionContext, list[str]] | None:
        """The context and acceptor addresses of a transaction this RM joined: what a
        resource manager records with its prepared state so :meth:`resume` can finish it."""
        return self._participant.joined(txn_id)

    def state(self, txn_id: str) -> RMState | None:
        """This RM's state in ``txn_id``, or None if it never joined it."""
        return self._participant.states.get(txn_id)

    def wait(self, txn_id: str, timeout: float | None = None) -> RMState:
        """Wait until this RM has applied the outcome of ``txn_id`` (at most ``timeout``
        seconds, then :class:`TimeoutError`)."""
        return self._runner.run(self._participant.wait(txn_id), timeout)

    def applied(self, txn_id: str, timeout: float | None = None) -> RMState:
        """Wait until the outcome of ``txn_id`` is applied to the resource (COMMITTED or
        ABORTED; at most ``timeout`` seconds, then :class:`TimeoutError`). LookupError if
        this participant does not run it and never finished it. See
        :meth:`rm_sdk.Participant.applied`."""
        return self._runner.run(self._participant.applied(txn_id), timeout)

    def refuse(self, txn_id: str, reason: str = "") -> bool:
        """Abort ``txn_id`` at once, before being asked to prepare: undo the work, vote
        aborted and tell the owner, so ``commit()`` raises :class:`rm_sdk.RMRefused` naming
        this RM. False, doing nothing, once prepare began or the transaction finished. See
        :meth:`rm_sdk.Participant.refuse`."""
        return self._runner.run(
            self._participant.refuse(txn_id, reason), 2 * self._participant.rpc_timeout + _SLACK
        )

    def resume(self, txn_id: str, acceptors: Sequence[str] = (), coordinator: str | None = None) -> None:
        """After a restart: finish a transaction the resource holds as prepared, in the
        background (:meth:`wait` waits for it); see :meth:`rm_sdk.Participant.resume`."""
        self._runner.run(
            self._participant.resume(txn_id, acceptors, coordinator), self._participant.rpc_timeout + _SLACK
        )
