"""The leader as a state machine: the decision over what acceptors reported, and
recovery ballots (spec ``Phase1a``, ``Phase2a`` at ballots > 0, and ``Decide``).

Used by a transaction's owner (votes missing after its vote timeout), by other
coordinator replicas (a transaction whose owner died) and by resource managers that no
coordinator answers. Safe with any number of concurrent leaders: ballots come from one
:class:`~rm_sdk.ballots.BallotSource` per leader incarnation (pitfall 2), free instances
get ``aborted`` / "no set" (pitfall 4), and each acceptor is counted once (pitfall 6).
"""

from __future__ import annotations

import enum
import zlib

from rm_sdk.ballots import ADMIN_LEADER_PREFIX, BallotRun, BallotSource, Tally, instances_to_recover
from rm_sdk.core.messages import (
    AbortCause,
    AcceptorReply,
    Bundle,
    Decision,
    NoAnswer,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    Refused,
)
from rm_sdk.core.ready import Ready, trace_ballot, trace_value
from rm_sdk.protocol import (
    NO_BALLOT,
    NO_SET,
    REGISTRAR,
    RM_BALLOT,
    Instance,
    Outcome,
    RMSet,
    Value,
    Vote,
    chosen,
    decide,
)

__all__ = ["Recovery", "RecoveryPhase", "backoff", "evaluate"]


def evaluate(tally: Tally, known_set: RMSet | None) -> Decision | None:
    """Spec ``Decide`` over a leader's tally: the decision if what is chosen decides the
    transaction, else None. ``known_set``: the registrar's ballot-0 set, if known."""
    values = chosen(tally.reports, tally.n_acceptors)
    s = known_set or tally.known_set()
    outcome, _ = decide(values, s)
    if outcome is Outcome.PENDING:
        return None
    if outcome is Outcome.COMMITTED:
        return Decision(Outcome.COMMITTED)
    return _explain_abort(tally, values, s)


def _explain_abort(tally: Tally, values: dict[Instance, Value], s: RMSet | None) -> Decision:
    """Who caused an abort: an instance owner's own ballot-0 value, or a recovery ballot."""

    def by_owner(ins: Instance) -> bool:
        return any(
            st.get(ins) is not None and st[ins].bal == RM_BALLOT and st[ins].val == values.get(ins)
            for st in tally.reports.values()
        )

    def by_admin(ins: Instance) -> str:
        """The operator whose ballot chose the value of ``ins`` ("" if none did)."""
        for st in tally.reports.values():
            s = st.get(ins)
            if s is not None and s.val == values.get(ins) and s.bal.leader.startswith(ADMIN_LEADER_PREFIX):
                return s.bal.leader
        return ""

    if values.get(REGISTRAR) is NO_SET:
        if by_owner(REGISTRAR):
            return Decision(
                Outcome.ABORTED,
                AbortCause.APPLICATION,
                reason="aborted before commit (by the application or the transaction timeout)",
            )
        admin = by_admin(REGISTRAR)
        if admin:
            return Decision(
                Outcome.ABORTED,
                AbortCause.OPERATOR,
                reason=f"settled by an operator ({admin}) before registration closed",
            )
        return Decision(
            Outcome.ABORTED,
            AbortCause.COORDINATOR_FAILED,
            reason="the owning coordinator failed before registration closed",
        )
    for rm in sorted(s.rms if s else ()):
        if values.get(rm) is Vote.ABORTED:
            if by_owner(rm):
                return Decision(
                    Outcome.ABORTED, AbortCause.RM_REFUSED, rm, f"resource manager {rm!r} voted to abort"
                )
            admin = by_admin(rm)
            if admin:
                return Decision(
                    Outcome.ABORTED,
                    AbortCause.OPERATOR,
                    rm,
                    f"settled by an operator ({admin}): resource manager {rm!r} had not voted",
                )
            return Decision(
                Outcome.ABORTED, AbortCause.VOTE_TIMEOUT, rm, f"resource manager {rm!r} did not vote in time"
            )
    return Decision(Outcome.ABORTED, AbortCause.UNKNOWN, reason="aborted")


def backoff(leader: str, txn_id: str, attempt: int, cap: float = 2.0) -> float:
    """Seconds to wait before ballot ``attempt + 1``: exponential, capped, with a jitter
    that differs between leaders (their ids are fresh per incarnation) so that dueling
    leaders drift apart, yet is deterministic (no randomness in the core)."""
    jitter = (zlib.crc32(f"{leader}/{txn_id}/{attempt}".encode()) % 1000) / 1000.0
    return min(cap, 0.05 * 2.0**attempt) * (0.5 + jitter)


class RecoveryPhase(enum.Enum):
    PHASE1 = "phase1"  # 1a's sent, collecting 1b's
    PHASE2 = "phase2"  # 2a's sent, collecting 2b's
    BACKOFF = "backoff"  # the last ballot failed; the next starts at the deadline
    DONE = "done"  # decided
    GAVE_UP = "gave_up"  # max_attempts ballots failed


class Recovery:
    """Higher ballots on every undecided instance of one transaction until it is decided.

    Feed it every acceptor reply about the transaction (:meth:`on_reply`) and ticks
    (:meth:`tick`); ``decision`` is set once decided. A ballot that gets no majority within
    ``answer_timeout`` (acceptors down, messages lost) or meets a higher ballot is
    abandoned, and after a back-off a higher one starts (which also resends everything).
    """

    def __init__(
        self,
        txn_id: str,
        ballots: BallotSource,
        tally: Tally,
        known_set: RMSet | None,
        *,
        answer_timeout: float,
        max_attempts: int | None = None,
    ) -> None:
        self.txn_id = txn_id
        self.ballots = ballots
        self.tally = tally
        self.known_set = known_set
        self.answer_timeout = answer_timeout
        self.max_attempts = max_attempts
        self.phase = RecoveryPhase.BACKOFF
        self.deadline = 0.0
        self.attempt = 0
        self.run: BallotRun | None = None
        self.highest = NO_BALLOT
        self.decision: Decision | None = None
        self._covered: set[Instance] = set()

    @property
    def n(self) -> int:
        return self.tally.n_acceptors

    def start(self, now: float, out: Ready) -> None:
        self._ballot(now, out)

    def _ballot(self, now: float, out: Ready) -> None:
        if self._check_decided():
            return
        if self.max_attempts is not None and self.attempt >= self.max_attempts:
            self.phase = RecoveryPhase.GAVE_UP
            return
        instances = instances_to_recover(self.tally, self.known_set)
        decided = chosen(self.tally.reports, self.n)
        ballot = self.ballots.next(self.highest)
        self.run = BallotRun(ballot, instances, self.n)
        self._covered = instances | set(decided)
        self.phase = RecoveryPhase.PHASE1
        self.deadline = now + self.answer_timeout
        out.ballots += 1
        ins = tuple(sorted(instances))
        out.event("Phase1a", self.txn_id, leader=self.ballots.leader, bal=trace_ballot(ballot), ins=list(ins))
        for i in range(self.n):
            out.send(i, Phase1a(self.txn_id, ballot, ins))

    def _check_decided(self) -> bool:
        if self.decision is None:
            self.decision = evaluate(self.tally, self.known_set)
        if self.decision is not None:
            self.phase = RecoveryPhase.DONE
            return True
        return False

    def _fail(self, now: float) -> None:
        """This ballot cannot finish: back off, then a higher one."""
        assert self.run is not None
        self.highest = max(self.highest, self.run.highest_seen, self.run.ballot)
        self.phase = RecoveryPhase.BACKOFF
        self.deadline = now + backoff(self.ballots.leader, self.txn_id, self.attempt)
        self.attempt += 1

    def on_reply(self, msg: AcceptorReply, now: float, out: Ready) -> None:
        """An acceptor's reply about this transaction (from any ballot, any request)."""
        if self.phase in (RecoveryPhase.DONE, RecoveryPhase.GAVE_UP):
            return
        if isinstance(msg, (Phase1b, Phase2b, Bundle)):
            self.tally.add(msg.acceptor, msg.states)
            if msg.outcome is not Outcome.PENDING and self.decision is None:
                # A recorded outcome (a collected acceptor answers only from its record).
                self.decision = Decision.recorded(msg.outcome)
        if self._check_decided():
            return
        run = self.run
        if run is None or isinstance(msg, (NoAnswer, Refused)):
            return
        if self.phase is RecoveryPhase.PHASE1 and isinstance(msg, Phase1b):
            run.on_phase1b(msg.acceptor, msg.states)
            s = self.tally.known_set()
            if s is not None and not s.rms <= self._covered:
                # The set names instances this ballot did not cover: widen it at once.
                self.highest = max(self.highest, run.highest_seen, run.ballot)
                self._ballot(now, out)
                return
            if run.preempted:
                self._fail(now)
                return
            proposals = run.proposals()
            if proposals is not None:
                self._phase2a(proposals, now, out)
        elif (
            self.phase is RecoveryPhase.PHASE2
            and isinstance(msg, Phase2b)
            and any(st.mbal > run.ballot for st in msg.states.values())
        ):
            run.highest_seen = max(run.highest_seen, *(st.mbal for st in msg.states.values()))
            self._fail(now)

    def _phase2a(self, proposals: dict[Instance, Value], now: float, out: Ready) -> None:
        assert self.run is not None
        ballot = self.run.ballot
        self.phase = RecoveryPhase.PHASE2
        self.deadline = now + self.answer_timeout
        shown = ", ".join(f"{i}={trace_value(v)}" for i, v in sorted(proposals.items()))
        out.log.append((self.txn_id, f"ballot {ballot} proposes {shown}"))
        out.event(
            "Phase2a", self.txn_id, leader=self.ballots.leader, bal=trace_ballot(ballot),
            prop=[{"ins": i, "val": trace_value(v)} for i, v in sorted(proposals.items())],
        )  # fmt: skip
        for i in range(self.n):
            out.send(i, Phase2a(self.txn_id, ballot, dict(proposals)))

    def tick(self, now: float, out: Ready) -> None:
        if self.phase in (RecoveryPhase.DONE, RecoveryPhase.GAVE_UP) or now < self.deadline:
            return
        if self.phase is RecoveryPhase.BACKOFF:
            self._ballot(now, out)
        else:
            self._fail(now)

    def next_deadline(self) -> float | None:
        if self.phase in (RecoveryPhase.DONE, RecoveryPhase.GAVE_UP):
            return None
        return self.deadline

    def wake(self, now: float, out: Ready) -> str:
        """An operator's "recover now": a ballot backing off starts at once (one in phase 1
        or 2 is left to finish); returns what it did."""
        if self.phase is RecoveryPhase.BACKOFF:
            self._ballot(now, out)
            return "back-off ended: next ballot started"
        if self.phase is RecoveryPhase.DONE:
            return "already decided"
        if self.phase is RecoveryPhase.GAVE_UP:
            self.attempt = 0
            self._ballot(now, out)
            return "had given up: ballots started again"
        return f"ballot {self.run.ballot if self.run else '?'} in {self.phase.value}: left to finish"
