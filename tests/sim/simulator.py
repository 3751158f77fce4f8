"""Seeded simulation of Paxos Commit on the real core (DESIGN.md section 4, "Simulation").

What runs is the code the services run: every coordinator replica is a
:class:`rm_sdk.core.coordinator.CoordinatorNode` (a crash drops it, a restart makes a new
one with a fresh leader id), every acceptor runs the pure handlers of :mod:`acceptor.core`
over durable :class:`~acceptor.core.TxnRecord`'s (a crash keeps them). This module owns
only what is not the protocol: the network (loss, duplication, reordering, partitions),
the transport's give-up (:class:`~rm_sdk.core.messages.NoAnswer` when a call can no
longer be answered), a simulated clock that the scheduler advances to the next deadline,
the application, faults, and the safety checks (:data:`PROPERTIES`) after every step.

Resource managers are a SMALL STAND-IN (:class:`RMStandIn`) until the participant core
(``rm_sdk/core/participant.py``) lands: join, await prepare, vote at ballot 0 to the first
majority of acceptors (then all of them), learn the outcome by AskOutcome. Everything the
simulator needs of an RM goes through that class's few methods, so replacing it with the
real participant is a local change.

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
from acceptor import core as acceptor_core
from acceptor.core import TxnRecord
from rm_sdk.ballots import BallotRun, BallotSource, Tally, next_ballot
from rm_sdk.core.coordinator import CoordinatorNode, CoordinatorTimeouts
from rm_sdk.core.learner import LearnerTimeouts
from rm_sdk.core.messages import (
    Abort,
    Acknowledge,
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
    "RMStandIn",
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
    "progress": "after the faults stop, every RM that joined ends committed or aborted",
}

#: Seeded bugs in the real core (or in a process around it), each a simulator option.
MUTATIONS: Final[dict[str, str]] = {
    "free_prepared": "a leader's ballot proposes prepared in a free RM instance (pitfall 4)",
    "lower_mbal": "a leader's ballot counts 1b's whose mbal is below its ballot as promises (pitfall 4)",
    "abort_after_prepare": "an RM may abort on its own after it prepared (pitfall 3)",
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
    "partition",
    "clock",
)
FAULT_SCALES: Final = (0.0, 0.3, 1.0, 3.0)
TIMEOUT_KINDS: Final = ("vote_timeout", "recovery")
TIMEOUT_SCALES: Final = (0.3, 1.0, 3.0)
#: Probability that a step of the faulty phase is a fault, when one is enabled.
FAULT_RATES: Final = (0.04, 0.12, 0.3)
#: Seconds a stand-in RM's AwaitPrepare / AskOutcome waits at the coordinator.
RM_WAIT: Final = 3.0
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
    """A coordinator's request to an acceptor, until answered or given up (NoAnswer)."""

    coord: str
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
    #: Soft: bundle requests held until complete or their wait ends: (message, deadline).
    waiters: list[tuple[Msg, float]] = field(default_factory=list)


@dataclass
class CoordSlot:
    name: str
    incarnation: int
    leader_id: str
    node: CoordinatorNode | None


# ----------------------------------------------------------------------------- RM stand-in


class RMStandIn:
    """STAND-IN for the participant core until ``rm_sdk/core/participant.py`` lands.

    One RM in one transaction, as small as the simulation needs: join the owner, await
    Prepare, vote at ballot 0 (prepared: durably, then 2a's to the first majority of
    acceptors, the rest only on failure), learn the outcome with AskOutcome. The simulator
    uses only :meth:`deliver`, :meth:`actions`, ``state``, ``learned`` and
    ``was_prepared``; messages leave through ``send(dst, body)``.
    """

    def __init__(self, sim: Sim, rm: str, txn: str) -> None:
        self.sim = sim
        self.rm = rm
        self.txn = txn
        self.name = f"{rm}/{txn}"
        self.state = IDLE
        self.joins = 0
        #: The one coordinator request outstanding (its token), and its kind.
        self.call: tuple[str, int] | None = None
        self.call_kind = ""
        self.vote: Vote | None = None
        self.acked: set[int] = set()
        self.learned: Outcome | None = None
        self.was_prepared = False

    # -------------------------------------------------------------- sending

    def _request(self, kind: str, dst: str, body: Any) -> None:
        token = (self.name, self.sim.seq())
        self.call, self.call_kind = token, kind
        self.sim.send(Msg(self.name, dst, body, token=token))

    def _vote(self, targets: range | list[int]) -> None:
        assert self.vote is not None
        for i in targets:
            self.sim.send(Msg(self.name, f"a{i}", Phase2a(self.txn, RM_BALLOT, {self.rm: self.vote})))

    # -------------------------------------------------------------- actions

    def join(self) -> None:
        self.sim.line(f"{self.rm} joins {self.txn}")
        self.joins += 1
        self.state = JOINING
        self._request("join", "c0", Join(self.txn, self.rm))

    def poll(self) -> None:
        self.sim.line(f"{self.rm} awaits prepare for {self.txn}")
        self._request("await_prepare", "c0", AwaitPrepare(self.txn, self.rm, RM_WAIT))

    def ask(self) -> None:
        dst = self.sim.rng.choice(("c0", "c1"))
        self.sim.line(f"{self.rm} asks {dst} the outcome of {self.txn}")
        self._request("ask", dst, AskOutcome(self.txn, RM_WAIT))

    def timeout(self) -> None:
        self.sim.line(f"{self.rm}: its {self.call_kind} call for {self.txn} times out")
        if self.call_kind == "join" and self.state == JOINING:
            self.state = IDLE  # the application saw the join fail
        self.call = None

    def abort_on_own(self, why: str) -> None:
        """The spec's ``RMChooseToAbort`` (before preparing; the mutant also after)."""
        self.sim.line(f"{self.rm} aborts {self.txn} on its own ({why})")
        if self.state == PREPARED:
            self.state = ABORTED  # the mutant abort_after_prepare: no vote can follow
            return
        self.state = ABORTED
        self.vote = Vote.ABORTED
        self._vote(range(self.sim.n))
        self.acknowledge()

    def resend_vote(self) -> None:
        self.sim.line(f"{self.rm} resends its vote for {self.txn} to every acceptor")
        self._vote([i for i in range(self.sim.n) if i not in self.acked])

    def crash(self) -> None:
        """Restart a prepared RM: its vote is durable; it resends it and learns the outcome."""
        self.sim.line(f"crash and restart {self.rm} (prepared in {self.txn}, durably)")
        self.call = None
        self.acked.clear()
        self._vote(range(self.sim.n))

    def actions(self, quiet: bool, k: Callable[[str], float]) -> tuple[list[Action], list[Action]]:
        acts: list[Action] = []
        faults: list[Action] = []
        if self.state == IDLE and self.joins < 2 and not quiet:
            acts.append((1.0, self.join))
        if self.call is not None:
            if not self.sim.token_alive(self.call):
                acts.append((1.0, self.timeout))
            elif not quiet:
                faults.append((0.3 * k("rm_timeout"), self.timeout))
        if self.state == WORKING:
            if self.call is None:
                acts.append((1.0, self.poll))
            if self.sim.owner_gone():
                # The participant gives up on an owner it cannot reach (its lease).
                acts.append((0.5, partial(self.abort_on_own, "its owner is gone")))
            elif not quiet:
                faults.append((0.3 * k("own_abort"), partial(self.abort_on_own, "unilateral")))
        if self.state == PREPARED:
            if self.call is None:
                acts.append((1.0, self.ask))
            if len(self.acked) < self.sim.need and not self.sim.in_flight_from(self.name, Phase2a):
                acts.append((1.0, self.resend_vote))
            if not quiet:
                faults.append((0.15 * k("crash_rm"), self.crash))
                if self.sim.cfg.mutation == "abort_after_prepare":
                    faults.append((0.3, partial(self.abort_on_own, "mutant: after it prepared")))
        return acts, faults

    # -------------------------------------------------------------- replies

    def deliver(self, m: Msg) -> None:
        body = m.body
        if isinstance(body, (Phase2b, Refused)):
            if isinstance(body, Phase2b):
                st = body.states.get(self.rm)
                if st is not None and st.bal == RM_BALLOT and st.val == self.vote:
                    self.acked.add(body.acceptor)
            return
        current = m.token == self.call
        if current:
            self.call = None
        if isinstance(body, Decided):
            self._learn(body.decision.outcome)
        elif not current:
            return
        elif isinstance(body, Joined) and self.state == JOINING:
            self.state = WORKING
        elif isinstance(body, Failed):
            if self.state == JOINING:
                self.state = IDLE
            elif self.state == WORKING:
                self.abort_on_own(f"the coordinator answered {type(body.error).__name__}")
        elif isinstance(body, Prepare) and body.prepare and self.state == WORKING:
            self._prepare()

    def _prepare(self) -> None:
        if self.sim.rng.random() < 0.12 * self.sim.k("own_abort"):
            self.sim.event(f"{self.rm} votes aborted")
            self.state = ABORTED
            self.vote = Vote.ABORTED
            self._vote(range(self.sim.n))
            return
        # Pitfall 3: prepared is durable before the 2a leaves; then to the first majority.
        self.sim.event(f"{self.rm} prepares (durably) and votes prepared")
        self.state = PREPARED
        self.was_prepared = True
        self.vote = Vote.PREPARED
        self.sim.prepared_votes.add((self.txn, self.rm))
        self._vote(range(self.sim.need))

    def _learn(self, outcome: Outcome) -> None:
        if self.state in (COMMITTED, ABORTED) or self.state == IDLE:
            return
        self.learned = outcome
        self.state = COMMITTED if outcome is Outcome.COMMITTED else ABORTED
        self.sim.event(f"{self.rm} learns {self.txn} {outcome.value}")
        self.acknowledge()

    def acknowledge(self) -> None:
        """Spec ``RMAck``: applied (durably), so say so to the owner; lost or not, the RM
        never asks again (what it answers is on no call of its own)."""
        outcome = Outcome.COMMITTED if self.state == COMMITTED else Outcome.ABORTED
        self.sim.line(f"{self.rm} acknowledges {self.txn} {outcome.value}")
        self.sim.send(
            Msg(self.name, "c0", Acknowledge(self.txn, self.rm, outcome), token=(self.name, self.sim.seq()))
        )


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
    replies, older than the ballot) is fed to the ballot as 1b's."""

    def _ballot(self, now: float, out: Ready) -> None:
        super()._ballot(now, out)
        if self.run is not None and self.phase is core_leader.RecoveryPhase.PHASE1:
            for acc, states in self.tally.reports.items():
                self.run.on_phase1b(acc, states)


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
        patches.append((core_coordinator, "BallotSource", _RestartingSource))
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
        self.now = 0.0
        self.accs = [AcceptorNode(i) for i in range(self.n)]
        self.coords = {c: CoordSlot(c, 1, f"{c}.1", None) for c in ("c0", "c1")}
        self.txns = [f"t{i + 1}" for i in range(cfg.n_txns)]
        self.rms: dict[str, RMStandIn] = {}
        for t in self.txns:
            for i in range(cfg.n_rms):
                r = RMStandIn(self, f"rm{i + 1}", t)
                self.rms[r.name] = r
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
        self.trace(f"send {show(m.body)} {m.src}->{m.dst}")
        body = m.body
        if isinstance(body, Phase2a):
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

    def token_alive(self, token: Any) -> bool:
        """Whether a request of ``token`` or an answer to it may still arrive."""
        if any(m.token == token for m in self.net):
            return True
        for slot in self.coords.values():
            node = slot.node
            if node is None:
                continue
            for o in node.owned.values():
                if token in o.prepare_waiters or token in o.outcome_waiters or token in o.commit_waiters:
                    return True
            for lr in node.learners.values():
                if token in lr.waiters:
                    return True
        return False

    def owner_gone(self) -> bool:
        """Whether c0's first incarnation, which began every transaction, is gone."""
        c0 = self.coords["c0"]
        return c0.node is None or c0.incarnation != 1

    def in_flight_from(self, src: str, kind: type) -> bool:
        return any(m.src == src and isinstance(m.body, kind) for m in self.net)

    def _severed(self, x: str, y: str) -> bool:
        if not self.side or "/" in x or "/" in y or x == "app" or y == "app":
            return False
        return (x in self.side) != (y in self.side)

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
                node.request(m.token, m.body, self.now)
            else:
                self.calls.pop(m.call, None)  # answered: the transport has nothing to give up
                node.acceptor_reply(m.body, self.now)
            self._flush(slot)
        else:
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
        self.ballots += ready.ballots
        for txn, text in ready.log:
            self.trace(f"{slot.name} log {txn}: {text}")
        for ev in ready.trace:
            if ev.name == "Phase1a":
                bal = Ballot(*ev.fields["bal"])
                key = (ev.txn_id, bal)
                if key in self.started:
                    self._violate("P7", f"{slot.leader_id} starts ballot {bal} of {ev.txn_id} a second time")
                self.started.add(key)
                self.ballot_leaders.setdefault(ev.txn_id, set()).add(slot.name)
                self.event(f"{slot.leader_id} starts ballot {bal} of {ev.txn_id}")
            elif ev.name == "Phase2a":
                self.leader_2a.add(ev.txn_id)
            elif ev.name == "Decide":
                self._decided(slot, ev.txn_id, Outcome(ev.fields["outcome"]))
            elif ev.name == "Close":
                self.event(f"{slot.name} closes {ev.txn_id} with set {{{','.join(ev.fields['set'])}}}")
            elif ev.name == "ApplicationAbort":
                self.event(f"{slot.name} aborts {ev.txn_id} before close")
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

    def _decided(self, slot: CoordSlot, txn: str, outcome: Outcome) -> None:
        self.event(f"{slot.name} decides {txn} {outcome.value}")
        if txn in self.leader_2a:
            self.recovered_txns.add(txn)
        self.decisions[txn].append((slot.name, outcome))
        if len({o for _, o in self.decisions[txn]}) > 1:
            so_far = ", ".join(f"{c} {o.value}" for c, o in self.decisions[txn])
            self._violate("P3", f"{slot.name} decides {txn} {outcome.value}; decisions so far: {so_far}")
        values = {ins: v for (t, ins), v in self.hist_chosen.items() if t == txn}
        b0 = self.ballot0.get(txn)
        rule, _ = decide(values, b0 if isinstance(b0, RMSet) else None)
        if rule is not outcome:
            self._violate(
                "P3", f"{slot.name} decides {txn} {outcome.value}, the chosen values give {rule.value}"
            )

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

    def _check_step(self, before: dict[str, str]) -> None:
        decided_outcomes = {t: {o for _, o in ds} for t, ds in self.decisions.items()}
        for name, r in self.rms.items():
            old = before[name]
            if old == r.state:
                continue
            if old == PREPARED and (
                r.learned is None or r.state != r.learned.value or r.learned not in decided_outcomes[r.txn]
            ):
                self._violate("P5", f"{r.rm} of {r.txn} went from prepared to {r.state} without learning it")
            if r.state == COMMITTED and not r.was_prepared:
                self._violate("P6", f"{r.rm} of {r.txn} committed without having prepared")
        for txn in self.txns:
            states = {r.rm: r.state for r in self.rms.values() if r.txn == txn}
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
        for txn in self.txns:
            if txn in self.app_done:
                continue
            token = self.app_call[txn]
            if token is not None:
                if not self.token_alive(token):
                    add((0.5, partial(self._app_request, txn, False)))
                continue
            waiting = any(r.state in (IDLE, JOINING) for r in self.rms.values() if r.txn == txn)
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
            more, more_faults = r.actions(quiet, self.k)
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
        self.line(f"{call.coord}: the transport gives up on {show(call.request)} to a{call.acceptor}")
        slot = self.coords[call.coord]
        if call.alive > 0:
            self.faults += 1
        if slot.node is None or slot.incarnation != call.inc:
            return
        slot.node.acceptor_reply(NoAnswer(call.request.txn_id, call.acceptor, call.request), self.now)
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
        before = {k: r.state for k, r in self.rms.items()}
        pick()
        self._tick_due()
        self._check_step(before)

    def _progress_done(self) -> bool:
        return all(r.state not in UNDONE for r in self.rms.values())

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
            committed_rms=sum(r.state == COMMITTED for r in self.rms.values()),
            dueling=any(len(ls) > 1 for ls in self.ballot_leaders.values()),
            causes=self.causes,
        )

    def _begin(self) -> None:
        """c0's first incarnation begins every transaction before the run."""
        slot = self.coords["c0"]
        assert slot.node is not None
        for t in self.txns:
            slot.node.request(("app", 0), Begin(t), self.now)
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
        self._check_step({k: r.state for k, r in self.rms.items()})
        limit = self.step_no + self.cfg.quiet_steps
        while not self._progress_done():
            if "progress" not in self.cfg.checks:
                break
            acts, _ = self._actions()
            if self.step_no >= limit or not acts:
                stuck = ", ".join(f"{r.rm}/{r.txn} {r.state}" for r in self.rms.values() if r.state in UNDONE)
                why = f"after {self.cfg.quiet_steps} quiet steps" if acts else "with nothing left to do"
                raise _Violation([("progress", f"{why}: still {stuck}")])
            self._step(acts, [])
        # Deliver what is still in flight: late messages must not break anything either.
        self.schedule.append("# every RM is done; delivering what is still in flight")
        while self.net and self.step_no < limit:
            self.step_no += 1
            before = {k: r.state for k, r in self.rms.items()}
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
        self.configs |= other.configs
        self.seconds = max(self.seconds, other.seconds)

    def summary(self) -> str:
        causes = ", ".join(f"{k} {v}" for k, v in sorted(self.causes.items()))
        return (
            f"{self.seeds} seeds in {self.seconds:.1f}s: {len(self.failures)} failed; txns {self.outcomes}; "
            f"{self.rm_committed} runs in which RMs committed; {self.steps} steps, {self.ballots} leader "
            f"ballots ({self.dueling} runs with two leaders), {self.recovered} decisions by recovery; "
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
