"""A coordinator replica as one state machine: the transactions it owns
(:class:`~rm_sdk.core.owner.Owner`) and those it learns or recovers for others
(:class:`~rm_sdk.core.learner.Learner`), with one ballot source per incarnation.

Feed it requests (:meth:`CoordinatorNode.request`), acceptor replies
(:meth:`CoordinatorNode.acceptor_reply`), transactions found undecided on the acceptors
(:meth:`CoordinatorNode.found_undecided`) and ticks; after each, :meth:`take_ready` says
what to send. Soft state only: everything durable is on the acceptors.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rm_sdk.ballots import BallotSource
from rm_sdk.core.learner import Learner, LearnerTimeouts
from rm_sdk.core.messages import (
    Abort,
    AcceptorReply,
    Acknowledge,
    Acknowledged,
    AskOutcome,
    AwaitPrepare,
    Begin,
    Commit,
    Decided,
    Decision,
    Failed,
    Join,
    Joined,
    OutcomeRecorded,
    RecordOutcome,
    Request,
)
from rm_sdk.core.owner import Owner, OwnerTimeouts, RegistrationClosed
from rm_sdk.core.ready import Deadlines, Ready
from rm_sdk.protocol import MAX_RMS, Outcome, ProtocolError, RMSet, majority, validate_id

__all__ = ["CoordinatorNode", "CoordinatorTimeouts", "NotFound", "Unavailable"]


class NotFound(ProtocolError):
    """An id this replica does not own (or has forgotten)."""

    status = "NOT_FOUND"


class Unavailable(ProtocolError):
    """Not done in time (e.g. no majority confirmed an acknowledgement): try again."""

    status = "UNAVAILABLE"


@dataclass(slots=True)
class _AckWait:
    """RMs' acknowledgements of one transaction not yet held by a majority of acceptors:
    per RM the requests to answer and the acceptors that reported holding it."""

    deadline: float
    rms: dict[str, tuple[list[Any], set[int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class CoordinatorTimeouts:
    owner: OwnerTimeouts = field(default_factory=OwnerTimeouts)
    learner: LearnerTimeouts = field(default_factory=LearnerTimeouts)
    #: Decided transactions whose outcome (and participant set) is kept in memory, once
    #: their owner let go of them (the bounded cache of recent outcomes).
    keep_decided: int = 10_000
    #: Transactions whose first question is remembered (pitfall 9's clock).
    keep_asked: int = 100_000
    #: How long a join for a transaction not begun here waits for its Begin: the client
    #: does not wait for Begin's reply, so an RM's join on another stream may overtake it.
    park_join: float = 2.0
    #: Joins waiting for a Begin at most (more are not found at once).
    keep_parked: int = 10_000


class CoordinatorNode:
    def __init__(self, leader_id: str, n_acceptors: int, timeouts: CoordinatorTimeouts | None = None) -> None:
        if n_acceptors < 1 or n_acceptors % 2 == 0:
            raise ValueError(f"need 2F+1 acceptors (an odd number), got {n_acceptors}")
        self.leader_id = leader_id
        self.n = n_acceptors
        self.timeouts = timeouts or CoordinatorTimeouts()
        self.ballots = BallotSource(leader_id)
        self.owned: dict[str, Owner] = {}
        self.learners: dict[str, Learner] = {}
        #: Recently decided transactions: decision and participant set (None: unknown).
        self.decided: OrderedDict[str, tuple[Decision, RMSet | None]] = OrderedDict()
        self._first_asked: OrderedDict[str, float] = OrderedDict()
        self._deadlines: Deadlines[str] = Deadlines()
        #: The earliest machine deadline planned per transaction and not yet due: a step
        #: whose next deadline is no earlier plans nothing (every message of a transaction
        #: used to push a heap entry, and compacting them showed in the profile).
        self._planned: dict[str, float] = {}
        #: Acknowledgements answered only once a majority holds them (an owner that
        #: crashed with them in memory must not have told the RM they were taken).
        self._acks: dict[str, _AckWait] = {}
        #: Joins that overtook their transaction's Begin: (deadline, [(token, join)]).
        self._parked: dict[str, tuple[float, list[tuple[Any, Join]]]] = {}
        self._n_parked = 0
        self.ready = Ready()

    # ------------------------------------------------------------ inputs

    def request(self, token: Any, msg: Request, now: float) -> None:
        """A request from an application or RM; the answer goes to ``token``."""
        try:
            self._request(token, msg, now)
        except ProtocolError as exc:
            self.ready.reply(token, Failed(msg.txn_id, exc))
        self._schedule(msg.txn_id)

    def _request(self, token: Any, msg: Request, now: float) -> None:
        txn_id = validate_id("transaction id", msg.txn_id)
        out = self.ready
        if isinstance(msg, Begin):
            if txn_id in self.owned or txn_id in self.decided:
                raise RegistrationClosed(f"transaction {txn_id} exists already")
            self.owned[txn_id] = Owner(txn_id, self.n, now, self.timeouts.owner, self.ballots)
            out.reply(token, msg)
            self._unpark(txn_id, now)
            return
        if isinstance(msg, AskOutcome):
            self._ask(token, txn_id, msg.wait, now)
            return
        if isinstance(msg, Acknowledge):
            self._acknowledge(token, msg, now)
            return
        done = self.decided.get(txn_id)
        owner = self.owned.get(txn_id)
        if owner is None and done is None:
            if isinstance(msg, Join) and self._park(token, msg, now):
                return
            raise _not_found(txn_id)
        if isinstance(msg, Join):
            validate_id("rm id", msg.rm_id)
            if owner is not None:
                if len(owner.registration.joined) >= MAX_RMS and msg.rm_id not in owner.registration.joined:
                    raise ProtocolError(f"transaction {txn_id} has {MAX_RMS} participants already")
                owner.join(msg.rm_id, out)
            elif done is not None and (done[1] is None or msg.rm_id not in done[1].rms):
                raise RegistrationClosed(f"registration closed; {msg.rm_id!r} cannot join any more")
            out.reply(token, Joined(txn_id, msg.rm_id))
        elif isinstance(msg, AwaitPrepare):
            validate_id("rm id", msg.rm_id)
            if owner is not None:
                owner.await_prepare(token, msg.rm_id, msg.wait, now, out)
            else:
                assert done is not None
                out.reply(token, Decided(txn_id, done[0]))
        elif isinstance(msg, Commit):
            if owner is not None:
                owner.commit(token, now, out, wait_applied=msg.wait_applied)
            else:
                assert done is not None
                out.reply(token, Decided(txn_id, done[0]))
        elif isinstance(msg, Abort):
            if len(msg.reason.encode()) > 1024:
                raise ProtocolError("abort reason longer than 1024 bytes")
            if owner is not None:
                owner.abort_requested(token, msg.reason, now, out, rm_id=msg.rm_id)
            else:
                assert done is not None
                out.reply(token, Decided(txn_id, done[0]))
        self._settle(txn_id)

    def _park(self, token: Any, msg: Join, now: float) -> bool:
        """Hold a join for a transaction not begun here until its Begin comes or
        ``park_join`` passes; False if too many wait already."""
        validate_id("rm id", msg.rm_id)
        if self._n_parked >= self.timeouts.keep_parked:
            return False
        entry = self._parked.get(msg.txn_id)
        if entry is None:
            entry = self._parked[msg.txn_id] = (now + self.timeouts.park_join, [])
            self._deadlines.at(entry[0], msg.txn_id)
        entry[1].append((token, msg))
        self._n_parked += 1
        return True

    def _unpark(self, txn_id: str, now: float) -> None:
        """The Begin came: the joins that overtook it go on as if they had followed it."""
        entry = self._parked.pop(txn_id, None)
        if entry is None:
            return
        self._n_parked -= len(entry[1])
        for token, join in entry[1]:
            try:
                self._request(token, join, now)
            except ProtocolError as exc:
                self.ready.reply(token, Failed(txn_id, exc))

    def _park_expired(self, txn_id: str, now: float) -> None:
        entry = self._parked.get(txn_id)
        if entry is None or now < entry[0]:
            return
        del self._parked[txn_id]
        self._n_parked -= len(entry[1])
        for token, _join in entry[1]:
            self.ready.reply(token, Failed(txn_id, _not_found(txn_id)))

    def _ask(self, token: Any, txn_id: str, wait: float, now: float) -> None:
        done = self.decided.get(txn_id)
        if done is not None:
            self.ready.reply(token, Decided(txn_id, done[0]))
            return
        owner = self.owned.get(txn_id)
        if owner is not None:
            owner.ask(token, wait, now, self.ready)
            return
        learner = self._learner(txn_id, now)
        learner.ask(token, wait, now, self.ready)
        self._settle(txn_id)

    def _acknowledge(self, token: Any, msg: Acknowledge, now: float) -> None:
        """Spec ``RMAck``. The owner counts it; any other replica (the owner let go of the
        transaction, or is gone) passes it to the acceptors, which count it there."""
        validate_id("rm id", msg.rm_id)
        if msg.outcome is Outcome.PENDING:
            raise ProtocolError("an acknowledgement names the applied outcome")
        owner = self.owned.get(msg.txn_id)
        if owner is not None:
            if owner.decision is not None and owner.decision.outcome is not msg.outcome:
                raise ProtocolError(f"transaction {msg.txn_id} was not {msg.outcome.value}")
            owner.acknowledge(msg.rm_id, now, self.ready)
        else:
            for i in range(self.n):
                self.ready.send(i, RecordOutcome(msg.txn_id, msg.outcome, None, frozenset({msg.rm_id})))
        # Answered when a majority of acceptors report holding it (acceptor_reply), or as
        # Unavailable at the deadline: the owner may hold it for up to its ack wait first.
        wait = self._acks.get(msg.txn_id)
        if wait is None:
            owner_timeouts = self.timeouts.owner
            wait = self._acks[msg.txn_id] = _AckWait(
                now + owner_timeouts.ack_wait + 2 * owner_timeouts.answer_timeout
            )
            self._deadlines.at(wait.deadline, msg.txn_id)
        tokens, _ = wait.rms.setdefault(msg.rm_id, ([], set()))
        tokens.append(token)
        self._settle(msg.txn_id)

    def _ack_recorded(self, msg: OutcomeRecorded) -> None:
        wait = self._acks.get(msg.txn_id)
        if wait is None:
            return
        need = majority(self.n)
        for rm_id, (tokens, holders) in list(wait.rms.items()):
            if msg.holds_ack(rm_id):
                holders.add(msg.acceptor)
                if len(holders) >= need:
                    for token in tokens:
                        self.ready.reply(token, Acknowledged(msg.txn_id, rm_id))
                    del wait.rms[rm_id]
        if not wait.rms:
            del self._acks[msg.txn_id]
            if msg.txn_id not in self.owned and msg.txn_id not in self.learners:
                self._forget(msg.txn_id)

    def _ack_expired(self, txn_id: str, now: float) -> None:
        wait = self._acks.get(txn_id)
        if wait is None or now < wait.deadline:
            return
        del self._acks[txn_id]
        for rm_id, (tokens, holders) in wait.rms.items():
            err = Unavailable(
                f"the acknowledgement of {rm_id} for transaction {txn_id} is held by "
                f"{len(holders)} of {self.n} acceptors, not a majority yet; try again"
            )
            for token in tokens:
                self.ready.reply(token, Failed(txn_id, err))

    def _learner(self, txn_id: str, now: float) -> Learner:
        learner = self.learners.get(txn_id)
        if learner is None:
            first = self._first_asked.setdefault(txn_id, now)
            self._first_asked.move_to_end(txn_id)
            while len(self._first_asked) > self.timeouts.keep_asked:
                self._first_asked.popitem(last=False)
            learner = self.learners[txn_id] = Learner(
                txn_id, self.n, now, self.timeouts.learner, self.ballots, first_asked=first
            )
        return learner

    def acceptor_reply(self, msg: AcceptorReply, now: float) -> None:
        """A reply (or the transport's NoAnswer) from an acceptor."""
        txn_id = msg.txn_id
        if isinstance(msg, OutcomeRecorded):
            self._ack_recorded(msg)
        owner = self.owned.get(txn_id)
        if owner is not None:
            owner.on_reply(msg, now, self.ready)
        else:
            learner = self.learners.get(txn_id)
            if learner is not None:
                learner.on_reply(msg, now, self.ready)
        self._settle(txn_id)
        self._schedule(txn_id)

    def found_undecided(self, txn_ids: list[str], now: float) -> None:
        """Transactions the acceptors have known for ``recovery_timeout`` and not decided:
        recover those nobody here is driving already."""
        for txn_id in txn_ids:
            if txn_id in self.owned or txn_id in self.learners or txn_id in self.decided:
                continue
            learner = self._learner(txn_id, now)
            learner.read(now, self.ready)
            self._schedule(txn_id)

    def retry(self, txn_id: str, now: float) -> str:
        """An operator's "recover now" (``paxos-commit txn retry``): the owner starts its
        recovery ballots without waiting for the vote timeout; any other replica reads
        the acceptors and recovers without waiting for the recovery timeout. Returns what
        it did, for people."""
        txn_id = validate_id("transaction id", txn_id)
        done = self.decided.get(txn_id)
        if done is not None:
            return f"already decided: {done[0].outcome.value}"
        owner = self.owned.get(txn_id)
        if owner is not None:
            what = owner.retry(now, self.ready)
        else:
            learner = self._learner(txn_id, now)
            what = learner.retry(now, self.ready)
        self._settle(txn_id)
        self._schedule(txn_id)
        return what

    def tick(self, now: float) -> None:
        for txn_id in self._deadlines.due(now):
            self._planned.pop(txn_id, None)  # planned again below, if still wanted
            owner = self.owned.get(txn_id)
            if owner is not None:
                owner.tick(now, self.ready)
            learner = self.learners.get(txn_id)
            if learner is not None:
                learner.tick(now, self.ready)
            self._ack_expired(txn_id, now)
            self._park_expired(txn_id, now)
            self._settle(txn_id)
            self._schedule(txn_id)

    # ------------------------------------------------------------ outputs

    def take_ready(self) -> Ready:
        return self.ready.take()

    def next_deadline(self) -> float | None:
        return self._deadlines.next()

    @property
    def parked_joins(self) -> int:
        """Joins waiting for their transaction's Begin."""
        return self._n_parked

    @property
    def undecided_owned(self) -> int:
        return sum(1 for o in self.owned.values() if o.decision is None)

    @property
    def awaiting_acks(self) -> int:
        """Decided transactions owned here whose RMs have not all acknowledged yet."""
        return sum(1 for o in self.owned.values() if o.decision is not None and not o.recorded)

    def in_doubt_since(self) -> list[float]:
        """When each transaction being driven to a decision here started that."""
        times = [o.closed_at for o in self.owned.values() if o.closing and o.decision is None]
        times += [self._first_asked.get(t, 0.0) for t, lr in self.learners.items() if lr.recovery is not None]
        return times

    # ------------------------------------------------------------ bookkeeping

    def _schedule(self, txn_id: str) -> None:
        machine: Owner | Learner | None = self.owned.get(txn_id) or self.learners.get(txn_id)
        if machine is not None:
            nd = machine.next_deadline()
            if nd is not None:
                planned = self._planned.get(txn_id)
                if planned is None or nd < planned:
                    # A later deadline is planned again when the earlier one comes due.
                    self._planned[txn_id] = nd
                    self._deadlines.at(nd, txn_id)

    def _forget(self, txn_id: str) -> None:
        """The transaction has nothing timed any more: drop its deadlines."""
        self._deadlines.discard(txn_id)
        self._planned.pop(txn_id, None)

    def _settle(self, txn_id: str) -> None:
        """Move a decided transaction to the bounded cache of outcomes."""
        owner = self.owned.get(txn_id)
        if owner is not None and owner.decision is not None and owner.recorded and not owner.prepare_waiters:
            del self.owned[txn_id]
            if txn_id not in self.learners and txn_id not in self._acks:
                self._forget(txn_id)
            self._remember(txn_id, owner.decision, owner.known_set)
        learner = self.learners.get(txn_id)
        if learner is not None and learner.finished:
            del self.learners[txn_id]
            if txn_id not in self.owned and txn_id not in self._acks:
                self._forget(txn_id)
            if learner.decision is not None:
                self._first_asked.pop(txn_id, None)
                self._remember(txn_id, learner.decision, learner.tally.known_set())
                if learner.decided_here:
                    self.ready.decided.append((txn_id, learner.decision, 0.0))
                # Decided here or read from a record: every acceptor gets the record, so an
                # acceptor that missed it stops listing the transaction as undecided long
                # before the other acceptors' compact records expire (collection). Read from
                # a collected record, it says every RM acknowledged: an acceptor that missed
                # the acknowledgements collects it too, instead of keeping it for ever.
                known = learner.tally.known_set()
                # The set from the registrar's chosen value, else as an acceptor recorded it
                # (a decision read from a record carries no instance states).
                rms = frozenset(known.rms) if known is not None else learner.participants
                # The acks the bundles reported go too: an acceptor that had no record when
                # they were passed on alone (it keeps none for a transaction it lacks) gets
                # them with the record, or it could never collect. (Only with the set:
                # acks without one are a passed-on ack, which records no outcome.)
                acked = frozenset(learner.acked) if rms is not None else frozenset()
                rec = RecordOutcome(txn_id, learner.decision.outcome, rms, acked, all_acked=learner.all_acked)
                for i in range(self.n):
                    self.ready.send(i, rec)

    def _remember(self, txn_id: str, d: Decision, s: RMSet | None) -> None:
        self.decided[txn_id] = (d, s)
        self.decided.move_to_end(txn_id)
        while len(self.decided) > self.timeouts.keep_decided:
            self.decided.popitem(last=False)


def _not_found(txn_id: str) -> NotFound:
    return NotFound(
        f"unknown transaction {txn_id!r} at this coordinator: it was begun elsewhere or "
        "this coordinator restarted (its outcome is still available through GetOutcome)"
    )
