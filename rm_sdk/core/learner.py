"""Learning the outcome of a transaction this process does not own (paper section 4: any
leader may finish a transaction), as a state machine.

It reads every acceptor's 2b bundle (and recorded outcome). If that decides nothing and
the transaction has been known for ``recovery_timeout`` (pitfall 9: its owner had time to
finish it), it runs recovery ballots (:class:`rm_sdk.core.leader.Recovery`). A transaction
that a majority of acceptors never heard of is unknown: nothing can have been chosen, and
the learner creates no state for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rm_sdk.ballots import BallotSource, Tally
from rm_sdk.core.leader import Recovery, evaluate
from rm_sdk.core.messages import (
    AcceptorReply,
    Bundle,
    BundleRequest,
    Decided,
    Decision,
    Pending,
    Unknown,
)
from rm_sdk.core.ready import Ready
from rm_sdk.protocol import Outcome, majority

__all__ = ["Learner", "LearnerTimeouts"]


@dataclass(frozen=True)
class LearnerTimeouts:
    #: Known this long by the acceptors (or asked about this long): take it over.
    recovery_timeout: float = 10.0
    #: How long to wait for the acceptors' answers to one read.
    answer_timeout: float = 1.0
    #: Give up recovering after this many failed ballots (asked again, it starts afresh).
    max_attempts: int = 20


class Learner:
    """One transaction being learned. ``first_asked``: when this process first asked."""

    def __init__(
        self,
        txn_id: str,
        n_acceptors: int,
        now: float,
        timeouts: LearnerTimeouts,
        ballots: BallotSource,
        *,
        first_asked: float | None = None,
        recover: bool = True,
    ) -> None:
        self.txn_id = txn_id
        self.n = n_acceptors
        self.timeouts = timeouts
        self.ballots = ballots
        self.first_asked = now if first_asked is None else first_asked
        #: Whether this learner may run ballots (False: only read what acceptors say).
        self.may_recover = recover
        self.tally = Tally(n_acceptors)
        self.waiters: dict[Any, float] = {}
        self.replied: set[int] = set()
        self.max_age_ms = 0
        self.reading = False
        self.read_deadline = 0.0
        self.next_read: float | None = None
        self.recovery: Recovery | None = None
        self.decision: Decision | None = None
        #: Set when a majority of acceptors never heard of the transaction.
        self.unknown = False
        #: Whether the decision came from this learner's own evaluation or ballots (so
        #: it is to be recorded on the acceptors), not from a record.
        self.decided_here = False
        #: Learned from a collected record: every RM of the set acknowledged the outcome.
        self.all_acked = False
        #: The acknowledgements the acceptors' bundles reported (passed on with the record),
        #: and the registrar's set one of them recorded with the outcome.
        self.acked: set[str] = set()
        self.participants: frozenset[str] | None = None

    @property
    def finished(self) -> bool:
        """Nothing more to do: decided, found unknown, or idle with nobody asking."""
        if self.decision is not None or self.unknown:
            return True
        return not self.waiters and self.recovery is None and not self.reading and self.next_read is None

    def ask(self, token: Any, wait: float, now: float, out: Ready) -> None:
        if self.decision is not None:
            out.reply(token, Decided(self.txn_id, self.decision))
            return
        self.waiters[token] = now + wait
        if not self.reading and self.recovery is None:
            self.read(now, out)

    def read(self, now: float, out: Ready) -> None:
        self.reading = True
        self.next_read = None
        self.replied = set()
        self.max_age_ms = 0
        self.read_deadline = now + self.timeouts.answer_timeout
        for i in range(self.n):
            out.send(i, BundleRequest(self.txn_id, 0.0))

    def on_reply(self, msg: AcceptorReply, now: float, out: Ready) -> None:
        if self.decision is not None or self.unknown:
            return
        if self.recovery is not None:
            self.recovery.on_reply(msg, now, out)
            if self.recovery.decision is not None:
                self._decided(self.recovery.decision, True, now, out)
            return
        if not isinstance(msg, Bundle):
            return
        self.acked |= msg.acked
        if msg.participants is not None and self.participants is None:
            self.participants = msg.participants
        self.tally.add(msg.acceptor, msg.states)
        if msg.outcome is not Outcome.PENDING:
            self.all_acked = msg.collected
            self._decided(Decision.recorded(msg.outcome), False, now, out)
            return
        d = evaluate(self.tally, None)
        if d is not None:
            self._decided(d, True, now, out)
            return
        if not self.reading:
            return
        self.replied.add(msg.acceptor)
        self.max_age_ms = max(self.max_age_ms, msg.age_ms)
        if len(self.replied) == self.n:
            self._read_done(now, out)

    def _read_done(self, now: float, out: Ready) -> None:
        self.reading = False
        if len(self.replied) >= majority(self.n) and not self.tally.instances() and self.max_age_ms == 0:
            # A majority never heard of it: nothing can have been chosen; invent no state.
            self.unknown = True
            for token in self.waiters:
                out.reply(token, Unknown(self.txn_id, "no coordinator or acceptor knows it"))
            self.waiters.clear()
            return
        age = max(self.max_age_ms / 1000.0, now - self.first_asked)
        if (
            self.may_recover
            and age >= self.timeouts.recovery_timeout
            and len(self.replied) >= majority(self.n)
        ):
            out.log.append((self.txn_id, f"undecided for {age:.1f}s: recovering"))
            self.recovery = Recovery(
                self.txn_id,
                self.ballots,
                self.tally,
                None,
                answer_timeout=self.timeouts.answer_timeout,
                max_attempts=self.timeouts.max_attempts,
            )
            self.recovery.start(now, out)
            if self.recovery.decision is not None:
                self._decided(self.recovery.decision, True, now, out)
            return
        if self.waiters:
            wait = self.timeouts.recovery_timeout - age if self.may_recover else 1.0
            self.next_read = now + max(0.05, min(wait, 1.0))

    def _decided(self, d: Decision, here: bool, now: float, out: Ready) -> None:
        self.decision = d
        self.decided_here = here
        self.reading = False
        self.next_read = None
        # Whatever this process learned it announces (to the RMs asking): a Decide step.
        out.event("Decide", self.txn_id, outcome=d.outcome.value)
        for token in self.waiters:
            out.reply(token, Decided(self.txn_id, d))
        self.waiters.clear()

    def tick(self, now: float, out: Ready) -> None:
        for token, deadline in list(self.waiters.items()):
            # Not before the first read is in: an unknown id is NOT_FOUND whatever the wait.
            if now >= deadline and not self.reading:
                out.reply(token, Pending(self.txn_id))
                del self.waiters[token]
        if self.decision is not None or self.unknown:
            return
        if self.recovery is not None:
            self.recovery.tick(now, out)
            if self.recovery.decision is not None:
                self._decided(self.recovery.decision, True, now, out)
            elif self.recovery.next_deadline() is None:
                self.recovery = None  # gave up; asked again, it starts afresh
            return
        if self.reading and now >= self.read_deadline:
            self._read_done(now, out)
        elif self.next_read is not None and now >= self.next_read:
            self.read(now, out)

    def retry(self, now: float, out: Ready) -> str:
        """An operator's "recover now": treat the transaction as abandoned at once (not
        after ``recovery_timeout``; pitfall 9's wait protects progress, not safety), read
        the acceptors and run ballots if that decides nothing. Returns what it did."""
        if self.decision is not None:
            return f"already decided: {self.decision.outcome.value}"
        self.first_asked = min(self.first_asked, now - self.timeouts.recovery_timeout)
        self.may_recover = True
        self.unknown = False
        if self.recovery is not None:
            return self.recovery.wake(now, out)
        if not self.reading:
            self.read(now, out)
        return "reading the acceptors; recovery ballots follow if that decides nothing"

    def next_deadline(self) -> float | None:
        times = [] if self.reading else list(self.waiters.values())
        if self.decision is None and not self.unknown:
            if self.recovery is not None:
                nd = self.recovery.next_deadline()
                if nd is not None:
                    times.append(nd)
            elif self.reading:
                times.append(self.read_deadline)
            elif self.next_read is not None:
                times.append(self.next_read)
        return min(times) if times else None
