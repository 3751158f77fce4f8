"""The resource-manager role as a state machine (spec ``rmState``, ``RMPrepare``,
``RMChooseToAbort``, ``RMRcvCommitMsg``, ``RMRcvAbortMsg``; paper sections 4 and 6.2).

One :class:`ParticipantCore` runs every transaction of one resource manager. Feed it
events (joined, the coordinator's answers, the resource's results, acceptor replies,
ticks) and carry out what each step leaves in the :class:`~rm_sdk.core.ready.Ready`:
``sends`` (ballot-0 2a votes, and the learner's requests), ``effects``
(:class:`CallResource`, :class:`CallCoordinator`, :class:`Applied`, :class:`Ended`) and
``trace``. Time is an argument; no I/O here.

Rules (DESIGN.md pitfalls 3 and 7):
- the ``prepared`` vote leaves only after the resource's ``prepare`` returned PREPARED,
  which means durable;
- the RM aborts on its own only while working (never once prepared);
- a prepared RM learns the outcome and never guesses: from a coordinator, or, after
  ``recovery_timeout``, from the acceptors (:class:`~rm_sdk.core.learner.Learner`, which
  may run recovery ballots of this incarnation's own :class:`BallotSource`).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias

from rm_sdk.ballots import BallotSource
from rm_sdk.core.learner import Learner, LearnerTimeouts
from rm_sdk.core.messages import (
    AcceptorReply,
    Acknowledge,
    Acknowledged,
    AskOutcome,
    AwaitPrepare,
    Decided,
    Decision,
    NoAnswer,
    Pending,
    Phase2a,
    Phase2b,
    Prepare,
    Refused,
    Unknown,
)
from rm_sdk.core.ready import Deadlines, Ready
from rm_sdk.protocol import RM_BALLOT, Outcome, ProtocolError, Vote, majority

__all__ = [
    "Applied",
    "CallCoordinator",
    "CallResource",
    "CoordinatorReply",
    "Ended",
    "ParticipantCore",
    "ParticipantTimeouts",
    "RMState",
    "ResourceOp",
    "Unreachable",
]


class RMState(enum.Enum):
    """Spec ``rmState``: working -> prepared -> committed | aborted; working -> aborted."""

    WORKING = "working"
    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"


class ResourceOp(enum.Enum):
    PREPARE = "prepare"
    COMMIT = "commit"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class CallResource:
    """Call the resource's ``prepare``/``commit``/``abort``; report the result with
    :meth:`ParticipantCore.on_prepared` or :meth:`ParticipantCore.on_applied`."""

    txn_id: str
    op: ResourceOp


@dataclass(frozen=True, slots=True)
class CallCoordinator:
    """Send ``request`` to ``coordinator`` (an :class:`AskOutcome` may go on to the other
    coordinators); report the answer with :meth:`ParticipantCore.on_coordinator`."""

    txn_id: str
    coordinator: str
    request: AwaitPrepare | AskOutcome | Acknowledge


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome is applied to the resource: ``state`` is COMMITTED or ABORTED."""

    txn_id: str
    state: RMState


@dataclass(frozen=True, slots=True)
class Ended:
    """Nothing is left to do for the transaction (applied, and its vote settled)."""

    txn_id: str
    state: RMState


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No coordinator answered (connection lost, deadline, an unexpected error)."""

    txn_id: str
    detail: str = ""


CoordinatorReply: TypeAlias = Prepare | Decided | Pending | Unknown | Unreachable | Acknowledged


@dataclass(frozen=True)
class ParticipantTimeouts:
    #: Not asked to prepare and no coordinator answering this long: abort on our own.
    owner_timeout: float = 15.0
    #: Prepared and no coordinator told the outcome this long: ask the acceptors.
    recovery_timeout: float = 30.0
    #: An acceptor that has not answered a vote this long is replaced by the next one.
    answer_timeout: float = 1.0
    #: How long one AwaitPrepare long-poll may wait at the coordinator.
    prepare_wait: float = 10.0
    #: Pause before asking a coordinator again after it did not answer.
    retry_delay: float = 0.2
    #: Rounds of a vote over every acceptor before giving up (a prepared RM resends later).
    vote_rounds: int = 6
    #: Recovery ballots per attempt to learn from the acceptors.
    recovery_attempts: int = 8
    #: Backoff of a failed commit/abort: first delay and cap (seconds).
    apply_backoff: float = 0.1
    apply_backoff_cap: float = 5.0
    #: Tries of an acknowledgement whose coordinator does not answer (then the transaction
    #: stays live on the acceptors, visible, until an operator or a later ack settles it).
    ack_attempts: int = 5
    #: Finished transactions whose state stays in ``ParticipantCore.states`` (a bounded
    #: cache of recent outcomes; live ones are always there).
    keep_finished: int = 10_000


class _Phase(enum.Enum):
    AWAIT_PREPARE = "await_prepare"  # joined; waiting for the paper's Prepare
    PREPARING = "preparing"  # the resource's prepare() is running
    PREPARED = "prepared"  # voted prepared; learning the outcome
    APPLYING = "applying"  # the resource's commit()/abort() is running (or retried)
    APPLIED = "applied"


class _VoteRun:
    """A ballot-0 phase 2a (the RM's vote, spec ``RMPrepare``/``RMChooseToAbort``) sent to
    the first majority, an acceptor that fails or does not answer within the answer
    timeout replaced by the next at once (paper section 4: "the other acceptors only on
    failure"). Settled once a majority accepted, a leader's higher ballot shows (the
    outcome no longer depends on this message), or ``rounds`` rounds failed."""

    def __init__(self, txn_id: str, rm_id: str, vote: Vote, n: int, t: ParticipantTimeouts) -> None:
        self.msg = Phase2a(txn_id, RM_BALLOT, {rm_id: vote})
        self.rm_id = rm_id
        self.vote = vote
        self.n = n
        self.need = majority(n) if n else 0
        self.timeouts = t
        self.accepted: set[int] = set()
        self.waiting: dict[int, float] = {}
        self.untried: list[int] = []
        self.round = 0
        self.retry_at: float | None = None
        self.settled = n == 0
        self.gave_up = False

    def start(self, now: float, out: Ready) -> None:
        self.untried = [i for i in range(self.n) if i not in self.accepted]
        self._fill(now, out)

    def _fill(self, now: float, out: Ready) -> None:
        if self.settled:
            return
        while len(self.accepted) + len(self.waiting) < self.need and self.untried:
            i = self.untried.pop(0)
            self.waiting[i] = now + self.timeouts.answer_timeout
            out.send(i, self.msg)
        if len(self.accepted) + len(self.waiting) < self.need and not self.waiting:
            self.round += 1
            if self.round >= self.timeouts.vote_rounds:
                self.settled = self.gave_up = True
                out.log.append((self.msg.txn_id, f"vote reached only {len(self.accepted)} acceptors"))
            else:
                self.retry_at = now + min(0.1 * 2 ** (self.round - 1), 2.0)

    def on_reply(self, msg: AcceptorReply, now: float, out: Ready) -> None:
        if self.settled:
            return
        i = msg.acceptor
        if isinstance(msg, Phase2b) and msg.outcome is not Outcome.PENDING:
            self.settled = True  # decided and recorded: the outcome no longer needs our vote
            return
        if isinstance(msg, Phase2b):
            st = msg.states.get(self.rm_id)
            if st is not None and st.mbal > RM_BALLOT:
                self.settled = True  # a leader took over this instance
                return
            if st is not None and st.bal == RM_BALLOT:
                self.accepted.add(i)
                self.waiting.pop(i, None)
                if len(self.accepted) >= self.need:
                    self.settled = True
                return
            if i not in self.waiting:
                return
        elif isinstance(msg, (NoAnswer, Refused)):
            if msg.request is not self.msg and msg.request != self.msg:
                return
            if isinstance(msg, Refused):
                out.log.append((msg.txn_id, f"acceptor {i} refused the vote: {msg.detail}"))
        else:
            return
        # This acceptor failed: the next one, at once.
        if self.waiting.pop(i, None) is not None:
            self._fill(now, out)

    def tick(self, now: float, out: Ready) -> None:
        if self.settled:
            return
        slow = [i for i, dl in self.waiting.items() if now >= dl]
        for i in slow:
            del self.waiting[i]  # its late answer still counts
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self.start(now, out)
        elif slow:
            self._fill(now, out)

    def next_deadline(self) -> float | None:
        if self.settled:
            return None
        times = list(self.waiting.values())
        if self.retry_at is not None:
            times.append(self.retry_at)
        return min(times) if times else None


class _Txn:
    def __init__(self, txn_id: str, coordinator: str, n: int, state: RMState, phase: _Phase) -> None:
        self.txn_id = txn_id
        self.coordinator = coordinator
        self.n = n
        self.state = state
        self.phase = phase
        self.awaiting = False  # an AwaitPrepare is out
        self.asking = False  # an AskOutcome is out
        self.lost_since: float | None = None
        self.owner_gone = False
        self.retry_at: float | None = None  # next AwaitPrepare / AskOutcome
        self.refused: str | None = None
        self.pending: tuple[Decision, bool] | None = None  # decided while preparing
        self.apply_op: ResourceOp | None = None
        self.apply_inflight = False
        self.apply_retry_at: float | None = None
        self.apply_delay = 0.0
        self.vote: _VoteRun | None = None
        self.prepared_at: float | None = None
        self.learn_at: float | None = None
        self.learner: Learner | None = None
        self.scheduled: float | None = None
        #: The acknowledgement (spec RMAck): tries so far, the next try, and whether it
        #: is settled (taken by a coordinator, or given up).
        self.ack_tries = 0
        self.ack_retry_at: float | None = None
        self.ack_inflight = False
        self.ack_settled = False
        #: A commit caller waits for the acknowledgement (Decided.ack_awaited).
        self.ack_awaited = False

    def next_deadline(self) -> float | None:
        times = [
            t for t in (self.retry_at, self.apply_retry_at, self.learn_at, self.ack_retry_at) if t is not None
        ]
        for sub in (self.vote, self.learner):
            nd = sub.next_deadline() if sub is not None else None
            if nd is not None:
                times.append(nd)
        return min(times) if times else None


class ParticipantCore:
    """Every transaction of one resource manager ``rm_id``. ``leader_id``: a leader id
    fresh for this incarnation, for the recovery ballots it may run (pitfall 2)."""

    def __init__(self, rm_id: str, leader_id: str, timeouts: ParticipantTimeouts | None = None) -> None:
        self.rm_id = rm_id
        self.timeouts = timeouts or ParticipantTimeouts()
        self.ballots = BallotSource(leader_id)
        #: The state of every transaction this RM took part in (spec ``rmState``), set
        #: to COMMITTED/ABORTED once applied.
        self.states: dict[str, RMState] = {}
        #: Ended transactions, oldest first: the bounded part of ``states``.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._txns: dict[str, _Txn] = {}
        self._learns: dict[Any, Learner] = {}
        self._deadlines: Deadlines[Any] = Deadlines()

    # ------------------------------------------------------------------ queries

    def active(self, txn_id: str) -> bool:
        """Joined, resumed or abandoned, and not ended."""
        return txn_id in self._txns

    def voted(self, txn_id: str) -> Vote | None:
        t = self._txns.get(txn_id)
        return t.vote.vote if t is not None and t.vote is not None else None

    def next_deadline(self) -> float | None:
        return self._deadlines.next()

    # ------------------------------------------------------------------ starting

    def join(self, txn_id: str, coordinator: str, n_acceptors: int, now: float, out: Ready) -> None:
        """Spec ``Join`` done (the registrar has it): wait to be asked to prepare."""
        if txn_id in self._txns or txn_id in self.states:
            return
        t = self._new(txn_id, coordinator, n_acceptors, RMState.WORKING, _Phase.AWAIT_PREPARE)
        self._await_prepare(t, out)
        self._after(t, out)

    def resume(self, txn_id: str, coordinator: str, n_acceptors: int, now: float, out: Ready) -> None:
        """After a restart, a transaction the resource holds as prepared (durably): vote
        again (harmless if it arrived) and learn the outcome (pitfall 7)."""
        if txn_id in self._txns:
            return
        t = self._new(txn_id, coordinator, n_acceptors, RMState.PREPARED, _Phase.PREPARED)
        self._prepared(t, now, out)

    def abandon(self, txn_id: str, n_acceptors: int, now: float, out: Ready) -> None:
        """After a restart, a transaction this RM joined but never prepared: abort on its
        own (allowed, pitfall 3) and vote aborted."""
        if txn_id in self._txns:
            return
        t = self._new(txn_id, "", n_acceptors, RMState.WORKING, _Phase.AWAIT_PREPARE)
        self._choose_to_abort(t, now, out)
        self._after(t, out)

    def refuse(self, txn_id: str, reason: str, now: float, out: Ready) -> bool:
        """The RM's work failed: vote aborted now (spec ``RMChooseToAbort``: only while
        working, and only before prepare began, so one RM never sends two different
        ballot-0 votes). True if it chose to abort; False, changing nothing, otherwise."""
        t = self._txns.get(txn_id)
        if t is None or t.state is not RMState.WORKING or t.phase is not _Phase.AWAIT_PREPARE:
            return False
        out.log.append((txn_id, f"refused: {reason}" if reason else "refused"))
        self._choose_to_abort(t, now, out)
        self._after(t, out)
        return True

    # ------------------------------------------------------------------ events

    def on_coordinator(
        self,
        txn_id: str,
        request: AwaitPrepare | AskOutcome | Acknowledge,
        reply: CoordinatorReply,
        now: float,
        out: Ready,
    ) -> None:
        t = self._txns.get(txn_id)
        if t is None:
            return
        if isinstance(request, Acknowledge):
            t.ack_inflight = False
            if isinstance(reply, Unreachable) and t.ack_tries < self.timeouts.ack_attempts:
                t.ack_retry_at = now + self.timeouts.retry_delay * 2**t.ack_tries
            else:
                if not isinstance(reply, Acknowledged):
                    out.log.append((txn_id, f"acknowledgement not taken: {type(reply).__name__}"))
                t.ack_settled = True
        elif isinstance(request, AwaitPrepare):
            t.awaiting = False
            if t.phase is not _Phase.AWAIT_PREPARE:
                pass
            elif isinstance(reply, Prepare) and reply.prepare:
                # The paper's Prepare: registration closed with us in the set.
                t.lost_since = None
                t.phase = _Phase.PREPARING
                out.effect(CallResource(txn_id, ResourceOp.PREPARE))
            elif isinstance(reply, (Prepare, Pending)):
                t.lost_since = None
                self._await_prepare(t, out)
            elif isinstance(reply, Decided):
                t.ack_awaited = reply.ack_awaited
                self._learned(t, reply.decision, now, out)
            else:
                # Owner unreachable or gone: the outcome may be known elsewhere.
                t.lost_since = t.lost_since if t.lost_since is not None else now
                t.owner_gone = t.owner_gone or isinstance(reply, Unknown)
                self._ask(t, 0.5, out)
        else:
            t.asking = False
            if isinstance(reply, Decided):
                t.ack_awaited = reply.ack_awaited
                self._learned(t, reply.decision, now, out)
            elif t.phase is _Phase.AWAIT_PREPARE and not t.awaiting:
                assert t.lost_since is not None
                if t.owner_gone or now - t.lost_since > self.timeouts.owner_timeout:
                    # Never asked to prepare, and the owner is gone: abort on our own.
                    out.log.append((txn_id, "owner gone before prepare: aborting"))
                    self._choose_to_abort(t, now, out)
                else:
                    t.retry_at = now + self.timeouts.retry_delay
            elif t.phase is _Phase.PREPARED:
                if t.vote is not None and t.vote.gave_up:
                    # Our vote may never have arrived; resending is harmless.
                    t.vote = self._vote(t, Vote.PREPARED, now, out)
                if isinstance(reply, Pending):
                    self._ask(t, self._ask_wait(), out)
                else:
                    t.retry_at = now + self.timeouts.retry_delay
        self._after(t, out)

    def on_prepared(self, txn_id: str, vote: Vote | None, now: float, out: Ready) -> None:
        """The resource's prepare() returned ``vote`` (None: it raised)."""
        t = self._txns.get(txn_id)
        if t is None or t.phase is not _Phase.PREPARING:
            return
        if vote is Vote.PREPARED and t.refused is None:
            # Spec RMPrepare. prepare() returning PREPARED means durable: only now may the
            # vote leave (pitfall 3).
            t.state = self.states[txn_id] = RMState.PREPARED
            out.event("RMPrepare", txn_id, rm=self.rm_id)
            if t.pending is not None:
                self._learned(t, t.pending[0], now, out)
            else:
                self._prepared(t, now, out)
                return
        elif t.pending is not None and t.pending[0].outcome is Outcome.ABORTED:
            self._learned(t, t.pending[0], now, out)
        else:
            if vote is None:
                out.log.append((txn_id, "prepare failed: voting aborted"))
            self._choose_to_abort(t, now, out)
        self._after(t, out)

    def on_applied(self, txn_id: str, ok: bool, now: float, out: Ready) -> None:
        """The resource's commit()/abort() returned (``ok``) or raised."""
        t = self._txns.get(txn_id)
        if t is None or not t.apply_inflight or t.apply_op is None:
            return
        t.apply_inflight = False
        if ok:
            t.phase = _Phase.APPLIED
            t.state = RMState.COMMITTED if t.apply_op is ResourceOp.COMMIT else RMState.ABORTED
            self.states[txn_id] = t.state
            out.effect(Applied(txn_id, t.state))
            # Spec RMAck: applied durably, so this RM will never ask again (pitfall 8).
            out.event("RMAck", txn_id, rm=self.rm_id)
            self._acknowledge(t, out)
        else:
            # The outcome is decided; applying it must not be lost: retry with backoff.
            t.apply_delay = (
                self.timeouts.apply_backoff
                if t.apply_delay == 0
                else min(t.apply_delay * 2, self.timeouts.apply_backoff_cap)
            )
            t.apply_retry_at = now + t.apply_delay
            out.log.append((txn_id, f"{t.apply_op.value} failed; retrying in {t.apply_delay:.1f}s"))
        self._after(t, out)

    def on_acceptor(self, msg: AcceptorReply, now: float, out: Ready) -> None:
        """Any acceptor reply (to a vote, or to the learner's reads and ballots)."""
        t = self._txns.get(msg.txn_id)
        if t is not None:
            if t.vote is not None:
                t.vote.on_reply(msg, now, out)
            if t.learner is not None:
                learner = t.learner
                self._with_learner(t, lambda o: learner.on_reply(msg, now, o), now, out)
            self._after(t, out)
        for token, learner in list(self._learns.items()):
            if learner.txn_id == msg.txn_id:
                self._with_learn(token, partial(learner.on_reply, msg, now), now, out)

    def tick(self, now: float, out: Ready) -> None:
        for key in self._deadlines.due(now):
            if isinstance(key, tuple):
                learner = self._learns.get(key[1])
                if learner is not None:
                    self._with_learn(key[1], partial(learner.tick, now), now, out)
                continue
            t = self._txns.get(key)
            if t is None:
                continue
            t.scheduled = None
            self._tick(t, now, out)
            self._after(t, out)

    def learn(self, token: Any, txn_id: str, n_acceptors: int, now: float, out: Ready) -> None:
        """Learn ``txn_id`` from the acceptors alone, at once (running ballots if what they
        accepted decides nothing); answer ``token`` with Decided, Pending or Unknown."""
        learner = Learner(
            txn_id,
            n_acceptors,
            now,
            LearnerTimeouts(0.0, self.timeouts.answer_timeout, self.timeouts.recovery_attempts),
            self.ballots,
        )
        self._learns[token] = learner
        self._with_learn(token, lambda o: learner.ask(token, self._learn_wait(), now, o), now, out)

    # ------------------------------------------------------------------ steps

    def _new(self, txn_id: str, coordinator: str, n: int, state: RMState, phase: _Phase) -> _Txn:
        t = self._txns[txn_id] = _Txn(txn_id, coordinator, n, state, phase)
        self.states[txn_id] = state
        return t

    def _tick(self, t: _Txn, now: float, out: Ready) -> None:
        if t.vote is not None:
            t.vote.tick(now, out)
        if t.retry_at is not None and now >= t.retry_at:
            t.retry_at = None
            if t.phase is _Phase.AWAIT_PREPARE:
                self._await_prepare(t, out)
            elif t.phase is _Phase.PREPARED:
                self._ask(t, self._ask_wait(), out)
        if t.apply_retry_at is not None and now >= t.apply_retry_at:
            t.apply_retry_at = None
            self._call_apply(t, out)
        if t.ack_retry_at is not None and now >= t.ack_retry_at:
            t.ack_retry_at = None
            self._acknowledge(t, out)
        if t.phase is _Phase.PREPARED:
            if t.learner is not None:
                learner = t.learner
                self._with_learner(t, lambda o: learner.tick(now, o), now, out)
            elif t.learn_at is not None and now >= t.learn_at:
                self._start_learner(t, now, out)

    def _await_prepare(self, t: _Txn, out: Ready) -> None:
        if not t.awaiting:
            t.awaiting = True
            out.effect(
                CallCoordinator(
                    t.txn_id, t.coordinator, AwaitPrepare(t.txn_id, self.rm_id, self.timeouts.prepare_wait)
                )
            )

    def _ask(self, t: _Txn, wait: float, out: Ready) -> None:
        if not t.asking:
            t.asking = True
            out.effect(CallCoordinator(t.txn_id, t.coordinator, AskOutcome(t.txn_id, wait)))

    def _ask_wait(self) -> float:
        return max(0.5, min(10.0, self.timeouts.recovery_timeout))

    def _learn_wait(self) -> float:
        return self.timeouts.answer_timeout * (2 * self.timeouts.recovery_attempts + 4) + 5.0

    def _vote(self, t: _Txn, vote: Vote, now: float, out: Ready) -> _VoteRun:
        run = _VoteRun(t.txn_id, self.rm_id, vote, t.n, self.timeouts)
        run.start(now, out)
        return run

    def _prepared(self, t: _Txn, now: float, out: Ready) -> None:
        """Prepared (durably): vote, then learn the outcome, never guess."""
        t.phase = _Phase.PREPARED
        t.prepared_at = now
        t.learn_at = now + self.timeouts.recovery_timeout
        t.vote = self._vote(t, Vote.PREPARED, now, out)
        self._ask(t, self._ask_wait(), out)
        self._after(t, out)

    def _choose_to_abort(self, t: _Txn, now: float, out: Ready) -> None:
        """Spec ``RMChooseToAbort``: only while working (pitfall 3)."""
        if t.state is not RMState.WORKING or t.apply_op is not None:
            raise ProtocolError(f"{t.txn_id}: abort on its own while {t.state.value}")
        out.event("RMChooseToAbort", t.txn_id, rm=self.rm_id)
        self._apply(t, ResourceOp.ABORT, out)
        t.vote = self._vote(t, Vote.ABORTED, now, out)

    def _learned(self, t: _Txn, d: Decision, now: float, out: Ready) -> None:
        """An outcome learned from a coordinator or the acceptors: apply it once (spec
        ``RMRcvCommitMsg``/``RMRcvAbortMsg``)."""
        if t.apply_op is not None:
            return
        if t.phase is _Phase.PREPARING:
            t.pending = (d, True)  # applied once prepare() returns
            return
        if d.outcome is Outcome.COMMITTED and t.state is not RMState.PREPARED:
            out.log.append((t.txn_id, "told committed but never prepared: ignored"))
            return
        if t.vote is not None and t.vote.vote is Vote.PREPARED:
            t.vote.settled = True  # the outcome no longer depends on our vote
        t.learner = None
        t.learn_at = None
        t.retry_at = None
        out.event(
            "RMRcvCommitMsg" if d.outcome is Outcome.COMMITTED else "RMRcvAbortMsg", t.txn_id, rm=self.rm_id
        )
        self._apply(t, ResourceOp.COMMIT if d.outcome is Outcome.COMMITTED else ResourceOp.ABORT, out)

    def _apply(self, t: _Txn, op: ResourceOp, out: Ready) -> None:
        t.phase = _Phase.APPLYING
        t.apply_op = op
        self._call_apply(t, out)

    def _call_apply(self, t: _Txn, out: Ready) -> None:
        if t.apply_op is not None and not t.apply_inflight and t.phase is _Phase.APPLYING:
            t.apply_inflight = True
            out.effect(CallResource(t.txn_id, t.apply_op))

    def _acknowledge(self, t: _Txn, out: Ready) -> None:
        if t.ack_inflight or t.ack_settled:
            return
        t.ack_inflight = True
        t.ack_tries += 1
        outcome = Outcome.COMMITTED if t.state is RMState.COMMITTED else Outcome.ABORTED
        out.effect(
            CallCoordinator(
                t.txn_id, t.coordinator, Acknowledge(t.txn_id, self.rm_id, outcome, urgent=t.ack_awaited)
            )
        )

    def _start_learner(self, t: _Txn, now: float, out: Ready) -> None:
        t.learn_at = None
        if t.n == 0 or t.n % 2 == 0:
            out.log.append((t.txn_id, "cannot learn from the acceptors: acceptors unknown"))
            return
        out.log.append((t.txn_id, "no coordinator told the outcome: asking the acceptors"))
        assert t.prepared_at is not None
        learner = t.learner = Learner(
            t.txn_id,
            t.n,
            now,
            LearnerTimeouts(
                self.timeouts.recovery_timeout, self.timeouts.answer_timeout, self.timeouts.recovery_attempts
            ),
            self.ballots,
            first_asked=t.prepared_at,
        )
        self._with_learner(t, lambda o: learner.ask(t.txn_id, self._learn_wait(), now, o), now, out)

    def _with_learner(self, t: _Txn, step: Callable[[Ready], None], now: float, out: Ready) -> None:
        """Run a learner step; its sends and trace go out, its answers come to us."""
        learner = t.learner
        assert learner is not None
        for _, msg in self._sub(step, out):
            if isinstance(msg, Decided):
                self._learned(t, msg.decision, now, out)
                return
            t.learner = None  # Pending or Unknown: try again later
        if t.learner is not None and _idle(t.learner):
            t.learner = None
        if t.learner is None and t.phase is _Phase.PREPARED:
            t.learn_at = now + max(1.0, min(10.0, self.timeouts.recovery_timeout))

    def _with_learn(self, token: Any, step: Callable[[Ready], None], now: float, out: Ready) -> None:
        learner = self._learns[token]
        replies = self._sub(step, out)
        if not replies and _idle(learner):
            replies = [(token, Pending(learner.txn_id))]
        for tok, msg in replies:
            out.reply(tok, msg)
            self._learns.pop(token, None)
        if token in self._learns:
            nd = learner.next_deadline()
            if nd is not None:
                self._deadlines.at(nd, ("learn", token))

    @staticmethod
    def _sub(step: Callable[[Ready], None], out: Ready) -> list[tuple[Any, Any]]:
        sub = Ready()
        step(sub)
        out.sends += sub.sends
        out.trace += sub.trace
        out.log += sub.log
        out.ballots += sub.ballots
        return sub.replies

    def _maybe_end(self, t: _Txn, out: Ready) -> None:
        if (
            t.phase is _Phase.APPLIED
            and (t.vote is None or t.vote.settled)
            and t.ack_settled
            and t.txn_id in self._txns
        ):
            del self._txns[t.txn_id]
            self._deadlines.discard(t.txn_id)
            out.effect(Ended(t.txn_id, t.state))
            # Per-transaction state only while live, plus a bounded cache of outcomes.
            self._finished[t.txn_id] = None
            while len(self._finished) > self.timeouts.keep_finished:
                old, _ = self._finished.popitem(last=False)
                if old not in self._txns:
                    self.states.pop(old, None)

    def _after(self, t: _Txn, out: Ready) -> None:
        """After every step of ``t``: end it if finished, else plan its next tick."""
        self._maybe_end(t, out)
        if t.txn_id not in self._txns:
            return
        nd = t.next_deadline()
        if nd is None or (t.scheduled is not None and t.scheduled <= nd):
            return  # nothing timed, or an earlier tick is planned (it plans again)
        t.scheduled = nd
        self._deadlines.at(nd, t.txn_id)


def _idle(learner: Learner) -> bool:
    """Decided, unknown, or gave up (no read, no ballot, nothing planned)."""
    return learner.recovery is None and not learner.reading and learner.next_read is None
