"""Seeded simulation of Paxos Commit on the real core (DESIGN.md section 4, "Simulation").

What runs is the code the services run: every coordinator replica is a
:class:`rm_sdk.core.coordinator.CoordinatorNode` (a crash drops it, a restart makes a new
one with a fresh leader id), every resource-manager process is a
:class:`rm_sdk.core.participant.ParticipantCore` (one per process, for all its
transactions; a crash drops it, the restarted process resumes what its resource holds as
prepared and abandons the rest), every acceptor runs the pure handlers of
:mod:`acceptor.core` over durable :class:`~acceptor.core.TxnRecord`'s (a crash keeps
them). This module owns only what is not the protocol: the network (loss, duplication,
reordering, partitions), the transport's give-up (:class:`~rm_sdk.core.messages.NoAnswer`
when a call can no longer be answered, ``Unreachable`` for an RM's coordinator call), a
simulated clock that the scheduler advances to the next deadline, the application, the
resources behind the RMs (their prepare, commit and abort, which may refuse or fail),
faults, and the safety checks (:data:`PROPERTIES`) after every step. :class:`RMProcess`
plays the part of ``rm_sdk.participant.Participant``, the service's driver of the same
core, with simulated time and network.

Deterministic: one ``random.Random(seed)`` makes every choice; no clock, threads or
asyncio. Each seed also scales every kind of fault and timeout differently (swarm
testing). After the faulty phase a quiescent phase (no faults, one live coordinator,
every message delivered) checks that every RM that joined ends committed or aborted.
:data:`MUTATIONS` seed bugs into the real core (patched for one run only).

Usage::

    python -m tests.sim.simulator --seed 17 [--verbose]
    python -m tests.sim.simulator --seeds 0:1000 [--mutation free_prepared]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final

import rm_sdk.core.coordinator as core_coordinator
import rm_sdk.core.leader as core_leader
import rm_sdk.core.learner as core_learner
import rm_sdk.core.owner as core_owner
import rm_sdk.core.participant as core_participant
from acceptor import core as acceptor_core
from acceptor.core import TxnRecord
from rm_sdk.ballots import BallotRun, BallotSource, Tally, next_ballot
from rm_sdk.core.coordinator import CoordinatorNode, CoordinatorTimeouts
from rm_sdk.core.learner import LearnerTimeouts
from rm_sdk.core.messages import (
    Abort,
    Acknowledged,
    AskOutcome,
    AwaitPrepare,
    Begin,
    Bundle,
    BundleRequest,
    Commit,
    Decided,
    Decision,
    Failed,
    Join,
    Joined,
    NoAnswer,
    OutcomeRecorded,
    Pending,
    Phase1a,
    Phase1b,
    Phase2a,
    Phase2b,
    Prepare,
    RecordOutcome,
    Refused,
    Unknown,
)
from rm_sdk.core.owner import OwnerTimeouts
from rm_sdk.core.participant import (
    Applied,
    CallCoordinator,
    CallResource,
    CoordinatorReply,
    Ended,
    ParticipantCore,
    ParticipantTimeouts,
    ResourceOp,
    RMState,
    Unreachable,
)
from rm_sdk.core.ready import Ready
from rm_sdk.protocol import (
    REGISTRAR,
    RM_BALLOT,
    Ballot,
    ConflictError,
    Instance,
    InstanceState,
    NoValue,
    Outcome,
    RMSet,
    Value,
    Vote,
    chosen,
    decide,
    majority,
)

__all__ = [
    "MUTATIONS",
    "PROPERTIES",
    "Config",
    "RMProcess",
    "Result",
    "SimulationFailure",
    "Sweep",
    "main",
    "run_seed",
    "show",
    "sweep",
]

#: The properties checked. A failure names one of these keys.
PROPERTIES: Final[dict[str, str]] = {
    "P1": "TC consistency: no RM committed while another aborted",
    "P2": "at most one value is ever chosen per instance",
    "P3": "every coordinator decision is the same outcome, the one the chosen values give",
    "P4": "an RM commits only if every member of the registrar's chosen set chose prepared",
    "P5": "no RM leaves prepared except by learning the decided outcome",
    "P6": "validity: an instance chooses only what its owner proposed (an RM's prepared vote, "
    "the registrar's set), and only a prepared RM commits",
    "P7": "a ballot is started once and never carries two different 2a's for one instance (pitfall 2)",
    "P8": "a prepared RM can always learn the outcome: some acceptor keeps the outcome record, or a "
    "majority keep the transaction live (spec OutcomeLearnable; collection, pitfall 8)",
    "progress": "after the faults stop, every RM that joined ends committed or aborted",
}

#: Seeded bugs in the real core (or in a process around it), each a simulator option.
MUTATIONS: Final[dict[str, str]] = {
    "free_prepared": "a leader's ballot proposes prepared in a free RM instance (pitfall 4)",
    "lower_mbal": "a leader counts states whose mbal is below its ballot as promises: what its tally "
    "already holds (2b bundles and replies) and late 1b's of its earlier ballots (pitfall 4)",
    "abort_after_prepare": "an RM may abort on its own after it prepared (pitfall 3)",
    "vote_before_prepare": "an RM sends its prepared vote as soon as it is asked to prepare, before its "
    "resource's prepare made it durable (pitfall 3)",
    "guess_after_restart": "a restarted RM that had prepared guesses abort instead of learning the "
    "outcome (pitfall 7)",
    "reuse_ballot": "a restarted coordinator keeps its old leader id, so reuses its ballots (pitfall 2)",
    "restart_rounds": "a BallotSource counts rounds from the highest ballot seen only, not from its "
    "own last one, so a new recovery of a transaction starts its ballots again (pitfall 2)",
    "amnesia": "a restarted acceptor comes back blank (pitfall 1)",
    "forget_promise": "an acceptor answers a 1a with a promise but does not persist mbal (pitfall 1)",
    "commit_without_set": "a leader decides commit when every RM instance it saw chose prepared, "
    "without the registrar's set being chosen (paper section 6.2)",
    "count_twice": "a leader's tally counts every report as another acceptor (pitfall 6)",
    "collect_early": "an acceptor collects a decided transaction before every RM of the set "
    "acknowledged the outcome (pitfall 8)",
}

WORKING: Final = "working"
PREPARED: Final = "prepared"
COMMITTED: Final = "committed"
ABORTED: Final = "aborted"
IDLE: Final = "idle"
JOINING: Final = "joining"
#: States an RM must leave once the faults stop (progress).
UNDONE: Final = (JOINING, WORKING, PREPARED)

#: Swarm testing (Groce et al., "Swarm Testing", ISSTA 2012): each seed scales every kind
#: of fault, and the eagerness of the timeouts that start recovery, by one of these factors
#: (0 leaves that fault out of the run), so that runs differ in kind, not just in order.
FAULT_KINDS: Final = (
    "drop",
    "duplicate",
    "crash_acceptor",
    "crash_coordinator",
    "rpc_timeout",
    "rm_timeout",
    "own_abort",
    "crash_rm",
    "resource_error",
    "partition",
    "clock",
)
FAULT_SCALES: Final = (0.0, 0.3, 1.0, 3.0)
TIMEOUT_KINDS: Final = ("vote_timeout", "recovery")
TIMEOUT_SCALES: Final = (0.3, 1.0, 3.0)
#: Probability that a step of the faulty phase is a fault, when one is enabled.
FAULT_RATES: Final = (0.04, 0.12, 0.3)
#: Seconds an RM's AwaitPrepare waits at the coordinator.
RM_WAIT: Final = 3.0
COORDINATORS: Final = ("c0", "c1")
#: The participant core's trace events, as the schedule tells them.
_RM_EVENTS: Final = {
    "RMPrepare": "votes prepared in",
    "RMChooseToAbort": "aborts on its own in",
    "RMRcvCommitMsg": "learns commit of",
    "RMRcvAbortMsg": "learns abort of",
}
#: Ticks of one node at one instant beyond which the core is livelocked.
MAX_TICKS: Final = 100


@dataclass(frozen=True)
class Config:
    f: int = 1
    n_rms: int = 2
    n_txns: int = 1
    mutation: str = ""
    #: Steps of the faulty phase are drawn from this range.
    fault_steps: tuple[int, int] = (20, 600)
    #: Leader ballots that may start during the faulty phase (keeps runs finite): past it,
    #: the clock no longer jumps to recovery deadlines until the faults stop.
    max_ballots: int = 45
    #: Bound on the quiescent phase; exceeding it is a progress failure.
    quiet_steps: int = 6000
    #: The learner's ``max_attempts``: ballots before a recovery gives up (asked again, it
    #: starts afresh).
    recover_attempts: int = 20
    #: Properties to check (all by default).
    checks: frozenset[str] = frozenset(PROPERTIES)

    @staticmethod
    def for_seed(seed: int, **overrides: object) -> Config:
        """The configuration a seed runs with: F, RMs and transactions cycle with the seed,
        so a bare ``--seed N`` reproduces a run of a sweep."""
        base = Config(f=seed % 2, n_rms=2 + (seed // 2) % 2, n_txns=2 if (seed // 4) % 4 == 3 else 1)
        return replace(base, **overrides)  # type: ignore[arg-type]

    def _extras(self) -> list[tuple[str, str]]:
        """Settings other than the defaults: (description, command-line flag)."""
        d = Config()
        out = []
        if self.mutation:
            out.append((f"mutation {self.mutation}", f"--mutation {self.mutation}"))
        if self.recover_attempts != d.recover_attempts:
            n = self.recover_attempts
            out.append((f"recover_attempts={n}", f"--recover-attempts {n}"))
        if self.max_ballots != d.max_ballots:
            out.append((f"max_ballots={self.max_ballots}", f"--max-ballots {self.max_ballots}"))
        if self.fault_steps != d.fault_steps:
            lo, hi = self.fault_steps
            out.append((f"fault_steps={lo}:{hi}", f"--fault-steps {lo}:{hi}"))
        if self.checks != d.checks:
            names = ",".join(p for p in PROPERTIES if p in self.checks)
            out.append((f"checks={names}", f"--checks {names}"))
        return out

    def describe(self) -> str:
        base = f"F={self.f}, {2 * self.f + 1} acceptors, {self.n_rms} RMs, {self.n_txns} txn(s)"
        return ", ".join([base, *(d for d, _ in self._extras())])

    def cli_flags(self) -> str:
        base = f"--f {self.f} --rms {self.n_rms} --txns {self.n_txns}"
        return " ".join([base, *(f for _, f in self._extras())])


# ----------------------------------------------------------------------------- display


def show_val(val: Value | NoValue) -> str:
    if isinstance(val, RMSet):
        return "set{" + ",".join(sorted(val.rms)) + "}"
    return str(val.value)


def show_states(states: Mapping[Instance, InstanceState]) -> str:
    return "; ".join(
        f"{i}: mbal={s.mbal} bal={s.bal} val={show_val(s.val)}" for i, s in sorted(states.items())
    )


def show(msg: Any) -> str:
    """A core message in one stable line (the schedule and the golden scenarios)."""
    t = getattr(msg, "txn_id", "?")
    if isinstance(msg, Phase1a):
        return f"phase1a({t}, bal={msg.ballot}, ins={','.join(msg.instances)})"
    if isinstance(msg, Phase2a):
        props = ", ".join(f"{i}={show_val(v)}" for i, v in sorted(msg.proposals.items()))
        return f"phase2a({t}, bal={msg.ballot}, {props})"
    if isinstance(msg, BundleRequest):
        return f"bundle_request({t}, wait={msg.wait:g})"
    if isinstance(msg, RecordOutcome):
        return f"record({t}, {msg.outcome.value})"
    if isinstance(msg, (Phase1b, Phase2b, Bundle)):
        kind = {Phase1b: "phase1b", Phase2b: "phase2b", Bundle: "bundle"}[type(msg)]
        extra = f", outcome={msg.outcome.value}" if msg.outcome is not Outcome.PENDING else ""
        if isinstance(msg, Bundle) and msg.age_ms:
            extra += f", age={msg.age_ms}ms"
        return f"{kind}({t}, a{msg.acceptor}: {show_states(msg.states) or 'nothing'}{extra})"
    if isinstance(msg, OutcomeRecorded):
        return f"recorded({t}, a{msg.acceptor})"
    if isinstance(msg, Refused):
        return f"refused({t}, a{msg.acceptor}: {msg.detail})"
    if isinstance(msg, NoAnswer):
        return f"no_answer({t}, a{msg.acceptor}, {show(msg.request)})"
    if isinstance(msg, (Join, Joined)):
        return f"{type(msg).__name__.lower()}({t}, {msg.rm_id})"
    if isinstance(msg, AwaitPrepare):
        return f"await_prepare({t}, {msg.rm_id}, wait={msg.wait:g})"
    if isinstance(msg, Prepare):
        return f"prepare({t}, {msg.rm_id}{'' if msg.prepare else ', wait over'})"
    if isinstance(msg, AskOutcome):
        return f"ask_outcome({t}, wait={msg.wait:g})"
    if isinstance(msg, Decided):
        d = msg.decision
        cause = f", {d.cause.value}" if d.cause is not None else ""
        return f"decided({t}, {d.outcome.value}{cause})"
    if isinstance(msg, Failed):
        return f"failed({t}, {type(msg.error).__name__})"
    if isinstance(msg, Abort):
        return f"abort({t})"
    if isinstance(msg, (Begin, Commit, Pending, Unknown)):
        return f"{type(msg).__name__.lower()}({t})"
    return repr(msg)


# ----------------------------------------------------------------------------- network


@dataclass(slots=True)
class Msg:
    """One message in flight. ``inc``: the coordinator incarnation that sent the request
    (its replies reach only that incarnation); ``call``: the transport call it belongs to
    (0: none tracked); ``token``: a request's answer address."""

    src: str
    dst: str
    body: Any
    inc: int = 0
    call: int = 0
    token: Any = None


@dataclass
class Call:
    """A coordinator's (or an RM's) request to an acceptor, until answered or given up
    (NoAnswer): ``src`` and its incarnation ``inc``."""

    src: str
    inc: int
    acceptor: int
    request: Any
    #: Messages and acceptor waiters still carrying it.
    alive: int = 1


@dataclass
class AcceptorNode:
    idx: int
    up: bool = True
    #: Durable: acceptor/storage.py's rows, as the handlers see them.
    records: dict[str, TxnRecord] = field(default_factory=dict)
    #: Transactions whose compact outcome record expired here (spec coll[a] = "gone").
    gone: set[str] = field(default_factory=set)
    #: Soft: bundle requests held until complete or their wait ends: (message, deadline).
    waiters: list[tuple[Msg, float]] = field(default_factory=list)


@dataclass
class CoordSlot:
    name: str
    incarnation: int
    leader_id: str
    node: CoordinatorNode | None


# ----------------------------------------------------------------------------- RM processes (ParticipantCore)


class RMProcess:
    """One resource-manager process: the real :class:`ParticipantCore` (soft state, lost in
    a crash) over a simulated resource (durable), driven the way
    :class:`rm_sdk.participant.Participant` drives it, with the simulated clock and network.

    One core runs every transaction of the RM, as in the service. The application joins
    (the core's ``join`` runs after the coordinator's Joined, like ``Participant.join``);
    the core's :class:`CallCoordinator` effects become requests with tokens, whose answer,
    or the transport's give-up (:class:`Unreachable`; NOT_FOUND is :class:`Unknown`), feeds
    ``on_coordinator``; its :class:`CallResource` effects become actions of the simulation
    that report ``on_prepared`` (PREPARED, ABORTED, or None: ``prepare`` raised) and
    ``on_applied``; its sends go to the acceptors as calls whose replies (or NoAnswer) feed
    ``on_acceptor``; the clock ticks it at ``next_deadline()``. A crash drops the core: the
    restarted process has a new one with a fresh leader id (pitfall 2), ``resume``s every
    transaction its resource holds as prepared and ``abandon``s those it never prepared.
    """

    def __init__(self, sim: Sim, rm: str) -> None:
        self.sim = sim
        self.rm = rm
        self.incarnation = 0
        #: Durable: each transaction's work at the resource (WORKING: done, not prepared;
        #: PREPARED; COMMITTED; ABORTED). Absent: not joined.
        self.resource: dict[str, str] = {}
        #: The application's join attempts per transaction, and the one in flight (token).
        self.joins: dict[str, int] = {}
        self.joining: dict[str, tuple[str, int]] = {}
        #: Transactions this RM already asked the acceptors about on its own (``learn``).
        self.probed: set[str] = set()
        self._start()

    def _start(self) -> None:
        """A new incarnation: a fresh core and no soft state."""
        self.incarnation += 1
        self.leader_id = f"{self.rm}.{self.incarnation}"
        self.core = ParticipantCore(self.rm, self.leader_id, self.sim.rm_timeouts)
        #: Coordinator calls outstanding: token -> the core's request.
        self.calls: dict[tuple[str, int], AwaitPrepare | AskOutcome] = {}
        #: The resource's calls running (the core's CallResource effects).
        self.running: list[CallResource] = []
        #: The core's ``learn`` questions outstanding: token -> transaction.
        self.learning: dict[tuple[str, int], str] = {}

    def state(self, txn: str) -> str:
        """What the checks see of this RM in ``txn``: its resource's state, else whether
        the application is joining."""
        st = self.resource.get(txn)
        if st is not None:
            return st
        return JOINING if txn in self.joining else IDLE

    # -------------------------------------------------------------- the driver

    def step(self, fn: Callable[[float, Ready], object]) -> None:
        """One step of the core, then its Ready carried out (the driver's ``_step``)."""
        out = Ready()
        fn(self.sim.now, out)
        self._execute(out)

    def _execute(self, out: Ready) -> None:
        sim = self.sim
        sim.observe(self.rm, self.leader_id, out)
        for i, req in out.sends:
            call = sim.seq()
            sim.calls[call] = Call(self.rm, self.incarnation, i, req)
            sim.send(Msg(self.rm, f"a{i}", req, inc=self.incarnation, call=call))
        for token, msg in out.replies:
            txn = self.learning.pop(token, None)
            if txn is not None:
                sim.event(f"{self.rm} learns from the acceptors: {show(msg)}")
        for eff in out.effects:
            if isinstance(eff, CallResource):
                self.running.append(eff)
            elif isinstance(eff, CallCoordinator):
                self._call(eff)
            elif isinstance(eff, Applied):
                sim.event(f"{self.rm} applied {eff.txn_id}: {eff.state.value}")
            elif isinstance(eff, Ended):
                sim.trace(f"{self.rm} is done with {eff.txn_id}")

    def _call(self, eff: CallCoordinator) -> None:
        req = eff.request
        # An outcome question may go to any replica (the client tries them in turn).
        # An acknowledgement of a resumed transaction names no coordinator: the first one
        # (as the participant driver sends it).
        dst = self.sim.rng.choice(COORDINATORS) if isinstance(req, AskOutcome) else eff.coordinator or "c0"
        token = (self.rm, self.sim.seq())
        self.calls[token] = req
        self.sim.send(Msg(self.rm, dst, req, token=token))

    def deliver(self, m: Msg) -> None:
        body = m.body
        if m.token is None:  # an acceptor's reply, on the connection of the incarnation that asked
            if m.inc != self.incarnation:
                self.sim.event(f"lost: {self.rm}.{m.inc} is gone")
                return
            self.step(partial(self.core.on_acceptor, body))
            return
        txn = body.txn_id
        if self.joining.get(txn) == m.token:
            del self.joining[txn]
            if isinstance(body, Joined):
                # Participant.join: the core joins once the registrar has the join.
                self.resource[txn] = WORKING
                self.step(partial(self.core.join, txn, "c0", self.sim.n))
            else:
                self.sim.event(f"{self.rm}'s join of {txn} fails: {show(body)}")
            return
        req = self.calls.pop(m.token, None)
        if req is None:
            return  # nobody waits for it any more (timed out, or asked before a crash)
        reply = _coordinator_reply(req, body)
        self.step(lambda now, out: self.core.on_coordinator(req.txn_id, req, reply, now, out))

    # -------------------------------------------------------------- actions

    def join(self, txn: str) -> None:
        self.sim.line(f"{self.rm} joins {txn}")
        self.joins[txn] = self.joins.get(txn, 0) + 1
        token = (self.rm, self.sim.seq())
        self.joining[txn] = token
        self.sim.send(Msg(self.rm, "c0", Join(txn, self.rm), token=token))

    def timeout(self, token: tuple[str, int]) -> None:
        """The deadline of a coordinator call passes: the core hears Unreachable."""
        for txn, t in list(self.joining.items()):
            if t == token:
                self.sim.line(f"{self.rm}: its join of {txn} times out")
                del self.joining[txn]  # the application saw the join fail
                return
        req = self.calls.pop(token)
        self.sim.line(f"{self.rm}: its {show(req)} times out")
        unreachable = Unreachable(req.txn_id, "deadline exceeded")
        self.step(lambda now, out: self.core.on_coordinator(req.txn_id, req, unreachable, now, out))

    def run_resource(self, eff: CallResource) -> None:
        """The resource's prepare/commit/abort returns."""
        self.running.remove(eff)
        sim, txn = self.sim, eff.txn_id
        x = sim.rng.random()
        if eff.op is ResourceOp.PREPARE:
            vote: Vote | None
            if x < 0.12 * sim.k("own_abort"):
                sim.line(f"{self.rm}'s prepare of {txn} refuses: it votes aborted")
                vote = Vote.ABORTED
            elif x < 0.12 * sim.k("own_abort") + 0.05 * sim.k("resource_error"):
                sim.line(f"{self.rm}'s prepare of {txn} raises")
                vote = None
            else:
                sim.line(f"{self.rm} prepares {txn} (durably)")
                self._prepared(txn)
                vote = Vote.PREPARED
            self.step(lambda now, out: self.core.on_prepared(txn, vote, now, out))
            return
        if sim.phase != "quiet" and x < 0.1 * sim.k("resource_error"):
            sim.line(f"{self.rm}'s {eff.op.value} of {txn} fails")
            self.step(lambda now, out: self.core.on_applied(txn, False, now, out))
            return
        sim.line(f"{self.rm} {'commits' if eff.op is ResourceOp.COMMIT else 'aborts'} {txn}")
        self._applied(eff)
        self.step(lambda now, out: self.core.on_applied(txn, True, now, out))

    def _prepared(self, txn: str) -> None:
        self.resource[txn] = PREPARED
        self.sim.prepared_votes.add((txn, self.rm))

    def _applied(self, eff: CallResource) -> None:
        self.resource[eff.txn_id] = COMMITTED if eff.op is ResourceOp.COMMIT else ABORTED

    def refuse(self, txn: str) -> None:
        """The application gives up on its work (``Participant.refuse``): the core aborts
        only if it has not begun to prepare; then the owner is told."""
        self.sim.line(f"{self.rm} tries to refuse {txn}")
        done: list[bool] = []
        self.step(lambda now, out: done.append(self.core.refuse(txn, "unilateral", now, out)))
        if not done[0]:
            self.sim.event("too late: the core says no")
            return
        token = (self.rm, self.sim.seq())  # the answer is not awaited
        self.sim.send(Msg(self.rm, "c0", Abort(txn, "unilateral", rm_id=self.rm), token=token))

    def learn(self, txn: str) -> None:
        """Ask the acceptors alone how ``txn`` ended (``Participant.learn_from_acceptors``)."""
        self.sim.line(f"{self.rm} asks the acceptors how {txn} ended")
        self.probed.add(txn)
        token = (self.rm, self.sim.seq())
        self.learning[token] = txn
        self.step(partial(self.core.learn, token, txn, self.sim.n))

    def crash(self) -> None:
        sim = self.sim
        sim.line(f"crash and restart {self.rm} ({self.leader_id}; the core's soft state is lost)")
        sim.faults += 1
        for eff in self.running:
            # Cut short: each call may or may not have taken effect at the resource.
            if sim.rng.random() < 0.5:
                sim.event(f"its {eff.op.value} of {eff.txn_id} took effect before the crash")
                if eff.op is ResourceOp.PREPARE:
                    self._prepared(eff.txn_id)
                else:
                    self._applied(eff)
        self.joining.clear()
        self._start()
        sim.event(f"{self.rm} restarts as {self.leader_id}")
        for txn, st in sorted(self.resource.items()):
            if st == PREPARED:
                sim.event(f"{self.rm} resumes {txn} (prepared, durably)")
                sim.rm_resumed = True
                self.step(partial(self.core.resume, txn, "c0", sim.n))
            elif st == WORKING:
                sim.event(f"{self.rm} abandons {txn} (never prepared)")
                self.step(partial(self.core.abandon, txn, sim.n))

    def actions(
        self, quiet: bool, k: Callable[[str], float], live: set[Any]
    ) -> tuple[list[Action], list[Action]]:
        sim = self.sim
        acts: list[Action] = []
        faults: list[Action] = []
        if not quiet:
            for txn in sim.txns:
                if txn not in self.resource and txn not in self.joining and self.joins.get(txn, 0) < 2:
                    acts.append((1.0, partial(self.join, txn)))
        for token in [*self.joining.values(), *self.calls]:
            if token not in live:
                acts.append((1.0, partial(self.timeout, token)))
            elif not quiet:
                faults.append((0.3 * k("rm_timeout"), partial(self.timeout, token)))
        for eff in self.running:
            acts.append((1.0, partial(self.run_resource, eff)))
        if quiet:
            return acts, faults
        live = [t for t, st in self.resource.items() if st in (WORKING, PREPARED)]
        for txn in live:
            if self.core.active(txn):
                # Also after prepare began, where the core must refuse to abort (pitfall 3).
                w = 0.3 * k("own_abort") if self.resource[txn] == WORKING else 0.1
                faults.append((w, partial(self.refuse, txn)))
        if live:
            faults.append((0.15 * k("crash_rm"), self.crash))
        for txn, st in self.resource.items():
            if st in (COMMITTED, ABORTED) and txn not in self.probed and not self.core.active(txn):
                acts.append((0.05, partial(self.learn, txn)))
        return acts, faults


def _coordinator_reply(req: AwaitPrepare | AskOutcome, body: Any) -> CoordinatorReply:
    """A coordinator's answer as the participant driver gives it to the core: NOT_FOUND
    is Unknown, any other error Unreachable."""
    if isinstance(body, (Prepare, Decided, Pending, Unknown, Acknowledged)):
        return body
    if isinstance(body, Failed):
        if getattr(body.error, "status", "") == "NOT_FOUND":
            return Unknown(req.txn_id, str(body.error))
        return Unreachable(req.txn_id, str(body.error))
    return Unreachable(req.txn_id, f"unexpected {type(body).__name__}")


# ----------------------------------------------------------------------------- mutants


class _FreePreparedRun(BallotRun):
    """Mutation free_prepared: proposes prepared where no promise reported a value."""

    def proposals(self) -> dict[Instance, Value] | None:
        out = super().proposals()
        if out is None:
            return None
        for ins, val in out.items():
            if val is Vote.ABORTED and not any(p[ins].accepted for p in self._promises.values() if ins in p):
                out[ins] = Vote.PREPARED
        return out


class _LowerMbalRun(BallotRun):
    """Mutation lower_mbal: a 1b whose mbal is below the ballot counts as a promise."""

    def on_phase1b(self, acceptor: int, states: Mapping[Instance, InstanceState]) -> None:
        lifted = {i: replace(s, mbal=self.ballot) if s.mbal < self.ballot else s for i, s in states.items()}
        super().on_phase1b(acceptor, lifted)


class _LowerMbalRecovery(core_leader.Recovery):
    """Mutation lower_mbal, the other half: what the tally already holds (2b bundles and
    replies, older than the ballot; an instance an acceptor did not report taken as
    nothing accepted) is fed to the ballot as 1b's, and if that makes a majority the
    ballot proposes at once, without waiting for a phase 1."""

    def _ballot(self, now: float, out: Ready) -> None:
        super()._ballot(now, out)
        run = self.run
        if run is None or self.phase is not core_leader.RecoveryPhase.PHASE1:
            return
        for acc, states in sorted(self.tally.reports.items()):
            run.on_phase1b(acc, {ins: states.get(ins, InstanceState()) for ins in run.instances})
        proposals = run.proposals()
        if proposals is not None:
            out.log.append((self.txn_id, "mutant: counts its tally as promises, skips phase 1"))
            self._phase2a(proposals, now, out)


class _RestartingSource(BallotSource):
    """Mutation restart_rounds: the next ballot is above ``above`` only."""

    def next(self, above: Ballot) -> Ballot:
        self.last = next_ballot(self.leader, above)
        return self.last


class _CountTwiceTally(Tally):
    """Mutation count_twice: each report counts as one more acceptor."""

    def add(self, acceptor: int, states: Mapping[Instance, InstanceState]) -> None:
        key = acceptor + self.n_acceptors * len(self.reports)
        self.reports[key] = dict(states)


_real_evaluate = core_leader.evaluate


def _evaluate_without_set(tally: Tally, known_set: RMSet | None) -> Decision | None:
    """Mutation commit_without_set: every RM instance seen chose prepared: commit."""
    d = _real_evaluate(tally, known_set)
    if d is not None:
        return d
    values = chosen(tally.reports, tally.n_acceptors)
    rms = tally.instances() - {REGISTRAR}
    if rms and all(values.get(rm) is Vote.PREPARED for rm in rms):
        return Decision(Outcome.COMMITTED)
    return None


def _forgetful_phase1a(acc: int, rec: TxnRecord | None, msg: Phase1a, now_ms: int) -> acceptor_core.Step:
    """Mutation forget_promise: the promise is sent, the new mbal never written."""
    step = acceptor_core.phase1a(acc, rec, msg, now_ms)
    return acceptor_core.Step(None, step.reply, step.trace)


_real_refuse = ParticipantCore.refuse


def _refuse_after_prepare(self: ParticipantCore, txn_id: str, reason: str, now: float, out: Ready) -> bool:
    """Mutation abort_after_prepare: a prepared RM's refusal aborts it (no vote can follow:
    its prepared one is out)."""
    t = self._txns.get(txn_id)
    if t is None or t.state is not RMState.PREPARED or t.apply_op is not None:
        return _real_refuse(self, txn_id, reason, now, out)
    out.event("RMChooseToAbort", txn_id, rm=self.rm_id)
    t.learner = None
    self._apply(t, ResourceOp.ABORT, out)
    self._after(t, out)
    return True


_real_on_coordinator = ParticipantCore.on_coordinator
_real_resume = ParticipantCore.resume


def _vote_at_prepare(
    self: ParticipantCore,
    txn_id: str,
    request: AwaitPrepare | AskOutcome,
    reply: CoordinatorReply,
    now: float,
    out: Ready,
) -> None:
    """Mutation vote_before_prepare: the paper's Prepare sends the prepared vote at once."""
    _real_on_coordinator(self, txn_id, request, reply, now, out)
    t = self._txns.get(txn_id)
    if isinstance(reply, Prepare) and t is not None and t.phase is core_participant._Phase.PREPARING:
        for i in range(majority(t.n)):
            out.send(i, Phase2a(txn_id, RM_BALLOT, {self.rm_id: Vote.PREPARED}))


def _guessing_resume(
    self: ParticipantCore, txn_id: str, coordinator: str, n_acceptors: int, now: float, out: Ready
) -> None:
    """Mutation guess_after_restart: resumed, a prepared RM aborts without learning."""
    _real_resume(self, txn_id, coordinator, n_acceptors, now, out)
    t = self._txns.get(txn_id)
    if t is not None and t.apply_op is None:
        out.event("RMChooseToAbort", txn_id, rm=self.rm_id)
        t.learner = None
        t.learn_at = None
        self._apply(t, ResourceOp.ABORT, out)
        self._after(t, out)


@contextlib.contextmanager
def _mutated(mutation: str) -> Iterator[None]:
    """Patch one seeded bug into the core for one run, and take it out again."""
    patches: list[tuple[Any, str, Any]] = []
    if mutation == "free_prepared":
        patches.append((core_leader, "BallotRun", _FreePreparedRun))
    elif mutation == "lower_mbal":
        patches.append((core_leader, "BallotRun", _LowerMbalRun))
        patches += [(m, "Recovery", _LowerMbalRecovery) for m in (core_owner, core_learner)]
    elif mutation == "restart_rounds":
        patches += [(m, "BallotSource", _RestartingSource) for m in (core_coordinator, core_participant)]
    elif mutation == "abort_after_prepare":
        patches.append((ParticipantCore, "refuse", _refuse_after_prepare))
    elif mutation == "vote_before_prepare":
        patches.append((ParticipantCore, "on_coordinator", _vote_at_prepare))
    elif mutation == "guess_after_restart":
        patches.append((ParticipantCore, "resume", _guessing_resume))
    elif mutation == "count_twice":
        patches += [(core_owner, "Tally", _CountTwiceTally), (core_learner, "Tally", _CountTwiceTally)]
    elif mutation == "commit_without_set":
        patches += [(m, "evaluate", _evaluate_without_set) for m in (core_leader, core_owner, core_learner)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    for mod, name, new in patches:
        setattr(mod, name, new)
    try:
        yield
    finally:
        for mod, name, old in saved:
            setattr(mod, name, old)


# ----------------------------------------------------------------------------- results


class SimulationFailure(AssertionError):
    """A violated property. The message holds the seed, the property and the schedule."""

    def __init__(self, seed: int, cfg: Config, found: list[tuple[str, str]], schedule: list[str]) -> None:
        order = list(PROPERTIES)
        found = sorted(found, key=lambda pd: order.index(pd[0]))
        self.seed = seed
        self.cfg = cfg
        #: Every property the failing step violated, in the order of PROPERTIES.
        self.props = list(dict.fromkeys(p for p, _ in found))
        self.prop = self.props[0]
        self.detail = found[0][1]
        self.schedule = schedule
        step = _last_step(schedule)
        text = f"seed {seed} ({cfg.describe()}): {', '.join(self.props)} violated at step {step}\n"
        for prop in self.props:
            text += f"  {prop}: {PROPERTIES[prop]}\n"
            text += "".join(f"    {d}\n" for p, d in found if p == prop)
        text += f"replay: python -m tests.sim.simulator --seed {seed} {cfg.cli_flags()} --verbose\n"
        text += "schedule:\n" + "\n".join(schedule)
        super().__init__(text)


def _last_step(schedule: list[str]) -> str:
    for line in reversed(schedule):
        head = line.split(":", 1)[0]
        if head.isdigit():
            return head
    return "0"


@dataclass
class Result:
    seed: int
    cfg: Config
    schedule: list[str]
    steps: int
    outcomes: dict[str, Outcome | None]
    ballots: int
    recovered: int
    faults: int
    committed_rms: int
    #: Whether two coordinators ran ballots on one transaction.
    dueling: bool
    #: Abort causes of the decisions (a coverage count).
    causes: set[str] = field(default_factory=set)
    #: Whether a restarted RM resumed a prepared transaction, and whether an RM ran a
    #: recovery ballot of its own.
    rm_resumed: bool = False
    rm_led: bool = False
    #: Whether an RM's join reached the owner before the transaction's Begin.
    join_first: bool = False


Action = tuple[float, Callable[[], None]]


class _Violation(Exception):
    def __init__(self, found: list[tuple[str, str]]) -> None:
        super().__init__(found[0][1])
        self.found = found


# ----------------------------------------------------------------------------- simulator


class Sim:
    def __init__(self, seed: int, cfg: Config, verbose: bool = False) -> None:
        if cfg.mutation and cfg.mutation not in MUTATIONS:
            raise ValueError(f"unknown mutation {cfg.mutation!r}; known: {', '.join(MUTATIONS)}")
        self.seed = seed
        self.cfg = cfg
        self.verbose = verbose
        self.rng = random.Random(seed)
        self.knobs = {k: self.rng.choice(FAULT_SCALES) for k in FAULT_KINDS}
        self.knobs.update({k: self.rng.choice(TIMEOUT_SCALES) for k in TIMEOUT_KINDS})
        self.fault_rate = self.rng.choice(FAULT_RATES)
        self.scales = dict(self.knobs)
        self.n = 2 * cfg.f + 1
        self.need = majority(self.n)
        self.timeouts = CoordinatorTimeouts(
            owner=OwnerTimeouts(
                vote_timeout=5.0 * self.knobs["vote_timeout"], txn_timeout=60.0, answer_timeout=1.0
            ),
            learner=LearnerTimeouts(
                recovery_timeout=10.0 * self.knobs["recovery"],
                answer_timeout=1.0,
                max_attempts=cfg.recover_attempts,
            ),
        )
        self.rm_timeouts = ParticipantTimeouts(
            owner_timeout=6.0 * self.knobs["vote_timeout"],
            recovery_timeout=10.0 * self.knobs["recovery"],
            answer_timeout=1.0,
            prepare_wait=RM_WAIT,
            recovery_attempts=cfg.recover_attempts,
        )
        self.now = 0.0
        self.accs = [AcceptorNode(i) for i in range(self.n)]
        self.coords = {c: CoordSlot(c, 1, f"{c}.1", None) for c in COORDINATORS}
        #: Who a partition may separate (RMs and the application reach everyone).
        self.partitionable = frozenset([f"a{a.idx}" for a in self.accs] + list(self.coords))
        self.txns = [f"t{i + 1}" for i in range(cfg.n_txns)]
        self.rms = {f"rm{i + 1}": RMProcess(self, f"rm{i + 1}") for i in range(cfg.n_rms)}
        #: The application: per transaction, its outstanding Commit/Abort token, or done.
        self.app_call: dict[str, tuple[str, int] | None] = {t: None for t in self.txns}
        self.app_done: set[str] = set()
        self.net: list[Msg] = []
        self.calls: dict[int, Call] = {}
        self.schedule: list[str] = []
        self.step_no = 0
        self.phase = "faulty"
        self._seq = 0
        self.ballots = 0
        self.faults = 0
        self.crashed_acceptors = 0
        self.crashed_coordinators = 0
        #: A network partition: acceptors and coordinators on one side; messages between the
        #: sides are lost (RMs and the application reach everyone). Empty: no partition.
        self.side: frozenset[str] = frozenset()
        # History, for the checks.
        self.accepted_ever: dict[tuple[str, Instance, Ballot, Value], set[int]] = {}
        self.hist_chosen: dict[tuple[str, Instance], Value] = {}
        self.started: set[tuple[str, Ballot]] = set()
        self.sent2a: dict[tuple[str, Instance, Ballot], Value] = {}
        self.ballot0: dict[str, Value] = {}
        self.prepared_votes: set[tuple[str, str]] = set()
        self.decisions: dict[str, list[tuple[str, Outcome]]] = {t: [] for t in self.txns}
        self.causes: set[str] = set()
        self.recovered_txns: set[str] = set()
        self.leader_2a: set[str] = set()
        self.ballot_leaders: dict[str, set[str]] = {}
        self.violations: list[tuple[str, str]] = []
        self.rm_resumed = False
        self.rm_led = False
        self.join_first = False
        #: Transactions whose Begin some coordinator took.
        self.begun: set[str] = set()
        self._last_states: dict[tuple[str, str], str] | None = None
        for name in self.coords:
            self._start_node(name)

    def k(self, kind: str) -> float:
        """This seed's scale for a kind of fault or timeout (1 once the faults stop)."""
        return self.scales[kind]

    def seq(self) -> int:
        self._seq += 1
        return self._seq

    # ------------------------------------------------------------------ logging

    def line(self, text: str) -> None:
        self.schedule.append(f"{self.step_no}: {text}")

    def event(self, text: str) -> None:
        self.schedule.append(f"      {text}")

    def trace(self, text: str) -> None:
        if self.verbose:
            self.schedule.append(f"      . {text}")

    def _violate(self, prop: str, detail: str) -> None:
        if prop in self.cfg.checks:
            self.violations.append((prop, detail))

    # ------------------------------------------------------------------ network

    def send(self, m: Msg) -> None:
        self.net.append(m)
        if self.verbose:  # (the line is costly to make: only when shown)
            self.trace(f"send {show(m.body)} {m.src}->{m.dst}")
        body = m.body
        if isinstance(body, Phase2a):
            if body.ballot == RM_BALLOT and m.src in self.rms:
                # Pitfall 3: an RM's prepared vote leaves only once its resource prepared.
                for ins, val in body.proposals.items():
                    if ins != m.src or (
                        val is Vote.PREPARED and (body.txn_id, ins) not in self.prepared_votes
                    ):
                        self._violate("P6", f"{m.src} sent {show(body)} (its resource never prepared)")
            for ins, val in body.proposals.items():
                key = (body.txn_id, ins, body.ballot)
                old = self.sent2a.setdefault(key, val)
                if old != val:
                    self._violate(
                        "P7",
                        f"{m.src} sent phase2a({body.txn_id}, bal={body.ballot}, {ins}={show_val(val)}) "
                        f"after {show_val(old)} at that ballot",
                    )

    def _gone(self, m: Msg) -> None:
        """A message leaves the network (delivered, dropped or lost)."""
        self._hold(m.call, -1)

    def _hold(self, call: int, d: int) -> None:
        """One more (or one fewer) message or waiter carries ``call``."""
        c = self.calls.get(call) if call else None
        if c is not None:
            c.alive += d

    def live_tokens(self) -> set[Any]:
        """The tokens whose request, or an answer to it, may still arrive: in flight, or
        held by a coordinator."""
        live = {m.token for m in self.net if m.token is not None}
        for slot in self.coords.values():
            node = slot.node
            if node is None:
                continue
            for o in node.owned.values():
                live.update(o.prepare_waiters, o.outcome_waiters, o.commit_waiters)
            for lr in node.learners.values():
                live.update(lr.waiters)
        return live

    def _severed(self, x: str, y: str) -> bool:
        if not self.side or x not in self.partitionable or y not in self.partitionable:
            return False
        return (x in self.side) != (y in self.side)

    def states(self) -> dict[tuple[str, str], str]:
        """Every RM's state in every transaction (what the checks compare)."""
        return {(r.rm, t): r.state(t) for r in self.rms.values() for t in self.txns}

    def _deliver(self, idx: int, keep: bool) -> None:
        m = self.net[idx]
        if keep:
            m = replace(m)
            self._hold(m.call, +1)
        else:
            self.net.pop(idx)
        self._gone(m)
        self.line(f"deliver{' a copy of' if keep else ''} {show(m.body)} {m.src}->{m.dst}")
        if self._severed(m.src, m.dst):
            self.event("lost: the partition separates them")
            return
        if m.dst == "app":
            self._app_reply(m)
        elif m.dst.startswith("a"):
            acc = self.accs[int(m.dst[1:])]
            if not acc.up:
                self.event(f"lost: a{acc.idx} is down")
                return
            self._acceptor(acc, m)
        elif m.dst in self.coords:
            slot = self.coords[m.dst]
            node = slot.node
            if node is None or (m.inc and m.inc != slot.incarnation):
                self.event(f"lost: {m.dst}{'' if node is None else f'.{m.inc}'} is gone")
                return
            if m.token is not None:
                if isinstance(m.body, Begin):
                    self.begun.add(m.body.txn_id)
                elif isinstance(m.body, Join) and m.body.txn_id not in self.begun:
                    self.join_first = True
                node.request(m.token, m.body, self.now)
            else:
                self.calls.pop(m.call, None)  # answered: the transport has nothing to give up
                node.acceptor_reply(m.body, self.now)
            self._flush(slot)
        else:
            if m.token is None:
                self.calls.pop(m.call, None)
            self.rms[m.dst].deliver(m)

    # ------------------------------------------------------------------ acceptors (acceptor.core)

    def _acceptor(self, acc: AcceptorNode, m: Msg) -> None:
        req = m.body
        txn = req.txn_id
        now_ms = int(self.now * 1000)
        rec = acc.records.get(txn)
        if isinstance(req, BundleRequest):
            if req.wait <= 0 or acceptor_core.bundle_ready(rec):
                self._reply(acc, m, acceptor_core.bundle(acc.idx, rec, req, now_ms))
            else:
                acc.waiters.append((m, self.now + req.wait))
                self._hold(m.call, +1)
                self.event(f"a{acc.idx} holds the bundle request until complete")
            return
        handler: Callable[[int, TxnRecord | None, Any, int], acceptor_core.Step]
        if isinstance(req, Phase1a):
            handler = _forgetful_phase1a if self.cfg.mutation == "forget_promise" else acceptor_core.phase1a
        elif isinstance(req, Phase2a):
            handler = acceptor_core.phase2a
        else:
            handler = acceptor_core.record_outcome
        try:
            step = handler(acc.idx, rec, req, now_ms)
        except ConflictError as exc:
            self.event(f"a{acc.idx} refuses: {exc}")
            if isinstance(req, RecordOutcome):
                self._violate("P3", f"a{acc.idx} asked to record {req.outcome.value}: {exc}")
            self._reply(acc, m, Refused(txn, acc.idx, req, str(exc)))
            return
        if step.record is not None:
            acc.records[txn] = step.record
            self._learn_accepted(txn, acc.idx, step.record)
        for ev in step.trace:
            self.trace(f"a{acc.idx} trace {ev.name}")
        if not isinstance(step.reply, OutcomeRecorded):
            self.event(f"a{acc.idx}: {show_states(step.reply.states)}")
        self._reply(acc, m, step.reply)
        self._wake(acc, txn)

    def _reply(self, acc: AcceptorNode, req: Msg, body: Any) -> None:
        self.send(Msg(f"a{acc.idx}", req.src, body, inc=req.inc, call=req.call))
        self._hold(req.call, +1)

    def _wake(self, acc: AcceptorNode, txn: str) -> None:
        rec = acc.records.get(txn)
        if not acceptor_core.bundle_ready(rec):
            return
        for w in [w for w in acc.waiters if w[0].body.txn_id == txn]:
            acc.waiters.remove(w)
            self._release(acc, w[0])

    def _release(self, acc: AcceptorNode, m: Msg) -> None:
        self._hold(m.call, -1)
        rec = acc.records.get(m.body.txn_id)
        self._reply(acc, m, acceptor_core.bundle(acc.idx, rec, m.body, int(self.now * 1000)))

    # ------------------------------------------------------------------ coordinators (CoordinatorNode)

    def _start_node(self, name: str) -> None:
        slot = self.coords[name]
        slot.node = CoordinatorNode(slot.leader_id, self.n, self.timeouts)

    def _flush(self, slot: CoordSlot) -> None:
        """Carry out a node's Ready: sends, replies, trace; check its decisions."""
        assert slot.node is not None
        ready = slot.node.take_ready()
        self._carry(slot, ready)

    def _carry(self, slot: CoordSlot, ready: Ready) -> None:
        self.observe(slot.name, slot.leader_id, ready)
        for _txn, d, _ in ready.decided:
            if d.cause is not None:
                self.causes.add(d.cause.value)
        for i, req in ready.sends:
            if isinstance(req, Phase2a) and req.ballot == RM_BALLOT and REGISTRAR in req.proposals:
                self.ballot0.setdefault(req.txn_id, req.proposals[REGISTRAR])
            call = 0
            if not isinstance(req, RecordOutcome):
                call = self.seq()
                self.calls[call] = Call(slot.name, slot.incarnation, i, req)
            self.send(Msg(slot.name, f"a{i}", req, inc=slot.incarnation, call=call))
        for token, body in ready.replies:
            self.send(Msg(slot.name, token[0], body, inc=slot.incarnation, token=token))

    def observe(self, name: str, leader_id: str, ready: Ready) -> None:
        """What a node's (coordinator's or RM's) Ready shows: ballots started, decisions."""
        self.ballots += ready.ballots
        for txn, text in ready.log:
            self.trace(f"{name} log {txn}: {text}")
        for ev in ready.trace:
            if ev.name == "Phase1a":
                bal = Ballot(*ev.fields["bal"])
                key = (ev.txn_id, bal)
                if key in self.started:
                    self._violate("P7", f"{leader_id} starts ballot {bal} of {ev.txn_id} a second time")
                self.started.add(key)
                self.ballot_leaders.setdefault(ev.txn_id, set()).add(name)
                self.rm_led = self.rm_led or name in self.rms
                self.event(f"{leader_id} starts ballot {bal} of {ev.txn_id}")
            elif ev.name == "Phase2a":
                self.leader_2a.add(ev.txn_id)
            elif ev.name == "Decide":
                self._decided(name, ev.txn_id, Outcome(ev.fields["outcome"]))
            elif ev.name == "Close":
                self.event(f"{name} closes {ev.txn_id} with set {{{','.join(ev.fields['set'])}}}")
            elif ev.name == "ApplicationAbort":
                self.event(f"{name} aborts {ev.txn_id} before close")
            elif ev.name in _RM_EVENTS:
                self.event(f"{name} {_RM_EVENTS[ev.name]} {ev.txn_id}")

    def _decided(self, name: str, txn: str, outcome: Outcome) -> None:
        self.event(f"{name} decides {txn} {outcome.value}")
        if txn in self.leader_2a:
            self.recovered_txns.add(txn)
        self.decisions[txn].append((name, outcome))
        if len({o for _, o in self.decisions[txn]}) > 1:
            so_far = ", ".join(f"{c} {o.value}" for c, o in self.decisions[txn])
            self._violate("P3", f"{name} decides {txn} {outcome.value}; decisions so far: {so_far}")
        values = {ins: v for (t, ins), v in self.hist_chosen.items() if t == txn}
        b0 = self.ballot0.get(txn)
        rule, _ = decide(values, b0 if isinstance(b0, RMSet) else None)
        if rule is not outcome:
            self._violate("P3", f"{name} decides {txn} {outcome.value}, the chosen values give {rule.value}")

    def _tick_due(self) -> None:
        """The drivers' timers: tick every node whose deadline has come."""
        for slot in self.coords.values():
            node = slot.node
            for _ in range(MAX_TICKS):
                if node is None:
                    break
                nd = node.next_deadline()
                if nd is None or nd > self.now:
                    break
                node.tick(self.now)
                self._flush(slot)
            else:
                raise _Violation([("progress", f"{slot.leader_id} keeps wanting ticks at {self.now:g}s")])
        for rm in self.rms.values():
            for _ in range(MAX_TICKS):
                nd = rm.core.next_deadline()
                if nd is None or nd > self.now:
                    break
                rm.step(rm.core.tick)
            else:
                raise _Violation([("progress", f"{rm.leader_id} keeps wanting ticks at {self.now:g}s")])
        for acc in self.accs:
            for w in [w for w in acc.waiters if w[1] <= self.now]:
                acc.waiters.remove(w)
                self.event(f"a{acc.idx}: the bundle wait of {w[0].src} for {w[0].body.txn_id} ends")
                self._release(acc, w[0])

    def _next_time(self) -> float | None:
        times = [w[1] for a in self.accs for w in a.waiters]
        # When the recovery scan (ListUndecided) next finds something.
        wait = self.timeouts.learner.recovery_timeout
        for a in self.accs:
            if a.up:
                times += [
                    r.first_seen_ms / 1000 + wait for r in a.records.values() if r.outcome is Outcome.PENDING
                ]
        for slot in self.coords.values():
            if slot.node is not None:
                nd = slot.node.next_deadline()
                if nd is not None:
                    times.append(nd)
        for rm in self.rms.values():
            nd = rm.core.next_deadline()
            if nd is not None:
                times.append(nd)
        later = [t for t in times if t > self.now]
        return min(later) if later else None

    def _advance(self, to: float) -> None:
        self.line(f"the clock moves to {to:.3f}s")
        self.now = to
        self._tick_due()

    # ------------------------------------------------------------------ the application

    def _app_request(self, txn: str, abort: bool) -> None:
        self.line(f"application asks c0 to {'abort' if abort else 'commit'} {txn}")
        token = ("app", self.seq())
        self.app_call[txn] = token
        self.send(Msg("app", "c0", Abort(txn, "the application") if abort else Commit(txn), token=token))

    def _app_reply(self, m: Msg) -> None:
        txn = m.body.txn_id
        if m.token == self.app_call.get(txn) and isinstance(m.body, (Decided, Failed)):
            self.app_done.add(txn)
            self.app_call[txn] = None

    # ------------------------------------------------------------------ checks

    def _learn_accepted(self, txn: str, acc: int, rec: TxnRecord) -> None:
        """What acceptor ``acc`` has accepted is a fact forever (the spec's 2b messages);
        a value is chosen once a majority accepted it at one ballot."""
        for ins, st in rec.instances.items():
            if not st.accepted or isinstance(st.val, NoValue):
                continue
            who = self.accepted_ever.setdefault((txn, ins, st.bal, st.val), set())
            if acc in who:
                continue
            who.add(acc)
            if len(who) < self.need:
                continue
            key = (txn, ins)
            val = st.val
            old = self.hist_chosen.get(key)
            if old is None:
                self.hist_chosen[key] = val
                self.event(f"chosen: {txn}/{ins} = {show_val(val)} at ballot {st.bal}")
                if val is Vote.PREPARED and (txn, ins) not in self.prepared_votes:
                    self._violate("P6", f"{txn}/{ins} chose prepared, but {ins} never voted prepared")
                if isinstance(val, RMSet) and self.ballot0.get(txn) != val:
                    self._violate(
                        "P6", f"{txn}'s registrar chose {show_val(val)}, which its owner never proposed"
                    )
            elif old != val:
                self._violate(
                    "P2", f"{txn}/{ins} chose {show_val(val)} at ballot {st.bal} after {show_val(old)}"
                )
        # The core's own count over what the acceptors hold now must agree.
        reports = {a.idx: a.records[txn].instances for a in self.accs if txn in a.records}
        for ins, val in chosen(reports, self.n).items():
            if self.hist_chosen.get((txn, ins)) != val:
                self._violate("P2", f"chosen() says {txn}/{ins}={show_val(val)}, the history says otherwise")

    def _check_step(self, before: dict[tuple[str, str], str]) -> None:
        after = self._last_states = self.states()
        if after == before:
            # No RM changed: P1 and P4 stand as checked (chosen values never change; P2
            # says so), and the other checks ran as the step went.
            if self.violations:
                raise _Violation(self.violations)
            return
        decided_outcomes = {t: {o.value for _, o in ds} for t, ds in self.decisions.items()}
        for (rm, txn), new in after.items():
            old = before[(rm, txn)]
            if old == new:
                continue
            if old == PREPARED and new not in decided_outcomes[txn]:
                self._violate("P5", f"{rm} of {txn} went from prepared to {new}, which nobody decided")
            if new == COMMITTED and old != PREPARED:
                self._violate("P6", f"{rm} of {txn} committed without having prepared")
        for txn in self.txns:
            states = {rm: st for (rm, t), st in after.items() if t == txn}
            done = [rm for rm, s in states.items() if s == COMMITTED]
            if not done:
                continue
            gone = [rm for rm, s in states.items() if s == ABORTED]
            if gone:
                self._violate("P1", f"in {txn}, {done[0]} committed while {gone[0]} aborted")
            why = self._commit_unjustified(txn)
            if why:
                self._violate("P4", f"{done[0]} of {txn} committed, but {why}")
        if self.violations:
            raise _Violation(self.violations)

    def _commit_unjustified(self, txn: str) -> str:
        reg = self.hist_chosen.get((txn, REGISTRAR))
        if not isinstance(reg, RMSet):
            return f"the registrar chose {show_val(reg) if reg is not None else 'nothing'}"
        for rm in sorted(reg.rms):
            v = self.hist_chosen.get((txn, rm))
            if v is not Vote.PREPARED:
                return f"member {rm} chose {show_val(v) if v is not None else 'nothing'}"
        return ""

    # ------------------------------------------------------------------ actions

    def _actions(self) -> tuple[list[Action], list[Action]]:
        """The enabled actions: (normal steps, faults)."""
        quiet = self.phase == "quiet"
        acts: list[Action] = []
        faults: list[Action] = []
        add = acts.append
        if self.net:
            add((10.0 * min(len(self.net), 4), self._act_deliver))
            if not quiet:
                faults.append((self.k("drop"), self._act_drop))
                faults.append((self.k("duplicate"), self._act_duplicate))
        nxt = self._next_time()
        if nxt is not None and (quiet or self.ballots < self.cfg.max_ballots):
            # Time passes: little while messages fly (a fault: timeouts fire early), at once
            # when nothing else can happen.
            if not self.net:
                add((0.3, partial(self._advance, nxt)))
            elif quiet:
                add((0.2, partial(self._advance, nxt)))
            else:
                faults.append((0.5 * self.k("clock"), partial(self._advance, nxt)))
        if self.calls:
            dead = [c for c, call in self.calls.items() if call.alive <= 0]
            if dead:
                add((1.0, partial(self._no_answer, self.rng.choice(dead))))
            if not quiet and len(dead) < len(self.calls):
                faults.append((0.3 * self.k("rpc_timeout"), self._spurious_no_answer))
        if not quiet:
            if not self.side:
                faults.append((0.3 * self.k("partition"), self._partition))
            else:
                add((0.15, self._heal))
            for a in self.accs:
                if a.up and self.crashed_acceptors < 4:
                    faults.append((0.25 * self.k("crash_acceptor"), partial(self._crash_acceptor, a)))
                elif not a.up:
                    add((0.6, partial(self._restart_acceptor, a)))
            for slot in self.coords.values():
                if slot.node is not None and self.crashed_coordinators < 3:
                    faults.append(
                        (0.25 * self.k("crash_coordinator"), partial(self._crash_coordinator, slot))
                    )
                elif slot.node is None:
                    add((0.4, partial(self._restart_coordinator, slot)))
        # The application: commit (or abort) each transaction once, retrying a lost call.
        live = self.live_tokens()
        for txn in self.txns:
            if txn in self.app_done:
                continue
            token = self.app_call[txn]
            if token is not None:
                if token not in live:
                    add((0.5, partial(self._app_request, txn, False)))
                continue
            waiting = any(r.state(txn) in (IDLE, JOINING) for r in self.rms.values())
            w = 0.04 if waiting and not quiet else 1.0
            add((w, partial(self._app_request, txn, False)))
            add((w * 0.15, partial(self._app_request, txn, True)))
        # The services' recovery scan: ListUndecided(older_than=recovery_timeout).
        old_ms = int((self.now - self.timeouts.learner.recovery_timeout) * 1000)
        listed = {
            txn
            for a in self.accs
            if a.up
            for txn, rec in a.records.items()
            if rec.outcome is Outcome.PENDING and rec.first_seen_ms <= old_ms
        }
        for txn in sorted(listed):
            for slot in self.coords.values():
                node = slot.node
                if node is None or txn in node.owned or txn in node.learners or txn in node.decided:
                    continue
                add((0.5 * self.k("recovery"), partial(self._scan, slot, txn)))
        # Collection (acceptor/collect.py) and the end of a record's retention.
        for a in self.accs:
            if not a.up:
                continue
            for txn, rec in a.records.items():
                early = self.cfg.mutation == "collect_early" and rec.outcome is not Outcome.PENDING
                if not rec.collected and (acceptor_core.collectable(rec) or early):
                    add((0.3, partial(self._collect, a, txn)))
                elif rec.collected and not self._busy(txn):
                    # Retention outlasts every message about the transaction in flight and
                    # every coordinator still working on it (an hour by default).
                    add((0.1, partial(self._expire, a, txn)))
        for r in self.rms.values():
            more, more_faults = r.actions(quiet, self.k, live)
            acts += more
            faults += more_faults
        return acts, faults

    def _busy(self, txn: str) -> bool:
        """Whether the record of ``txn`` must still be kept. The retention (an hour by
        default) outlasts every message in flight, every coordinator still working on the
        transaction, and the recovery scan (seconds) that records the outcome at an
        acceptor that missed it."""
        if any(txn == getattr(m.body, "txn_id", None) for m in self.net):
            return True
        if any(txn in a.records and a.records[txn].outcome is Outcome.PENDING for a in self.accs):
            return True
        return any(
            slot.node is not None and (txn in slot.node.owned or txn in slot.node.learners)
            for slot in self.coords.values()
        )

    def _collect(self, a: AcceptorNode, txn: str) -> None:
        rec = a.records[txn]
        self.line(f"a{a.idx} collects {txn} ({rec.outcome.value})")
        if acceptor_core.collectable(rec):
            a.records[txn] = acceptor_core.collect(rec)
        else:  # the mutant collect_early
            a.records[txn] = TxnRecord(first_seen_ms=rec.first_seen_ms, outcome=rec.outcome, collected=True)

    def _expire(self, a: AcceptorNode, txn: str) -> None:
        self.line(f"a{a.idx}: the record of {txn} expires")
        del a.records[txn]
        a.gone.add(txn)
        self._check_learnable(txn)

    def _check_learnable(self, txn: str) -> None:
        """P8 (spec ``OutcomeLearnable``) once an acceptor's record of ``txn`` expired."""
        if "P8" not in self.cfg.checks:
            return
        kept = any(txn in a.records and a.records[txn].collected for a in self.accs)
        live = sum(
            1 for a in self.accs if txn not in a.gone and not (txn in a.records and a.records[txn].collected)
        )
        if kept or live >= majority(len(self.accs)):
            return
        for (rm, t), st in self.states().items():
            if t == txn and st == PREPARED:
                self._violate(
                    "P8", f"{rm} is prepared in {txn}, but no acceptor can tell it the outcome any more"
                )

    def _act_deliver(self) -> None:
        self._deliver(self.rng.randrange(len(self.net)), keep=False)

    def _act_duplicate(self) -> None:
        self._deliver(self.rng.randrange(len(self.net)), keep=True)

    def _act_drop(self) -> None:
        m = self.net.pop(self.rng.randrange(len(self.net)))
        self._gone(m)
        self.faults += 1
        self.line(f"drop {show(m.body)} {m.src}->{m.dst}")

    def _spurious_no_answer(self) -> None:
        """A call still in flight times out at the caller (its deadline passed)."""
        self._no_answer(self.rng.choice([c for c, call in self.calls.items() if call.alive > 0]))

    def _no_answer(self, call_id: int) -> None:
        call = self.calls.pop(call_id)
        self.line(f"{call.src}: the transport gives up on {show(call.request)} to a{call.acceptor}")
        if call.alive > 0:
            self.faults += 1
        gave_up = NoAnswer(call.request.txn_id, call.acceptor, call.request)
        rm = self.rms.get(call.src)
        if rm is not None:
            if rm.incarnation == call.inc:
                rm.step(partial(rm.core.on_acceptor, gave_up))
            return
        slot = self.coords[call.src]
        if slot.node is None or slot.incarnation != call.inc:
            return
        slot.node.acceptor_reply(gave_up, self.now)
        self._flush(slot)

    def _partition(self) -> None:
        nodes = [f"a{a.idx}" for a in self.accs] + list(self.coords)
        side = frozenset(x for x in nodes if self.rng.random() < 0.5)
        if not side or len(side) == len(nodes):
            side = frozenset({self.rng.choice(nodes)})
        self.side = side
        self.faults += 1
        rest = sorted(set(nodes) - side)
        self.line(f"partition {{{','.join(sorted(side))}}} from {{{','.join(rest)}}}")

    def _heal(self) -> None:
        self.side = frozenset()
        self.line("the partition heals")

    def _crash_acceptor(self, a: AcceptorNode) -> None:
        self.line(f"crash a{a.idx} (its durable state survives)")
        self.faults += 1
        self.crashed_acceptors += 1
        a.up = False
        for m, _ in a.waiters:
            self._hold(m.call, -1)
        a.waiters.clear()

    def _restart_acceptor(self, a: AcceptorNode) -> None:
        a.up = True
        if self.cfg.mutation == "amnesia":
            self.line(f"restart a{a.idx} (mutant: blank)")
            a.records.clear()
        else:
            self.line(f"restart a{a.idx}")

    def _crash_coordinator(self, slot: CoordSlot, why: str = "its soft state is lost") -> None:
        self.line(f"crash {slot.name} ({slot.leader_id}; {why})")
        self.faults += 1
        self.crashed_coordinators += 1
        slot.node = None

    def _restart_coordinator(self, slot: CoordSlot) -> None:
        slot.incarnation += 1
        same = self.cfg.mutation == "reuse_ballot"
        if not same:
            slot.leader_id = f"{slot.name}.{slot.incarnation}"
        self._start_node(slot.name)
        self.line(
            f"restart {slot.name} as leader {slot.leader_id}" + (" (mutant: its old id)" if same else "")
        )

    def _scan(self, slot: CoordSlot, txn: str) -> None:
        self.line(f"{slot.name}: recovery scan finds {txn} undecided")
        assert slot.node is not None
        slot.node.found_undecided([txn], self.now)
        self._flush(slot)

    # ------------------------------------------------------------------ phases

    def _step(self, acts: list[Action], faults: list[Action]) -> None:
        faults = [f for f in faults if f[0] > 0]  # a scale of 0 leaves a fault out
        if faults and (not acts or self.rng.random() < self.fault_rate):
            acts = faults
        if not acts:
            return
        x = self.rng.random() * sum(w for w, _ in acts)
        pick = acts[-1][1]
        for w, fn in acts:
            x -= w
            if x < 0:
                pick = fn
                break
        self.step_no += 1
        # What the last check saw: nothing changes an RM between steps.
        before = self._last_states if self._last_states is not None else self.states()
        pick()
        self._tick_due()
        self._check_step(before)

    def _progress_done(self) -> bool:
        return all(st not in UNDONE for st in self.states().values())

    def run(self) -> Result:
        try:
            with _mutated(self.cfg.mutation):
                self._begin()
                self._faulty_phase()
                self._quiet_phase()
        except _Violation as v:
            raise SimulationFailure(self.seed, self.cfg, v.found, self.schedule) from None
        outcomes: dict[str, Outcome | None] = {}
        for txn in self.txns:
            ds = self.decisions[txn]
            outcomes[txn] = ds[0][1] if ds else None
        return Result(
            seed=self.seed,
            cfg=self.cfg,
            schedule=self.schedule,
            steps=self.step_no,
            outcomes=outcomes,
            ballots=self.ballots,
            recovered=len(self.recovered_txns),
            faults=self.faults,
            committed_rms=sum(st == COMMITTED for st in self.states().values()),
            dueling=any(len(ls) > 1 for ls in self.ballot_leaders.values()),
            causes=self.causes,
            rm_resumed=self.rm_resumed,
            rm_led=self.rm_led,
            join_first=self.join_first,
        )

    def _begin(self) -> None:
        """c0's first incarnation begins every other transaction before the run; the
        others' Begins are in flight (the SDK sends Begin without waiting), so RMs' joins,
        and even the application's commit, may overtake them, and they may be lost."""
        slot = self.coords["c0"]
        assert slot.node is not None
        for k, t in enumerate(self.txns):
            if k % 2:
                self.send(Msg("app", "c0", Begin(t), token=("app", self.seq())))
            else:
                slot.node.request(("app", 0), Begin(t), self.now)
                self.begun.add(t)
        slot.node.take_ready()

    def _faulty_phase(self) -> None:
        steps = self.rng.randint(*self.cfg.fault_steps)
        self.schedule.append(f"# seed {self.seed}: {self.cfg.describe()}; {steps} faulty steps")
        knobs = ", ".join(f"{k}={v:g}" for k, v in self.knobs.items())
        self.schedule.append(f"# fault rate {self.fault_rate:g}; scales: {knobs}")
        for _ in range(steps):
            acts, faults = self._actions()
            if not acts and not faults:
                break
            self._step(acts, faults)

    def _quiet_phase(self) -> None:
        self.phase = "quiet"
        self.scales = dict.fromkeys(self.knobs, 1.0)
        self.schedule.append("# faults stop: every acceptor up, one coordinator, no loss")
        if self.side:
            self.step_no += 1
            self._heal()
        for a in self.accs:
            if not a.up:
                self.step_no += 1
                self._restart_acceptor(a)
        c0, c1 = self.coords["c0"], self.coords["c1"]
        owner_alive = c0.node is not None and c0.incarnation == 1
        survivor = c0 if owner_alive else self.rng.choice([c0, c1])
        for slot in (c0, c1):
            if slot is survivor and slot.node is None:
                self.step_no += 1
                self._restart_coordinator(slot)
            elif slot is not survivor and slot.node is not None:
                self.step_no += 1
                self._crash_coordinator(slot, "for good: one leader from here on")
        self._check_step(self.states())
        limit = self.step_no + self.cfg.quiet_steps
        while not self._progress_done():
            if "progress" not in self.cfg.checks:
                break
            acts, _ = self._actions()
            if self.step_no >= limit or not acts:
                stuck = ", ".join(f"{rm}/{t} {st}" for (rm, t), st in self.states().items() if st in UNDONE)
                why = f"after {self.cfg.quiet_steps} quiet steps" if acts else "with nothing left to do"
                raise _Violation([("progress", f"{why}: still {stuck}")])
            self._step(acts, [])
        # Deliver what is still in flight: late messages must not break anything either.
        self.schedule.append("# every RM is done; delivering what is still in flight")
        while self.net and self.step_no < limit:
            self.step_no += 1
            before = self.states()
            self._deliver(0, keep=False)
            self._tick_due()
            self._check_step(before)


# ----------------------------------------------------------------------------- entry points


def run_seed(seed: int, cfg: Config | None = None, verbose: bool = False) -> Result:
    """Run one seed; raises :class:`SimulationFailure` (an AssertionError) on a violation."""
    return Sim(seed, cfg or Config.for_seed(seed), verbose).run()


@dataclass
class Sweep:
    """What a range of seeds did: failures (seed, properties, message) and coverage counts."""

    seeds: int = 0
    failures: list[tuple[int, list[str], str]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=lambda: {"committed": 0, "aborted": 0, "undecided": 0})
    steps: int = 0
    ballots: int = 0
    recovered: int = 0
    dueling: int = 0
    faulty: int = 0
    #: Runs in which some RM committed (not just an empty transaction).
    rm_committed: int = 0
    configs: set[tuple[int, int, int]] = field(default_factory=set)
    causes: dict[str, int] = field(default_factory=dict)
    #: Runs in which a restarted RM resumed a prepared transaction / an RM led a ballot.
    rm_resumed: int = 0
    rm_led: int = 0
    join_first: int = 0
    seconds: float = 0.0

    def merge(self, other: Sweep) -> None:
        self.seeds += other.seeds
        self.failures += other.failures
        for k, v in other.outcomes.items():
            self.outcomes[k] += v
        for k, v in other.causes.items():
            self.causes[k] = self.causes.get(k, 0) + v
        self.steps += other.steps
        self.ballots += other.ballots
        self.recovered += other.recovered
        self.dueling += other.dueling
        self.faulty += other.faulty
        self.rm_committed += other.rm_committed
        self.rm_resumed += other.rm_resumed
        self.rm_led += other.rm_led
        self.join_first += other.join_first
        self.configs |= other.configs
        self.seconds = max(self.seconds, other.seconds)

    def summary(self) -> str:
        causes = ", ".join(f"{k} {v}" for k, v in sorted(self.causes.items()))
        return (
            f"{self.seeds} seeds in {self.seconds:.1f}s: {len(self.failures)} failed; txns {self.outcomes}; "
            f"{self.rm_committed} runs in which RMs committed; {self.steps} steps, {self.ballots} leader "
            f"ballots ({self.dueling} runs with two leaders, {self.rm_led} with an RM's own), "
            f"{self.recovered} decisions by recovery, {self.rm_resumed} runs with a prepared RM restarted, "
            f"{self.join_first} with a join before its Begin; "
            f"abort causes: {causes}"
        )


def sweep(
    start: int, stop: int, overrides: Mapping[str, object] | None = None, stop_at_first: bool = False
) -> Sweep:
    """Run seeds ``start`` to ``stop - 1``, each with ``Config.for_seed(seed, **overrides)``."""
    began = time.perf_counter()
    out = Sweep()
    for seed in range(start, stop):
        cfg = Config.for_seed(seed, **(overrides or {}))
        out.seeds += 1
        out.configs.add((cfg.f, cfg.n_rms, cfg.n_txns))
        try:
            res = run_seed(seed, cfg)
        except SimulationFailure as exc:
            out.failures.append((seed, exc.props, str(exc)))
            if stop_at_first:
                break
            continue
        out.steps += res.steps
        out.ballots += res.ballots
        out.recovered += res.recovered
        out.dueling += res.dueling
        out.faulty += res.faults > 0
        out.rm_committed += res.committed_rms > 0
        out.rm_resumed += res.rm_resumed
        out.rm_led += res.rm_led
        out.join_first += res.join_first
        for c in res.causes:
            out.causes[c] = out.causes.get(c, 0) + 1
        for o in res.outcomes.values():
            out.outcomes[o.value if o else "undecided"] += 1
    out.seconds = time.perf_counter() - began
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.simulator", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--seed", type=int, help="replay one seed and print its schedule")
    g.add_argument("--seeds", help="run a range A:B of seeds (B excluded)")
    p.add_argument("--verbose", action="store_true", help="also print every message sent")
    p.add_argument("--f", type=int, choices=(0, 1), help="F (default: from the seed)")
    p.add_argument("--rms", type=int, choices=(1, 2, 3), help="RMs (default: from the seed)")
    p.add_argument("--txns", type=int, choices=(1, 2, 3), help="transactions (default: from the seed)")
    p.add_argument("--mutation", choices=sorted(MUTATIONS), help="seed a bug into the core")
    p.add_argument(
        "--recover-attempts",
        type=int,
        default=20,
        help="a recovery's ballots before it gives up (default 20)",
    )
    p.add_argument("--checks", help="comma-separated properties to check (default: all)")
    p.add_argument(
        "--max-ballots", type=int, default=45, help="leader ballots in the faulty phase (default 45)"
    )
    p.add_argument("--fault-steps", default="20:600", help="range of faulty steps (default 20:600)")
    args = p.parse_args(argv)
    lo, _, hi = args.fault_steps.partition(":")
    over: dict[str, object] = {
        "recover_attempts": args.recover_attempts,
        "max_ballots": args.max_ballots,
        "fault_steps": (int(lo), int(hi)),
    }
    if args.f is not None:
        over["f"] = args.f
    if args.rms is not None:
        over["n_rms"] = args.rms
    if args.txns is not None:
        over["n_txns"] = args.txns
    if args.mutation:
        over["mutation"] = args.mutation
    if args.checks:
        unknown = set(args.checks.split(",")) - set(PROPERTIES)
        if unknown:
            p.error(f"unknown properties {sorted(unknown)}; known: {', '.join(PROPERTIES)}")
        over["checks"] = frozenset(args.checks.split(","))

    if args.seed is not None:
        try:
            res = run_seed(args.seed, Config.for_seed(args.seed, **over), verbose=args.verbose)
        except SimulationFailure as exc:
            print(exc)
            return 1
        print("\n".join(res.schedule))
        shown = {t: o.value if o else "undecided" for t, o in res.outcomes.items()}
        print(f"# ok: {res.steps} steps, outcomes {shown}")
        return 0
    a, _, b = args.seeds.partition(":")
    result = sweep(int(a), int(b), over)
    for seed, props, text in result.failures:
        print(f"seed {seed}: {','.join(props)}: {text.splitlines()[2].strip()}")
    print(result.summary())
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
