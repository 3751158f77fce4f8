"""A transaction's owner as a state machine: the registrar (paper section 6.2) and the
commit sequence that the paper gives the leader in the failure-free case.

Spec actions: ``Join``, ``Close`` (the registrar's ballot-0 2a with the joined set, or
"no set" to abort), the paper's Prepare, ``Decide`` over the acceptors' 2b bundles, and,
when votes are missing after the vote timeout, recovery ballots (:mod:`rm_sdk.core.leader`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rm_sdk.ballots import BallotSource, Tally
from rm_sdk.core.leader import Recovery, evaluate
from rm_sdk.core.messages import (
    AbortCause,
    AcceptorReply,
    Bundle,
    BundleRequest,
    Decided,
    Decision,
    Failed,
    NoAnswer,
    Pending,
    Phase2a,
    Phase2b,
    Prepare,
    RecordOutcome,
    Refused,
)
from rm_sdk.core.ready import Ready
from rm_sdk.protocol import (
    NO_SET,
    REGISTRAR,
    RM_BALLOT,
    ConflictError,
    NoSet,
    Outcome,
    ProtocolError,
    RMSet,
    bundle_complete,
    chosen,
    majority,
    validate_id,
)

__all__ = ["OwnerTimeouts", "Owner", "Registration", "RegistrationClosed"]


#: No deadline (the start value of a search for the earliest one).
_NEVER = float("inf")


class RegistrationClosed(ProtocolError):
    """A join after the registrar closed registration (paper section 6.2)."""

    status = "FAILED_PRECONDITION"


@dataclass
class Registration:
    """The registrar's soft state of one transaction: who joined, and whether it closed."""

    joined: set[str] = field(default_factory=set)
    closed: RMSet | None = None

    def join(self, rm: str) -> bool:
        """Spec ``Join``. Idempotent: a duplicated join changes nothing (returns False)."""
        validate_id("rm id", rm)
        if self.closed is not None:
            if rm in self.closed.rms:
                return False
            raise RegistrationClosed(f"registration closed; {rm!r} cannot join any more")
        if rm in self.joined:
            return False
        self.joined.add(rm)
        return True

    def close(self) -> RMSet:
        """Spec ``Close``: fix the participant set, the registrar's ballot-0 value."""
        if self.closed is None:
            self.closed = RMSet.of(self.joined)
        return self.closed


@dataclass(frozen=True)
class OwnerTimeouts:
    #: Votes missing this long after registration closed: run recovery ballots.
    vote_timeout: float = 5.0
    #: Commit not asked for this long after begin: abort.
    txn_timeout: float = 120.0
    #: An acceptor that has not answered a request this long is passed over for the next.
    answer_timeout: float = 1.0
    #: After the decision, how long the owner waits for every RM's acknowledgement before
    #: it records the outcome without them (pitfall 8: the acknowledgements ride on the
    #: outcome's record, one message per acceptor; later ones follow one by one).
    ack_wait: float = 2.0


class Owner:
    """One transaction owned by this coordinator replica (soft state only).

    The registrar's 2a goes to the first majority of acceptors, like an RM's vote (paper
    section 4), with a request for their 2b bundles; an acceptor that refuses, fails or
    stays silent for ``answer_timeout`` is replaced by the next at once, so with F acceptors
    down nothing waits for the vote timeout (pitfall 6: never trust the network)."""

    def __init__(
        self, txn_id: str, n_acceptors: int, now: float, timeouts: OwnerTimeouts, ballots: BallotSource
    ) -> None:
        self.txn_id = txn_id
        self.n = n_acceptors
        self.timeouts = timeouts
        self.ballots = ballots
        self.created = now
        self.registration = Registration()
        self.tally = Tally(n_acceptors)
        #: The registrar's ballot-0 value once registration closed (or was aborted).
        self.value: RMSet | NoSet | None = None
        self.known_set: RMSet | None = None
        self.closed_at = 0.0
        self.abort: Decision | None = None
        #: Acceptors asked for the registrar's value / that accepted it.
        self.asked: set[int] = set()
        self.accepted: set[int] = set()
        self.answer_deadline = 0.0
        self.recovery: Recovery | None = None
        self.decision: Decision | None = None
        self.commit_waiters: list[Any] = []
        self.prepare_waiters: dict[Any, tuple[str, float]] = {}
        self.outcome_waiters: dict[Any, float] = {}
        #: Set when the registrar instance chose a value this owner never proposed (a
        #: forged ballot-0 2a): it then never decides commit (see :meth:`_decide`).
        self.foreign: str | None = None
        #: After the decision: the RMs that must acknowledge it, those that did, when the
        #: owner stops waiting for them, whether the outcome went to the acceptors, and
        #: the commit callers waiting until every RM applied it.
        self.participants: frozenset[str] = frozenset()
        self.acked: set[str] = set()
        self.ack_deadline = 0.0
        self.recorded = False
        self.applied_waiters: list[Any] = []

    @property
    def closing(self) -> bool:
        return self.value is not None

    # ------------------------------------------------------------ requests

    def join(self, rm_id: str, out: Ready) -> None:
        if self.registration.join(rm_id):
            out.event("Join", self.txn_id, rm=rm_id)

    def _refuse_if_foreign(self) -> None:
        if self.foreign is not None:
            raise ConflictError(
                f"transaction {self.txn_id}: {self.foreign}; this coordinator will not decide it"
            )

    def await_prepare(self, token: Any, rm_id: str, wait: float, now: float, out: Ready) -> None:
        self._refuse_if_foreign()
        reg = self.registration
        if rm_id not in reg.joined and not (reg.closed is not None and rm_id in reg.closed.rms):
            raise RegistrationClosed(f"resource manager {rm_id!r} has not joined transaction {self.txn_id}")
        if self.decision is not None:
            out.reply(token, self._decided_to_rm())
        elif self.known_set is not None and rm_id in self.known_set.rms:
            out.reply(token, Prepare(self.txn_id, rm_id))
        else:
            # Not closed yet, or closed without this RM (aborted): Prepare or the outcome
            # answers it, or the wait ends.
            self.prepare_waiters[token] = (rm_id, now + wait)

    def ask(self, token: Any, wait: float, now: float, out: Ready) -> None:
        """An outcome question: answered at the decision, or PENDING after ``wait``."""
        self._refuse_if_foreign()
        if self.decision is not None:
            out.reply(token, self._decided_to_rm())
        elif wait <= 0:
            out.reply(token, Pending(self.txn_id))
        else:
            self.outcome_waiters[token] = now + wait

    def commit(self, token: Any, now: float, out: Ready, *, wait_applied: bool = False) -> None:
        self._refuse_if_foreign()
        if wait_applied and not self.recorded:
            self.applied_waiters.append(token)
        else:
            self.commit_waiters.append(token)
        if self.decision is not None:
            self._answer(out)
        elif not self.closing:
            self._close(None, now, out)

    def acknowledge(self, rm_id: str, now: float, out: Ready) -> None:
        """Spec ``RMAck``: ``rm_id`` applied the outcome durably. Once every participant
        did, the outcome is recorded with them (the acceptors may then collect the
        transaction); after the record, each late one is passed on alone."""
        if rm_id in self.acked:
            return
        self.acked.add(rm_id)  # before the decision: an RM that aborted on its own
        if self.decision is None:
            return
        if self.recorded:
            for i in range(self.n):
                out.send(i, RecordOutcome(self.txn_id, self.decision.outcome, None, frozenset({rm_id})))
        elif self.participants <= self.acked:
            self._record(out)

    def abort_requested(self, token: Any, reason: str, now: float, out: Ready, rm_id: str = "") -> None:
        """The application's abort, or (``rm_id``) a joined RM's refusal before it
        prepared: either may end the transaction while registration is open."""
        self._refuse_if_foreign()
        if rm_id and rm_id not in self.registration.joined:
            raise RegistrationClosed(f"resource manager {rm_id!r} has not joined transaction {self.txn_id}")
        self.commit_waiters.append(token)
        if self.decision is not None:
            self._answer(out)
        elif not self.closing:
            if rm_id:
                why = reason or f"resource manager {rm_id!r} voted to abort"
                abort = Decision(Outcome.ABORTED, AbortCause.RM_REFUSED, rm_id, why)
            else:
                abort = Decision(
                    Outcome.ABORTED, AbortCause.APPLICATION, reason=reason or "aborted by the application"
                )
            self._close(abort, now, out)

    # ------------------------------------------------------------ the commit sequence

    def _close(self, abort: Decision | None, now: float, out: Ready) -> None:
        """Spec ``Close`` (or the owner's own abort): the registrar's ballot-0 2a."""
        self.closed_at = now
        self.abort = abort
        if abort is None:
            self.value = self.known_set = self.registration.close()
            out.event("Close", self.txn_id, set=sorted(self.known_set.rms))
            # The paper's Prepare: the RMs vote while the registrar's 2a is in flight.
            for token, (rm, _) in list(self.prepare_waiters.items()):
                if rm in self.known_set.rms:
                    out.reply(token, Prepare(self.txn_id, rm))
                    del self.prepare_waiters[token]
        else:
            self.registration.closed = RMSet.of(())  # later joins fail
            self.value = NO_SET
            out.event("ApplicationAbort", self.txn_id)
        self._ask(list(range(majority(self.n))), now, out)

    def _ask(self, targets: list[int], now: float, out: Ready) -> None:
        assert self.value is not None
        wait = max(0.0, self.closed_at + self.timeouts.vote_timeout - now)
        # One message object for every target: the driver converts it to the wire once.
        twoa = Phase2a(self.txn_id, RM_BALLOT, {REGISTRAR: self.value})
        bundle = BundleRequest(self.txn_id, wait)
        for i in targets:
            self.asked.add(i)
            out.send(i, twoa)
            out.send(i, bundle)
        self.answer_deadline = now + self.timeouts.answer_timeout

    def _widen(self, now: float, out: Ready, *, again: bool = False) -> None:
        """Too few acceptors took the registrar's value: ask the ones not asked yet; with
        ``again`` (only at the answer deadline, so a down acceptor's instant failures
        cannot make a busy loop), ask again those that did not take it."""
        fresh = [i for i in range(self.n) if i not in self.asked]
        if not fresh and again:
            fresh = [i for i in range(self.n) if i not in self.accepted]
        if fresh:
            self._ask(fresh, now, out)

    def on_reply(self, msg: AcceptorReply, now: float, out: Ready) -> None:
        if self.decision is not None or self.foreign is not None:
            return
        if self.recovery is not None:
            self.recovery.on_reply(msg, now, out)
            if self.recovery.decision is not None:
                self._decide(self.recovery.decision, now, out)
            return
        if isinstance(msg, (Phase2b, Bundle)):
            self.tally.add(msg.acceptor, msg.states)
        if isinstance(msg, Phase2b) and msg.outcome is Outcome.PENDING:
            st = msg.states.get(REGISTRAR)
            if st is not None and st.bal == RM_BALLOT and st.val == self.value:
                self.accepted.add(msg.acceptor)
        elif isinstance(msg, (Bundle, Phase2b)) and msg.outcome is not Outcome.PENDING:
            contradicted = self._contradicts(msg.outcome)
            if contradicted is None:
                self._decide(Decision.recorded(msg.outcome), now, out)
                return
            # A record that contradicts what the acceptors chose is not a decision (only a
            # forged one can): decide from the votes instead.
            out.log.append(
                (self.txn_id, f"acceptor {msg.acceptor} recorded {msg.outcome.value}: {contradicted}")
            )
        elif isinstance(msg, Refused):
            out.log.append((self.txn_id, f"acceptor {msg.acceptor} refused: {msg.detail}"))
        d = evaluate(self.tally, self.known_set)
        if d is not None:
            self._decide(d, now, out)
            return
        short = len(self.accepted) < majority(self.n)
        if (isinstance(msg, (NoAnswer, Refused)) and short) or (
            isinstance(msg, NoAnswer) and isinstance(msg.request, BundleRequest)
        ):
            self._widen(now, out)
        elif (
            isinstance(msg, Bundle)
            and not bundle_complete(msg.states)
            and now < self.closed_at + self.timeouts.vote_timeout
        ):
            # The acceptor's wait ended first: ask it again for the rest of the vote timeout.
            # (A complete bundle is all that acceptor can give: asking again would be
            # answered at once, again and again, while another acceptor is silent.)
            wait = self.closed_at + self.timeouts.vote_timeout - now
            out.send(msg.acceptor, BundleRequest(self.txn_id, wait))

    def _contradicts(self, outcome: Outcome) -> str | None:
        """Why a recorded ``outcome`` cannot be this transaction's, or None: a commit when
        the acceptors chose an abort (an RM's, or "no set"), or another participant set."""
        if outcome is not Outcome.COMMITTED:
            return None
        d = evaluate(self.tally, self.known_set)
        if d is not None and d.outcome is Outcome.ABORTED:
            return f"the acceptors chose abort ({d.reason})"
        reg = chosen(self.tally.reports, self.n).get(REGISTRAR)
        if reg is not None and self.value is not None and reg != self.value:
            return "the registrar instance chose a set this coordinator did not propose"
        return None

    def tick(self, now: float, out: Ready) -> None:
        if self.foreign is not None:
            return
        for token, (rm, deadline) in list(self.prepare_waiters.items()):
            if now >= deadline:
                out.reply(token, Prepare(self.txn_id, rm, prepare=False))
                del self.prepare_waiters[token]
        for token, deadline in list(self.outcome_waiters.items()):
            if now >= deadline:
                out.reply(token, Pending(self.txn_id))
                del self.outcome_waiters[token]
        if self.decision is not None:
            if not self.recorded and now >= self.ack_deadline:
                missing = sorted(self.participants - self.acked)
                out.log.append((self.txn_id, f"not acknowledged by {', '.join(missing)}: recorded without"))
                self._record(out)
            return
        if not self.closing:
            if now >= self.created + self.timeouts.txn_timeout:
                out.log.append(
                    (self.txn_id, f"not committed within {self.timeouts.txn_timeout:.0f}s: aborting")
                )
                self._close(
                    Decision(Outcome.ABORTED, AbortCause.TXN_TIMEOUT, reason="transaction timeout"), now, out
                )
            return
        if self.recovery is not None:
            self.recovery.tick(now, out)
            if self.recovery.decision is not None:
                self._decide(self.recovery.decision, now, out)
            return
        if now >= self.closed_at + self.timeouts.vote_timeout:
            out.log.append(
                (
                    self.txn_id,
                    f"votes missing after {self.timeouts.vote_timeout:.1f}s: running recovery ballots",
                )
            )
            self.recovery = Recovery(
                self.txn_id,
                self.ballots,
                self.tally,
                self.known_set,
                answer_timeout=self.timeouts.answer_timeout,
            )
            self.recovery.start(now, out)
            if self.recovery.decision is not None:
                self._decide(self.recovery.decision, now, out)
            return
        if now >= self.answer_deadline and len(self.accepted) < majority(self.n):
            self._widen(now, out, again=True)

    def retry(self, now: float, out: Ready) -> str:
        """An operator's "recover now" (``paxos-commit txn retry``): start the recovery
        ballots the vote timeout would start, or end a failed ballot's back-off. Safe at
        any time (higher ballots never change a chosen value); returns what it did."""
        if self.decision is not None:
            return f"already decided: {self.decision.outcome.value}"
        if not self.closing:
            return "registration is open (the application has not asked to commit): nothing to recover"
        if self.recovery is None:
            out.log.append((self.txn_id, "retry asked: running recovery ballots now"))
            self.recovery = Recovery(
                self.txn_id,
                self.ballots,
                self.tally,
                self.known_set,
                answer_timeout=self.timeouts.answer_timeout,
            )
            self.recovery.start(now, out)
            if self.recovery.decision is not None:
                self._decide(self.recovery.decision, now, out)
            return "recovery ballots started by the owner"
        return self.recovery.wake(now, out)

    def next_deadline(self) -> float | None:
        if self.foreign is not None:
            return None
        # The earliest of everything timed (computed on every step: no lists built).
        best = _NEVER
        for _, d in self.prepare_waiters.values():
            if d < best:
                best = d
        for d in self.outcome_waiters.values():
            if d < best:
                best = d
        if self.decision is not None:
            if not self.recorded and self.ack_deadline < best:
                best = self.ack_deadline
        elif not self.closing:
            best = min(best, self.created + self.timeouts.txn_timeout)
        elif self.recovery is not None:
            nd = self.recovery.next_deadline()
            if nd is not None and nd < best:
                best = nd
        else:
            best = min(best, self.closed_at + self.timeouts.vote_timeout)
            if len(self.accepted) < majority(self.n) and self.answer_deadline < best:
                best = self.answer_deadline
        return None if best == _NEVER else best

    # ------------------------------------------------------------ the decision

    def _decide(self, d: Decision, now: float, out: Ready) -> None:
        if d.outcome is Outcome.COMMITTED and self.abort is None:
            # Defence in depth: commit only on the set this owner proposed. Another value
            # at ballot 0 of the registrar (someone else's 2a, e.g. a forged empty set)
            # could commit without the joined RMs' votes.
            reg = chosen(self.tally.reports, self.n).get(REGISTRAR)
            if reg is not None and reg != self.value:
                self._foreign(f"the registrar instance chose {_show(reg)}, not {_show(self.value)}", out)
                return
        if self.abort is not None and d.outcome is Outcome.ABORTED:
            d = self.abort  # the owner's own abort: keep its cause and reason
        self.decision = d
        out.event("Decide", self.txn_id, outcome=d.outcome.value)
        out.decided.append((self.txn_id, d, now - self.closed_at))
        if d.outcome is not Outcome.COMMITTED:
            # An abort's cause is for the operator. A commit is the normal case: it is in
            # ``decided`` (the driver logs it at debug level), not a line per transaction.
            out.log.append((self.txn_id, f"{d.outcome.value} {d.reason}".rstrip()))
        self._answer(out)
        for token in list(self.prepare_waiters):
            out.reply(token, self._decided_to_rm())
        self.prepare_waiters.clear()
        # The registrar's set, or on an abort every RM that joined (any may have acted).
        if self.known_set is not None:
            self.participants = frozenset(self.known_set.rms)
        else:
            self.participants = frozenset(self.registration.joined)
        self.ack_deadline = now + self.timeouts.ack_wait
        if self.participants <= self.acked or self.timeouts.ack_wait <= 0:
            self._record(out)

    def _record(self, out: Ready) -> None:
        """The outcome to every acceptor, with the participants and their acks."""
        assert self.decision is not None
        self.recorded = True
        acked = frozenset(self.acked)
        record = RecordOutcome(self.txn_id, self.decision.outcome, self.participants, acked)
        for i in range(self.n):
            out.send(i, record)
        applied = self.participants <= self.acked
        for token in self.applied_waiters:
            out.reply(token, Decided(self.txn_id, self.decision, applied=applied))
        self.applied_waiters.clear()

    def _foreign(self, why: str, out: Ready) -> None:
        """Someone else's registrar value was chosen: refuse to decide (every commit and
        outcome question fails), and say so loudly; an operator must look."""
        self.foreign = why
        out.log.append((self.txn_id, f"REFUSING TO DECIDE: {why} (a forged registrar 2a?)"))
        err = ConflictError(f"transaction {self.txn_id}: {why}; this coordinator will not decide it")
        for token in [*self.commit_waiters, *self.outcome_waiters, *self.prepare_waiters]:
            out.reply(token, Failed(self.txn_id, err))
        self.commit_waiters.clear()
        self.outcome_waiters.clear()
        self.prepare_waiters.clear()

    def _answer(self, out: Ready) -> None:
        assert self.decision is not None
        for token in self.commit_waiters:
            out.reply(token, Decided(self.txn_id, self.decision))
        for token in self.outcome_waiters:
            out.reply(token, self._decided_to_rm())
        self.commit_waiters.clear()
        self.outcome_waiters.clear()

    def _decided_to_rm(self) -> Decided:
        """The outcome for a question that may be an RM's: it says whether a commit caller
        waits for the acknowledgements (then the RM sends its own at once)."""
        assert self.decision is not None
        return Decided(self.txn_id, self.decision, ack_awaited=bool(self.applied_waiters))


def _show(v: object) -> str:
    if isinstance(v, RMSet):
        return "set{" + ",".join(sorted(v.rms)[:8]) + (",..." if len(v.rms) > 8 else "") + "}"
    return "no set" if v is NO_SET else "nothing"
