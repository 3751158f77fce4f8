"""Seeded simulation of Paxos Commit with a registrar (DESIGN.md section 4, "Simulation").

Drives the pure core (``rm_sdk.protocol``, ``rm_sdk.ballots``, ``acceptor.rules``,
``coordinator.rules``) through the same glue as the real services, over a simulated network
that loses, duplicates, reorders and partitions messages, with acceptors (durable state
kept), coordinators (soft state lost, fresh leader id) and prepared RMs that crash and
restart. Deterministic: one ``random.Random(seed)`` makes every choice; no clock, threads
or asyncio. Time is abstract: every timeout of the real services (RPC timeouts, the vote
timeout, the recovery timeout, back-offs, long-poll waits) is an action the scheduler may
pick. Each seed also scales every kind of fault differently (swarm testing).

What is mirrored, and from where (each handler below cites its original):

- acceptors: ``acceptor/service.py`` ``AcceptorServicer`` (``_phase1a``, ``_phase2a``,
  ``_await_phase2b``, ``_record_outcome``): check the request, apply ``phase1b``/``phase2b``
  to durable state (all of a request or none of it), reply with the resulting states.
- the owner (registrar + leader): ``coordinator/service.py`` ``Join``, ``AwaitPrepare``,
  ``GetOutcome``, ``_drive``/``_decide_owned``; ``rm_sdk/leader.py`` ``Leader``:
  ``send_ballot0``, ``await_bundles``, ``recover``, ``_run_ballot``, and, called as they
  are, ``Leader.evaluate`` and the incarnation's ``BallotSource``.
- the other replica: ``coordinator/service.py`` ``_recovery_loop``/``_learn``/``_learn_once``.
- RMs: ``rm_sdk/participant.py`` ``Participant`` (``join``, ``_run``, ``_await_prepare``,
  ``_finish_prepared``, ``_send_vote``, ``_apply``, ``resume``).

Where it abstracts: an RPC is a request and a reply sharing a call id (the caller uses
the first reply of a call it still waits for); ``GetOutcome`` answers at once (its wait
ended); a working RM may abort on its own at any time (the spec's ``RMChooseToAbort``; the
participant does so when its owner is gone or ``prepare()`` refuses); the application's
commit or abort and the transaction timeout are one action.

Safety is checked after every step (see :data:`PROPERTIES`); after the faulty phase a
quiescent phase (no faults, one live coordinator, every message delivered) checks that
every RM that joined ends committed or aborted. :data:`MUTATIONS` seed bugs in the glue.

Usage::

    python -m tests.sim.simulator --seed 17 [--verbose]
    python -m tests.sim.simulator --seeds 0:1000 [--mutation free_prepared]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final, cast

from acceptor.rules import bundle_complete, check_phase1a, check_phase2a, phase1b, phase2b
from coordinator.rules import Registration, RegistrationClosed
from rm_sdk.ballots import BallotRun, Tally, instances_to_recover, next_ballot
from rm_sdk.leader import AcceptorPeers, Leader
from rm_sdk.protocol import (
    NO_BALLOT,
    NO_SET,
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
    "Result",
    "SimulationFailure",
    "Sweep",
    "main",
    "run_seed",
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

#: Seeded bugs in the glue (not in the core), each a simulator option.
MUTATIONS: Final[dict[str, str]] = {
    "free_prepared": "a leader proposes prepared in a free RM instance (pitfall 4)",
    "lower_mbal": "a leader counts states whose mbal is lower than its ballot as promises: what its "
    "tally already holds (2b bundles and replies) and late 1b's of its earlier ballots (pitfall 4)",
    "abort_after_prepare": "an RM may abort on its own after it prepared (pitfall 3)",
    "reuse_ballot": "a restarted coordinator keeps its old leader id, so reuses its ballots (pitfall 2)",
    "restart_rounds": "each Leader.recover call counts rounds from 1 again, so a leader that gives "
    "up and recovers again reuses its ballots (the glue before BallotSource; pitfall 2)",
    "amnesia": "a restarted acceptor comes back blank (pitfall 1)",
}

WORKING: Final = "working"
PREPARED: Final = "prepared"
COMMITTED: Final = "committed"
ABORTED: Final = "aborted"
IDLE: Final = "idle"
JOINING: Final = "joining"
GAVE_UP: Final = "gave-up"
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
)
FAULT_SCALES: Final = (0.0, 0.3, 1.0, 3.0)
TIMEOUT_KINDS: Final = ("vote_timeout", "recovery")
TIMEOUT_SCALES: Final = (0.3, 1.0, 3.0)
#: Probability that a step of the faulty phase is a fault, when one is enabled.
FAULT_RATES: Final = (0.04, 0.12, 0.3)
#: participant._send_vote tries this many rounds.
VOTE_ATTEMPTS: Final = 6


@dataclass(frozen=True)
class Config:
    f: int = 1
    n_rms: int = 2
    n_txns: int = 1
    mutation: str = ""
    #: Steps of the faulty phase are drawn from this range.
    fault_steps: tuple[int, int] = (20, 600)
    #: Leader ballots that may start during the faulty phase (keeps runs finite); more than
    #: twice ``recover_attempts``, so that a recover() call may give up and be called again.
    max_ballots: int = 45
    #: Bound on the quiescent phase; exceeding it is a progress failure.
    quiet_steps: int = 6000
    #: ``Leader.recover``'s ``attempts`` (the services use the default, 20).
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


def show_state(ins: Instance, st: InstanceState) -> str:
    return f"{ins}: mbal={st.mbal} bal={st.bal} val={show_val(st.val)}"


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Msg:
    """One message in flight. Requests and their replies share ``call``: a caller uses only
    the first reply to a call it still waits for (an RPC has one reply)."""

    kind: str
    src: str
    dst: str
    txn: str
    call: int
    bal: Ballot = RM_BALLOT
    instances: tuple[Instance, ...] = ()
    proposals: tuple[tuple[Instance, Value], ...] = ()
    states: tuple[tuple[Instance, InstanceState], ...] = ()
    outcome: Outcome = Outcome.PENDING
    #: await2b: wait for a complete bundle; bundle: the acceptor has a record of the txn;
    #: prepare_reply: prepare.
    flag: bool = False
    #: join_reply: ok/closed/notfound; prepare_reply/outcome_reply: notfound; phase2b: error.
    note: str = ""

    def __str__(self) -> str:
        k, t = self.kind, self.txn
        if k == "phase1a":
            return f"phase1a({t}, bal={self.bal}, ins={','.join(self.instances)})"
        if k == "phase2a":
            props = ", ".join(f"{i}={show_val(v)}" for i, v in self.proposals)
            return f"phase2a({t}, bal={self.bal}, {props})"
        if k in ("phase1b", "phase2b", "bundle"):
            body = "; ".join(show_state(i, s) for i, s in self.states) or "nothing"
            if self.note:
                body = self.note
            extra = f", outcome={self.outcome.value}" if self.outcome is not Outcome.PENDING else ""
            return f"{k}({t}, {body}{extra})"
        if k == "await2b":
            return f"await2b({t}, {'wait' if self.flag else 'now'})"
        if k == "record":
            return f"record({t}, {self.outcome.value})"
        if k == "join_reply":
            return f"join_reply({t}, {self.note})"
        if k == "prepare_reply":
            return f"prepare_reply({t}, {self.note or ('prepare' if self.flag else self.outcome.value)})"
        if k == "outcome_reply":
            return f"outcome_reply({t}, {self.note or self.outcome.value})"
        return f"{k}({t})"


# ----------------------------------------------------------------------------- processes


@dataclass
class Fanout:
    """One ``AcceptorPeers.fanout`` (or an RM's gather of 2a's): the acceptors not yet heard."""

    call: int
    waiting: set[int]


@dataclass
class AcceptorNode:
    idx: int
    name: str
    up: bool = True
    #: Durable (acceptor/storage.py TxnRecord): per transaction, per instance.
    instances: dict[str, dict[Instance, InstanceState]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    #: Soft: AwaitPhase2b calls waiting for a complete bundle.
    waiters: list[Msg] = field(default_factory=list)


@dataclass
class Owned:
    """coordinator/service.py OwnedTxn: the owner's registrar soft state."""

    registration: Registration = field(default_factory=Registration)
    prepare: bool = False
    driving: bool = False


@dataclass
class Driver:
    """One coordinator's task for one transaction: the owner's ``_drive`` or a replica's
    ``_learn_once``, including the ``Leader.recover`` loop it may run."""

    txn: str
    owner: bool
    known: RMSet | None
    tally: Tally
    #: ballot0 (send_ballot0), bundles (await_bundles), learn-read, learn-wait (too young
    #: to recover), recover-1a, recover-2a (_run_ballot), backoff (between attempts).
    stage: str = ""
    fan: Fanout | None = None
    recorded: list[Outcome] = field(default_factory=list)
    replied: int = 0
    seen: bool = False
    highest: Ballot = NO_BALLOT
    attempt: int = 0
    run: BallotRun | None = None
    covered: set[Instance] = field(default_factory=set)
    new_members: bool = False
    known2a: RMSet | None = None
    old_1a_calls: set[int] = field(default_factory=set)


@dataclass
class CoordNode:
    """One coordinator replica; ``leader`` is its incarnation's ``rm_sdk.leader.Leader``
    (its id and its ``BallotSource``)."""

    name: str
    incarnation: int
    leader: Leader
    up: bool = True
    owned: dict[str, Owned] = field(default_factory=dict)
    drivers: dict[str, Driver] = field(default_factory=dict)
    decided: dict[str, Outcome] = field(default_factory=dict)
    prepare_waiters: list[Msg] = field(default_factory=list)

    @property
    def leader_id(self) -> str:
        return self.leader.leader_id


@dataclass
class RMNode:
    """One RM in one transaction (participant.py: its ``states`` entry and task)."""

    rm: str
    txn: str
    state: str = IDLE
    joins: int = 0
    #: The one coordinator RPC outstanding (join, await_prepare, get_outcome), 0 if none.
    call: int = 0
    call_kind: str = ""
    #: Why the outstanding get_outcome was asked: "prepared", "notfound" or "lost".
    ask_why: str = ""
    asks: int = 0
    vote: Vote | None = None
    vote_fan: Fanout | None = None
    vote_attempt: int = 0
    vote_accepted: set[int] = field(default_factory=set)
    #: True while a _send_vote runs (a round in flight or a back-off before the next).
    voting: bool = False
    learned: Outcome | None = None
    was_prepared: bool = False


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


class _Peers:
    """What ``Leader.evaluate`` needs of ``AcceptorPeers``: the number of acceptors."""

    def __init__(self, n: int) -> None:
        self.n = n


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
        self.n = 2 * cfg.f + 1
        self.need = majority(self.n)
        self.accs = [AcceptorNode(i, f"a{i}") for i in range(self.n)]
        self.coords = {name: CoordNode(name, 1, self._new_leader(f"{name}.1")) for name in ("c0", "c1")}
        self.txns = [f"t{i + 1}" for i in range(cfg.n_txns)]
        self.rm_ids = [f"rm{i + 1}" for i in range(cfg.n_rms)]
        self.rms: dict[tuple[str, str], RMNode] = {
            (t, r): RMNode(r, t) for t in self.txns for r in self.rm_ids
        }
        # c0's first incarnation began every transaction (Begin happened before the run).
        for t in self.txns:
            self.coords["c0"].owned[t] = Owned()
        self.net: list[Msg] = []
        self.schedule: list[str] = []
        self.step_no = 0
        self.phase = "faulty"
        self.next_call = 0
        self.ballots = 0
        self.recovered = 0
        self.faults = 0
        self.crashed_acceptors = 0
        self.crashed_coordinators = 0
        #: A network partition: the acceptors and coordinators on one side; messages between
        #: the sides are lost (RMs reach everyone). Empty: no partition.
        self.side: frozenset[str] = frozenset()
        self._evaluator = self._new_leader("evaluator")
        self.started: set[tuple[str, Ballot]] = set()
        # History, for the checks.
        self.hist_chosen: dict[tuple[str, Instance], Value] = {}
        self.sent2a: dict[tuple[str, Instance, Ballot], Value] = {}
        self.ballot0: dict[str, Value] = {}
        self.prepared_votes: set[tuple[str, str]] = set()
        self.decisions: dict[str, list[tuple[str, Outcome]]] = {t: [] for t in self.txns}
        self.dirty: set[str] = set()
        self.new_decisions: list[tuple[str, str, Outcome]] = []
        self.ballot_leaders: dict[str, set[str]] = {}
        self.violations: list[tuple[str, str]] = []

    def _k(self, kind: str) -> float:
        """This seed's scale for a kind of fault or timeout (1 once the faults stop)."""
        return self.knobs[kind] if self.phase == "faulty" else 1.0

    # ------------------------------------------------------------------ logging

    def _line(self, text: str) -> None:
        self.schedule.append(f"{self.step_no}: {text}")

    def _event(self, text: str) -> None:
        self.schedule.append(f"      {text}")

    def _trace(self, text: str) -> None:
        if self.verbose:
            self.schedule.append(f"      . {text}")

    def _violate(self, prop: str, detail: str) -> None:
        if prop in self.cfg.checks:
            self.violations.append((prop, detail))

    # ------------------------------------------------------------------ network

    def _call(self) -> int:
        self.next_call += 1
        return self.next_call

    def _send(self, m: Msg) -> None:
        self.net.append(m)
        self._trace(f"send {m} {m.src}->{m.dst}")
        if m.kind == "phase2a":
            for ins, val in m.proposals:
                key = (m.txn, ins, m.bal)
                old = self.sent2a.setdefault(key, val)
                if old != val:
                    self._violate(
                        "P7",
                        f"{m.src} sent phase2a({m.txn}, bal={m.bal}, {ins}={show_val(val)}) after "
                        f"{show_val(old)} at that ballot",
                    )

    def _fanout(self, src: str, kind: str, txn: str, **kw: object) -> Fanout:
        """``AcceptorPeers.fanout``: one request to every acceptor."""
        call = self._call()
        for a in self.accs:
            self._send(Msg(kind, src, a.name, txn, call, **kw))  # type: ignore[arg-type]
        return Fanout(call, set(range(self.n)))

    def _reply(self, req: Msg, kind: str, **kw: object) -> None:
        self._send(Msg(kind, req.dst, req.src, req.txn, req.call, **kw))  # type: ignore[arg-type]

    def _call_alive(self, call: int) -> bool:
        """Whether a request or reply of ``call`` still exists: if not, the RPC can only
        end by its timeout."""
        if any(m.call == call for m in self.net):
            return True
        if any(w.call == call for a in self.accs for w in a.waiters):
            return True
        return any(w.call == call for c in self.coords.values() for w in c.prepare_waiters)

    def _severed(self, x: str, y: str) -> bool:
        if not self.side or x.startswith("rm") or y.startswith("rm"):
            return False
        return (x in self.side) != (y in self.side)

    def _deliver(self, idx: int, keep: bool) -> None:
        m = self.net[idx] if keep else self.net.pop(idx)
        self._line(f"deliver{' a copy of' if keep else ''} {m} {m.src}->{m.dst}")
        if self._severed(m.src, m.dst):
            self._event("lost: the partition separates them")
            return
        if m.dst.startswith("a"):
            acc = self.accs[int(m.dst[1:])]
            if not acc.up:
                self._event(f"lost: {acc.name} is down")
                return
            self._acceptor(acc, m)
        elif m.dst.startswith("c"):
            c = self.coords[m.dst]
            if not c.up:
                self._event(f"lost: {c.name} is down")
                return
            self._coordinator(c, m)
        else:
            self._rm(self.rms[(m.txn, m.dst)], m)

    # ------------------------------------------------------------------ acceptor (acceptor/service.py)

    def _acceptor(self, acc: AcceptorNode, m: Msg) -> None:
        if m.kind == "phase1a":
            # AcceptorServicer._phase1a
            check_phase1a(m.bal, list(m.instances))
            states = acc.instances.setdefault(m.txn, {})
            reply: dict[Instance, InstanceState] = {}
            for ins in m.instances:
                states[ins] = reply[ins] = phase1b(states.get(ins, InstanceState()), m.bal)
            self._event(f"{acc.name}: " + "; ".join(show_state(i, s) for i, s in reply.items()))
            self.dirty.add(m.txn)
            self._reply(
                m, "phase1b", states=tuple(reply.items()), outcome=acc.outcomes.get(m.txn, Outcome.PENDING)
            )
            self._wake(acc, m.txn)
        elif m.kind == "phase2a":
            # AcceptorServicer._phase2a: the store step applies all proposals or none.
            proposals = dict(m.proposals)
            check_phase2a(m.bal, proposals, len(m.proposals))
            states = acc.instances.get(m.txn, {})
            new = dict(states)
            reply = {}
            try:
                for ins, val in proposals.items():
                    new[ins] = reply[ins] = phase2b(states.get(ins, InstanceState()), m.bal, val)
            except ConflictError as exc:
                self._event(f"{acc.name} refuses: {exc}")
                self._reply(m, "phase2b", note=f"refused: {exc}")
                return
            acc.instances[m.txn] = new
            self._event(f"{acc.name}: " + "; ".join(show_state(i, s) for i, s in reply.items()))
            self.dirty.add(m.txn)
            self._reply(
                m, "phase2b", states=tuple(reply.items()), outcome=acc.outcomes.get(m.txn, Outcome.PENDING)
            )
            self._wake(acc, m.txn)
        elif m.kind == "await2b":
            # AcceptorServicer._await_phase2b: answer at once if complete, decided or not
            # asked to wait; else hold the call until then (or its wait ends: an action).
            if not m.flag or self._bundle_ready(acc, m.txn):
                self._send_bundle(acc, m)
            else:
                acc.waiters.append(m)
                self._event(f"{acc.name} holds the call until its bundle is complete")
        elif m.kind == "record":
            # AcceptorServicer._record_outcome
            old = acc.outcomes.get(m.txn, Outcome.PENDING)
            if old is not Outcome.PENDING and old is not m.outcome:
                self._event(f"{acc.name} refuses: already recorded {old.value}")
                self._violate("P3", f"{acc.name} asked to record {m.outcome.value} after {old.value}")
                return
            acc.outcomes[m.txn] = m.outcome
            acc.instances.setdefault(m.txn, {})
            self._wake(acc, m.txn)
        else:
            raise AssertionError(f"acceptor got {m}")

    def _bundle_ready(self, acc: AcceptorNode, txn: str) -> bool:
        return bundle_complete(acc.instances.get(txn, {})) or txn in acc.outcomes

    def _send_bundle(self, acc: AcceptorNode, req: Msg) -> None:
        states = acc.instances.get(req.txn, {})
        has_record = req.txn in acc.instances or req.txn in acc.outcomes
        self._reply(
            req,
            "bundle",
            states=tuple(sorted(states.items())),
            outcome=acc.outcomes.get(req.txn, Outcome.PENDING),
            flag=has_record,
        )

    def _wake(self, acc: AcceptorNode, txn: str) -> None:
        if not any(w.txn == txn for w in acc.waiters) or not self._bundle_ready(acc, txn):
            return
        for w in [w for w in acc.waiters if w.txn == txn]:
            acc.waiters.remove(w)
            self._send_bundle(acc, w)

    # ------------------------------------------------------------------ coordinator (service.py)

    def _coordinator(self, c: CoordNode, m: Msg) -> None:
        if m.kind == "join":
            # CoordinatorServicer.Join
            o = c.owned.get(m.txn)
            if o is None:
                self._reply(m, "join_reply", note="notfound")
                return
            try:
                if m.src not in o.registration.joined:
                    o.registration.join(m.src)
            except RegistrationClosed:
                self._reply(m, "join_reply", note="closed")
                return
            self._reply(m, "join_reply", note="ok")
        elif m.kind == "await_prepare":
            # CoordinatorServicer.AwaitPrepare
            o = c.owned.get(m.txn)
            if o is None:
                self._reply(m, "prepare_reply", note="notfound")
                return
            assert m.src in o.registration.joined, f"{m.src} polls {m.txn} without having joined"
            if m.txn in c.decided or o.prepare:
                self._answer_prepare(c, m)
            else:
                c.prepare_waiters.append(m)
        elif m.kind == "get_outcome":
            # CoordinatorServicer.GetOutcome: an owned txn's decision, else learn it.
            if m.txn in c.decided:
                self._reply(m, "outcome_reply", outcome=c.decided[m.txn])
                return
            if m.txn not in c.owned:
                self._learn(c, m.txn, "asked by " + m.src)
            self._reply(m, "outcome_reply")
        elif m.kind in ("phase1b", "phase2b", "bundle"):
            self._coordinator_reply(c, m)
        else:
            raise AssertionError(f"coordinator got {m}")

    def _answer_prepare(self, c: CoordNode, req: Msg) -> None:
        o = c.owned[req.txn]
        d = c.decided.get(req.txn)
        if d is not None:
            closed = o.registration.closed
            in_set = closed is not None and req.src in closed.rms
            self._reply(req, "prepare_reply", flag=in_set and d is Outcome.COMMITTED, outcome=d)
        else:
            self._reply(req, "prepare_reply", flag=o.prepare)

    def _wake_prepare(self, c: CoordNode, txn: str) -> None:
        for w in [w for w in c.prepare_waiters if w.txn == txn]:
            c.prepare_waiters.remove(w)
            self._answer_prepare(c, w)

    def _evaluate(self, tally: Tally, known: RMSet | None) -> Outcome | None:
        d = self._evaluator.evaluate(tally, known)  # rm_sdk/leader.py Leader.evaluate, as is
        return None if d is None else d.outcome

    def _app_request(self, c: CoordNode, txn: str, abort: bool) -> None:
        """CoordinatorServicer.Commit/Abort -> _start_commit -> _drive -> _decide_owned."""
        self._line(f"application asks {c.name} to {'abort' if abort else 'commit'} {txn}")
        o = c.owned[txn]
        o.driving = True
        value: Value
        known: RMSet | None
        if abort:
            o.registration.closed = RMSet.of(())  # later joins fail
            value, known = NO_SET, None
        else:
            value = known = o.registration.close()
        self._event(f"{c.name} closes registration of {txn}: ballot 0 proposes {show_val(value)}")
        self.ballot0[txn] = value
        if known is not None:
            o.prepare = True  # the paper's Prepare; RMs vote while the registrar's 2a flies
            self._wake_prepare(c, txn)
        drv = Driver(txn, owner=True, known=known, tally=Tally(self.n), stage="ballot0")
        c.drivers[txn] = drv
        # Leader.send_ballot0: fanout, done=lambda: False
        drv.fan = self._fanout(c.name, "phase2a", txn, bal=RM_BALLOT, proposals=((REGISTRAR, value),))

    def _learn(self, c: CoordNode, txn: str, why: str) -> None:
        """CoordinatorServicer._learn/_learn_once: read the acceptors (wait 0)."""
        if txn in c.decided or txn in c.drivers or txn in c.owned:
            return
        self._event(f"{c.name} learns {txn} ({why})")
        drv = Driver(txn, owner=False, known=None, tally=Tally(self.n), stage="learn-read")
        c.drivers[txn] = drv
        drv.fan = self._fanout(c.name, "await2b", txn, flag=False)

    def _coordinator_reply(self, c: CoordNode, m: Msg) -> None:
        drv = c.drivers.get(m.txn)
        i = int(m.src[1:])
        current = drv is not None and drv.fan is not None and m.call == drv.fan.call
        if (
            not current
            and self.cfg.mutation == "lower_mbal"
            and drv is not None
            and drv.stage == "recover-1a"
            and m.kind == "phase1b"
            and m.call in drv.old_1a_calls
        ):
            self._event(f"{c.name} (mutant) counts a 1b of an earlier ballot")
            self._on_1b(c, drv, i, m, counted=False)
            return
        if drv is None or drv.fan is None or not current:
            self._event(f"{c.name} ignores it: that call is over")
            return
        if i not in drv.fan.waiting:
            self._event(f"{c.name} ignores it: a second reply to one call")
            return
        drv.fan.waiting.discard(i)
        if m.note:
            self._event(f"{c.name}: the call failed")
            if not drv.fan.waiting:
                self._fan_returned(c, drv)
            return
        states = dict(m.states)
        if drv.stage == "ballot0":
            drv.tally.add(i, states)
            if not drv.fan.waiting:
                self._fan_returned(c, drv)
        elif drv.stage == "bundles":
            # Leader.await_bundles: on_reply / done
            drv.tally.add(i, states)
            if m.outcome is not Outcome.PENDING:
                drv.recorded.append(m.outcome)
            if drv.recorded:
                self._decide(c, drv, drv.recorded[0], "recorded at an acceptor", record=True)
                return
            d = self._evaluate(drv.tally, drv.known)
            if d is not None:
                self._decide(c, drv, d, "from the 2b bundles", record=True)
            elif not drv.fan.waiting:
                self._fan_returned(c, drv)
        elif drv.stage == "learn-read":
            # CoordinatorServicer._learn_once: on_reply
            drv.replied += 1
            drv.tally.add(i, states)
            drv.seen = drv.seen or m.flag
            if m.outcome is not Outcome.PENDING:
                drv.recorded.append(m.outcome)
            if drv.recorded or not drv.fan.waiting:
                self._fan_returned(c, drv)
        elif drv.stage == "recover-1a":
            self._on_1b(c, drv, i, m, counted=True)
        elif drv.stage == "recover-2a":
            # Leader._run_ballot, the 2a fanout: done when evaluate decides.
            drv.tally.add(i, states)
            d = self._evaluate(drv.tally, drv.known2a)
            if d is not None:
                self._decide(c, drv, d, f"ballot {self._ballot(drv)}", record=True)
            elif not drv.fan.waiting:
                self._fan_returned(c, drv)
        else:
            raise AssertionError(f"reply {m} in stage {drv.stage}")

    def _on_1b(self, c: CoordNode, drv: Driver, i: int, m: Msg, counted: bool) -> None:
        """Leader._run_ballot's on_1b and its fanout's done()."""
        assert drv.run is not None and drv.fan is not None
        states = dict(m.states)
        drv.tally.add(i, states)
        drv.run.on_phase1b(i, states)
        s = drv.tally.known_set()
        if s is not None and not s.rms <= drv.covered:
            drv.new_members = True
        done = drv.run.proposals() is not None or drv.run.preempted or drv.new_members
        if done or (counted and not drv.fan.waiting):
            self._fan_returned(c, drv)

    def _ballot(self, drv: Driver) -> str:
        return str(drv.run.ballot) if drv.run is not None else "?"

    def _fan_returned(self, c: CoordNode, drv: Driver) -> None:
        """The fanout of ``drv`` returned: done, every acceptor answered, or the rest timed out."""
        drv.fan = None
        if drv.stage == "ballot0":
            # _decide_owned after send_ballot0
            d = self._evaluate(drv.tally, drv.known)
            if d is not None:
                self._decide(c, drv, d, "from the ballot-0 replies", record=True)
            else:
                self._await_bundles(c, drv)
        elif drv.stage == "bundles":
            # _decide_owned: while d is None and before the deadline: await_bundles again
            d = self._evaluate(drv.tally, drv.known)
            if d is not None:
                self._decide(c, drv, d, "from the 2b bundles", record=True)
            else:
                self._await_bundles(c, drv)
        elif drv.stage == "learn-read":
            self._learn_read_done(c, drv)
        elif drv.stage == "recover-1a":
            self._after_1a(c, drv)
        elif drv.stage == "recover-2a":
            d = self._evaluate(drv.tally, drv.known2a)
            if d is not None:
                self._decide(c, drv, d, f"ballot {self._ballot(drv)}", record=True)
            else:
                self._ballot_failed(c, drv, "the 2a's did not decide")
        else:
            raise AssertionError(f"fanout returned in stage {drv.stage}")

    def _await_bundles(self, c: CoordNode, drv: Driver) -> None:
        """Leader.await_bundles: every acceptor answers once its bundle is complete."""
        drv.stage = "bundles"
        drv.fan = self._fanout(c.name, "await2b", drv.txn, flag=True)

    def _learn_read_done(self, c: CoordNode, drv: Driver) -> None:
        """CoordinatorServicer._learn_once after its read."""
        if drv.recorded:
            self._decide(c, drv, drv.recorded[0], "recorded at an acceptor", record=False)
            return
        d = self._evaluate(drv.tally, None)
        if d is not None:
            self._decide(c, drv, d, "from the acceptors' states", record=True)
            return
        if drv.replied * 2 > self.n and not drv.tally.instances() and not drv.seen:
            self._event(f"{c.name}: a majority never heard of {drv.txn}; nothing to do")
            del c.drivers[drv.txn]
            return
        drv.stage = "learn-wait"  # too young to recover: the recovery timeout is an action

    def _vote_timeout(self, c: CoordNode, drv: Driver) -> None:
        """_decide_owned: the vote timeout passed without a decision: recovery ballots."""
        self._line(f"{c.name}: vote timeout for {drv.txn}: recovery")
        drv.fan = None
        d = self._evaluate(drv.tally, drv.known)
        if d is not None:
            self._decide(c, drv, d, "from the 2b bundles", record=True)
            return
        self._recover(c, drv)

    def _recover(self, c: CoordNode, drv: Driver) -> None:
        """Leader.recover: a fresh call starts from NO_BALLOT."""
        drv.highest = NO_BALLOT
        drv.attempt = 0
        self._attempt(c, drv)

    def _attempt(self, c: CoordNode, drv: Driver) -> None:
        """One iteration of Leader.recover's loop."""
        d = self._evaluate(drv.tally, drv.known)
        if d is not None:
            self._decide(c, drv, d, "from what its ballots learned", record=True)
            return
        if drv.attempt >= self.cfg.recover_attempts:
            if drv.owner:
                self._event(f"{c.name}: recover() gave up on {drv.txn}; _decide_owned calls it again")
                self._recover(c, drv)
            else:
                self._event(f"{c.name}: recover() gave up on {drv.txn}; _learn_once returns None")
                del c.drivers[drv.txn]
            return
        if self.phase == "faulty" and self.ballots >= self.cfg.max_ballots:
            drv.stage = "backoff"  # the ballot budget is spent until the faults stop
            return
        decided = chosen(drv.tally.reports, self.n)
        instances = instances_to_recover(drv.tally, drv.known)
        if self.cfg.mutation == "restart_rounds":
            ballot = next_ballot(c.leader_id, drv.highest)
        else:
            ballot = c.leader.ballots.next(drv.highest)
        if (drv.txn, ballot) in self.started:
            self._violate("P7", f"{c.name} starts ballot {ballot} on {drv.txn} a second time")
        self.started.add((drv.txn, ballot))
        run_cls = {"free_prepared": _FreePreparedRun, "lower_mbal": _LowerMbalRun}.get(
            self.cfg.mutation, BallotRun
        )
        drv.run = run_cls(ballot, instances, self.n)
        drv.covered = set(instances) | set(decided)
        drv.new_members = False
        drv.stage = "recover-1a"
        self.ballots += 1
        self.ballot_leaders.setdefault(drv.txn, set()).add(c.name)
        self._event(f"{c.name} starts ballot {ballot} on {drv.txn}: {', '.join(sorted(instances))}")
        if self.cfg.mutation == "lower_mbal":
            # An acceptor that reported nothing of an instance is taken to have accepted nothing.
            for i, states in sorted(drv.tally.reports.items()):
                drv.run.on_phase1b(i, {ins: states.get(ins, InstanceState()) for ins in instances})
            if drv.run.proposals() is not None:
                self._event(f"{c.name} (mutant) counts what its tally holds as promises: no phase 1")
                self._after_1a(c, drv)
                return
        drv.fan = self._fanout(c.name, "phase1a", drv.txn, bal=ballot, instances=tuple(sorted(instances)))
        drv.old_1a_calls.add(drv.fan.call)

    def _after_1a(self, c: CoordNode, drv: Driver) -> None:
        """Leader._run_ballot after the 1a fanout returned."""
        run = drv.run
        assert run is not None
        if drv.new_members:
            self._ballot_failed(c, drv, "the set names instances the ballot did not prepare: widen it")
            return
        proposals = run.proposals()
        if proposals is None:
            why = f"preempted by {run.highest_seen}" if run.preempted else "no majority promised"
            self._ballot_failed(c, drv, why)
            return
        drv.known2a = drv.tally.known_set()
        drv.stage = "recover-2a"
        props = tuple(sorted(proposals.items()))
        self._event(
            f"{c.name} ballot {run.ballot} proposes " + ", ".join(f"{i}={show_val(v)}" for i, v in props)
        )
        drv.fan = self._fanout(c.name, "phase2a", drv.txn, bal=run.ballot, proposals=props)

    def _ballot_failed(self, c: CoordNode, drv: Driver, why: str) -> None:
        run = drv.run
        assert run is not None
        self._event(f"{c.name} ballot {run.ballot} on {drv.txn} ends undecided: {why}")
        drv.highest = max(drv.highest, run.highest_seen, run.ballot)
        drv.attempt += 1
        drv.stage = "backoff"

    def _decide(self, c: CoordNode, drv: Driver, outcome: Outcome, how: str, record: bool) -> None:
        txn = drv.txn
        drv.fan = None
        del c.drivers[txn]
        c.decided[txn] = outcome
        if drv.stage.startswith("recover") or drv.stage == "backoff":
            self.recovered += 1
        self._event(f"{c.name} decides {txn} {outcome.value} ({how})")
        self.decisions[txn].append((c.name, outcome))
        self.new_decisions.append((c.name, txn, outcome))
        if txn in c.owned:
            self._wake_prepare(c, txn)
        if record:
            # _drive / _learn_once: Leader.record_outcome (replies unused)
            self._fanout(c.name, "record", txn, outcome=outcome)

    # ------------------------------------------------------------------ RM (participant.py)

    def _rm(self, r: RMNode, m: Msg) -> None:
        if m.kind == "phase2b":
            self._vote_reply(r, m)
            return
        if m.call != r.call:
            self._event(f"{r.rm} ignores it: that call is over")
            return
        r.call = 0
        if m.kind == "join_reply":
            # Participant.join
            if m.note == "ok":
                self._rm_state(r, WORKING)
                self._poll(r)
            else:
                self._rm_state(r, GAVE_UP, f"join failed: {m.note}")
        elif m.kind == "prepare_reply":
            # Participant._await_prepare
            if m.note == "notfound":
                self._ask(r, "notfound")
            elif m.flag:
                self._prepare(r)
            elif m.outcome is not Outcome.PENDING:
                self._apply(r, m.outcome)
            else:
                self._poll(r)
        elif m.kind == "outcome_reply":
            if m.outcome is not Outcome.PENDING:
                self._apply(r, m.outcome)
            else:
                self._outcome_pending(r)
        else:
            raise AssertionError(f"rm got {m}")

    def _rm_state(self, r: RMNode, state: str, why: str = "") -> None:
        r.state = state
        if state == PREPARED:
            r.was_prepared = True
        self._event(f"{r.rm} of {r.txn} is {state}" + (f" ({why})" if why else ""))

    def _rpc(self, r: RMNode, kind: str, dst: str) -> None:
        r.call = self._call()
        r.call_kind = kind
        self._send(Msg(kind, r.rm, dst, r.txn, r.call))

    def _poll(self, r: RMNode) -> None:
        """Participant._await_prepare: AwaitPrepare at the owner (ctx.coordinator)."""
        self._rpc(r, "await_prepare", "c0")

    def _ask(self, r: RMNode, why: str) -> None:
        """Client.outcome: GetOutcome, the owner first, then the other replica."""
        r.ask_why = why
        r.asks += 1
        self._rpc(r, "get_outcome", "c0" if r.asks % 2 else "c1")

    def _outcome_pending(self, r: RMNode) -> None:
        """Client.outcome returned PENDING (a reply or a timeout)."""
        if r.state == WORKING and r.ask_why == "notfound":
            # _await_prepare: NOT_FOUND and no outcome: the owner is gone before asking
            # to prepare; abort on our own (allowed: not prepared yet) and say so.
            self._apply_own_abort(r, "the owner does not know the transaction")
        elif r.state == WORKING:
            self._poll(r)
        elif r.state == PREPARED:
            # _finish_prepared: still unknown: our vote may have been lost; resend it.
            self._start_vote(r)

    def _prepare(self, r: RMNode) -> None:
        """Participant._run after Prepare: rm.prepare() gives the vote."""
        if r.state != WORKING:
            return
        if self.rng.random() < 0.9:
            self._rm_state(r, PREPARED, "prepare is durable")
            self._send_vote(r, Vote.PREPARED)
        else:
            self._apply_own_abort(r, "rm.prepare() refused")

    def _apply_own_abort(self, r: RMNode, why: str) -> None:
        """Participant._run: _apply(ABORTED) then _send_vote(ABORTED)."""
        r.call = 0
        r.learned = None
        self._rm_state(r, ABORTED, why)
        self._send_vote(r, Vote.ABORTED)

    def _send_vote(self, r: RMNode, vote: Vote) -> None:
        r.vote = vote
        if vote is Vote.PREPARED:
            self.prepared_votes.add((r.txn, r.rm))
        self._start_vote(r)

    def _start_vote(self, r: RMNode) -> None:
        """Participant._send_vote: a majority first, then the rest."""
        r.voting = True
        r.vote_attempt = 0
        r.vote_accepted = set()
        self._vote_round(r)

    def _vote_round(self, r: RMNode) -> None:
        assert r.vote is not None
        targets = [i for i in range(self.n) if i not in r.vote_accepted]
        if r.vote_attempt == 0:
            targets = targets[: self.need]
        call = self._call()
        r.vote_fan = Fanout(call, set(targets))
        for i in targets:
            self._send(Msg("phase2a", r.rm, f"a{i}", r.txn, call, bal=RM_BALLOT, proposals=((r.rm, r.vote),)))

    def _vote_reply(self, r: RMNode, m: Msg) -> None:
        fan = r.vote_fan
        i = int(m.src[1:])
        if fan is None or m.call != fan.call or i not in fan.waiting:
            self._event(f"{r.rm} ignores it: that call is over")
            return
        fan.waiting.discard(i)
        st = dict(m.states).get(r.rm)
        if not m.note and st is not None:
            if st.mbal > RM_BALLOT:
                self._event(f"{r.rm}: a leader took over its instance; vote done")
                self._vote_done(r)
                return
            if st.bal == RM_BALLOT:
                r.vote_accepted.add(i)
        if len(r.vote_accepted) >= self.need:
            self._vote_done(r)
        elif not fan.waiting:
            self._vote_round_over(r)

    def _vote_round_over(self, r: RMNode) -> None:
        r.vote_fan = None
        r.vote_attempt += 1
        if r.vote_attempt >= VOTE_ATTEMPTS:
            self._event(f"{r.rm}: vote reached only {len(r.vote_accepted)} acceptors; giving up")
            self._vote_done(r)
        # else: back off, then the next round (an action)

    def _vote_done(self, r: RMNode) -> None:
        r.vote_fan = None
        r.voting = False
        if r.state == PREPARED and r.call == 0:
            self._ask(r, "prepared")  # _finish_prepared: learn the outcome

    def _apply(self, r: RMNode, outcome: Outcome) -> None:
        """Participant._apply: the decided outcome, learned from a coordinator."""
        new = COMMITTED if outcome is Outcome.COMMITTED else ABORTED
        if r.state in (COMMITTED, ABORTED):
            if r.state != new:
                self._violate("P1", f"{r.rm} of {r.txn} is {r.state} but learns {outcome.value}")
            return
        if r.state != WORKING and r.state != PREPARED:
            return
        r.learned = outcome
        r.call = 0
        r.vote_fan = None
        r.voting = False
        self._rm_state(r, new, "learned")

    # ------------------------------------------------------------------ checks

    def _check_step(self, before: dict[tuple[str, str], str]) -> None:
        for txn in sorted(self.dirty):
            self._check_chosen(txn)
        self.dirty.clear()
        for name, txn, outcome in self.new_decisions:
            self._check_decision(name, txn, outcome)
        self.new_decisions.clear()
        for key, r in self.rms.items():
            old = before[key]
            if old == r.state:
                continue
            if old == PREPARED:
                decided = {o for _, o in self.decisions[r.txn]}
                if r.learned is None or r.state != r.learned.value or r.learned not in decided:
                    self._violate(
                        "P5", f"{r.rm} of {r.txn} went from prepared to {r.state} without learning it"
                    )
            if r.state == COMMITTED and not r.was_prepared:
                self._violate("P6", f"{r.rm} of {r.txn} committed without having prepared")
        for txn in self.txns:
            states = {r.rm: r.state for (t, _), r in self.rms.items() if t == txn}
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

    def _check_chosen(self, txn: str) -> None:
        """P2 and P6 over every acceptor's durable state (down or up)."""
        reports = {a.idx: a.instances.get(txn, {}) for a in self.accs}
        core = chosen(reports, self.n)
        # An independent count: every (ballot, value) a majority accepted.
        count: dict[tuple[Instance, Ballot, Value], int] = {}
        for states in reports.values():
            for ins, st in states.items():
                if st.accepted and not isinstance(st.val, NoValue):
                    key = (ins, st.bal, st.val)
                    count[key] = count.get(key, 0) + 1
        mine: dict[Instance, set[Value]] = {}
        for (ins, _, val), k in count.items():
            if k >= self.need:
                mine.setdefault(ins, set()).add(val)
        if set(core) != set(mine) or any(core[i] not in mine[i] for i in core):
            self._violate("P2", f"chosen() says {core} for {txn}, a majority count says {mine}")
        for ins in sorted(mine):
            for val in sorted(mine[ins], key=show_val):
                key2 = (txn, ins)
                old = self.hist_chosen.get(key2)
                if old is None:
                    self.hist_chosen[key2] = val
                    self._event(f"chosen: {txn}/{ins} = {show_val(val)}")
                    if val is Vote.PREPARED and (txn, ins) not in self.prepared_votes:
                        self._violate("P6", f"{txn}/{ins} chose prepared, but {ins} never voted prepared")
                    if isinstance(val, RMSet) and self.ballot0.get(txn) != val:
                        self._violate(
                            "P6", f"{txn}'s registrar chose {show_val(val)}, which its owner never proposed"
                        )
                elif old != val:
                    self._violate("P2", f"{txn}/{ins} chose {show_val(val)} after {show_val(old)}")

    def _check_decision(self, name: str, txn: str, outcome: Outcome) -> None:
        others = {o for _, o in self.decisions[txn]}
        if len(others) > 1:
            so_far = ", ".join(f"{c} {o.value}" for c, o in self.decisions[txn])
            self._violate("P3", f"{name} decides {txn} {outcome.value}; decisions so far: {so_far}")
        values = {ins: v for (t, ins), v in self.hist_chosen.items() if t == txn}
        b0 = self.ballot0.get(txn)
        rule, _ = decide(values, b0 if isinstance(b0, RMSet) else None)
        if rule is not outcome:
            self._violate("P3", f"{name} decides {txn} {outcome.value}, the chosen values give {rule.value}")

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
                faults.append((self._k("drop"), self._act_drop))
                faults.append((self._k("duplicate"), self._act_duplicate))
        if not quiet:
            if not self.side:
                faults.append((0.3 * self._k("partition"), self._partition))
            else:
                add((0.15, self._heal))
            for a in self.accs:
                if a.up and self.crashed_acceptors < 4:
                    faults.append((0.25 * self._k("crash_acceptor"), partial(self._crash_acceptor, a)))
                elif not a.up:
                    add((0.6, partial(self._restart_acceptor, a)))
            for c in self.coords.values():
                if c.up and self.crashed_coordinators < 3:
                    faults.append((0.25 * self._k("crash_coordinator"), partial(self._crash_coordinator, c)))
                elif not c.up:
                    add((0.4, partial(self._restart_coordinator, c)))
        # The application: commit (or abort) a transaction its owner still has open.
        for c in self.coords.values():
            if not c.up:
                continue
            for txn, o in c.owned.items():
                if o.driving:
                    continue
                waiting = any(r.state in (IDLE, JOINING) for (t, _), r in self.rms.items() if t == txn)
                w = 0.04 if waiting and not quiet else 1.0
                add((w, partial(self._app_request, c, txn, abort=False)))
                add((w * 0.15, partial(self._app_request, c, txn, abort=True)))
            for txn, drv in c.drivers.items():
                self._driver_actions(c, txn, drv, acts, faults, quiet)
            for req in c.prepare_waiters:
                add((0.3, partial(self._prepare_wait_over, c, req)))
            # _recovery_loop: ListUndecided names transactions some acceptor holds undecided.
            for txn in self.txns:
                if txn in c.owned or txn in c.drivers or txn in c.decided:
                    continue
                if any(a.up and txn in a.instances and txn not in a.outcomes for a in self.accs):
                    add((0.5 * self._k("recovery"), partial(self._scan, c, txn)))
        for a in self.accs:
            if a.up:
                for req in a.waiters:
                    add((0.3, partial(self._bundle_wait_over, a, req)))
        for r in self.rms.values():
            self._rm_actions(r, acts, faults, quiet)
        return acts, faults

    def _driver_actions(
        self, c: CoordNode, txn: str, drv: Driver, acts: list[Action], faults: list[Action], quiet: bool
    ) -> None:
        fan = drv.fan
        if fan is not None:
            if not self._call_alive(fan.call):
                acts.append((1.0, partial(self._rpc_timeout, c, drv)))
            elif not quiet:
                faults.append((0.5 * self._k("rpc_timeout"), partial(self._rpc_timeout, c, drv)))
        if drv.stage == "bundles":
            acts.append((0.5 * self._k("vote_timeout"), partial(self._vote_timeout, c, drv)))
        elif drv.stage == "backoff" and (quiet or self.ballots < self.cfg.max_ballots):
            acts.append((0.8, partial(self._backoff_over, c, drv)))
        elif drv.stage == "learn-wait":
            acts.append((self._k("recovery"), partial(self._recovery_timeout, c, drv)))
            acts.append((0.2, partial(self._learn_later, c, drv)))

    def _rm_actions(self, r: RMNode, acts: list[Action], faults: list[Action], quiet: bool) -> None:
        add = acts.append
        owner = self.coords["c0"]
        if r.state == IDLE and r.joins < 2 and not quiet:
            add((1.0, partial(self._join, r)))
        if r.call:
            if not self._call_alive(r.call):
                add((1.0, partial(self._rm_timeout, r)))
            elif not quiet:
                faults.append((0.3 * self._k("rm_timeout"), partial(self._rm_timeout, r)))
        if r.state == WORKING and r.call == 0:
            add((1.0, partial(self._poll, r)))  # _await_prepare's loop
        if r.state == PREPARED and r.call == 0 and not r.voting:
            add((1.0, partial(self._ask, r, "prepared")))  # _finish_prepared's loop
        if r.state == WORKING:
            owner_gone = not (owner.up and r.txn in owner.owned)
            if owner_gone:
                add((0.5, partial(self._own_abort, r)))
            elif not quiet:
                faults.append((0.3 * self._k("own_abort"), partial(self._own_abort, r)))
        if r.state == PREPARED and self.cfg.mutation == "abort_after_prepare" and not quiet:
            faults.append((0.3, partial(self._own_abort, r)))
        if r.voting and r.vote_fan is None:
            add((1.0, partial(self._vote_backoff_over, r)))
        if r.vote_fan is not None:
            if not self._call_alive(r.vote_fan.call):
                add((1.0, partial(self._vote_timeout_rm, r)))
            elif not quiet:
                faults.append((0.3 * self._k("rm_timeout"), partial(self._vote_timeout_rm, r)))
        if r.state == PREPARED and not quiet:
            faults.append((0.15 * self._k("crash_rm"), partial(self._crash_rm, r)))

    def _act_deliver(self) -> None:
        self._deliver(self.rng.randrange(len(self.net)), keep=False)

    def _act_duplicate(self) -> None:
        self._deliver(self.rng.randrange(len(self.net)), keep=True)

    def _act_drop(self) -> None:
        m = self.net.pop(self.rng.randrange(len(self.net)))
        self.faults += 1
        self._line(f"drop {m} {m.src}->{m.dst}")

    def _partition(self) -> None:
        nodes = [a.name for a in self.accs] + list(self.coords)
        side = frozenset(x for x in nodes if self.rng.random() < 0.5)
        if not side or len(side) == len(nodes):
            side = frozenset({self.rng.choice(nodes)})
        self.side = side
        self.faults += 1
        rest = sorted(set(nodes) - side)
        self._line(f"partition {{{','.join(sorted(side))}}} from {{{','.join(rest)}}}")

    def _heal(self) -> None:
        self.side = frozenset()
        self._line("the partition heals")

    def _crash_acceptor(self, a: AcceptorNode) -> None:
        self._line(f"crash {a.name} (its durable state survives)")
        self.faults += 1
        self.crashed_acceptors += 1
        a.up = False
        a.waiters.clear()

    def _restart_acceptor(self, a: AcceptorNode) -> None:
        a.up = True
        if self.cfg.mutation == "amnesia":
            self._line(f"restart {a.name} (mutant: blank)")
            a.instances.clear()
            a.outcomes.clear()
            self.dirty.update(self.txns)
        else:
            self._line(f"restart {a.name}")

    def _crash_coordinator(self, c: CoordNode, why: str = "its soft state is lost") -> None:
        self._line(f"crash {c.name} ({c.leader_id}; {why})")
        self.faults += 1
        self.crashed_coordinators += 1
        c.up = False
        c.owned.clear()
        c.drivers.clear()
        c.decided.clear()
        c.prepare_waiters.clear()

    def _restart_coordinator(self, c: CoordNode) -> None:
        c.up = True
        c.incarnation += 1
        same = self.cfg.mutation == "reuse_ballot"
        c.leader = self._new_leader(c.leader_id if same else f"{c.name}.{c.incarnation}")
        self._line(f"restart {c.name} as leader {c.leader_id}" + (" (mutant: its old id)" if same else ""))

    def _new_leader(self, leader_id: str) -> Leader:
        """A Leader for its id, its BallotSource and its evaluate; it sends nothing here."""
        return Leader(leader_id, cast(AcceptorPeers, _Peers(self.n)), random.Random(0))

    def _join(self, r: RMNode) -> None:
        self._line(f"{r.rm} joins {r.txn}")
        r.joins += 1
        r.state = JOINING
        self._rpc(r, "join", "c0")

    def _rm_timeout(self, r: RMNode) -> None:
        kind = r.call_kind
        self._line(f"{r.rm}: its {kind} call for {r.txn} times out")
        r.call = 0
        if kind == "join":
            r.state = IDLE  # the application saw the join fail
        elif kind == "await_prepare":
            self._ask(r, "lost")  # _await_prepare: a transient error: ask for the outcome
        else:
            self._outcome_pending(r)

    def _own_abort(self, r: RMNode) -> None:
        self._line(f"{r.rm} aborts {r.txn} on its own")
        r.vote_fan = None
        self._apply_own_abort(r, "unilateral")

    def _vote_backoff_over(self, r: RMNode) -> None:
        self._line(f"{r.rm} resends its vote for {r.txn} (round {r.vote_attempt + 1})")
        self._vote_round(r)

    def _vote_timeout_rm(self, r: RMNode) -> None:
        self._line(f"{r.rm}: its 2a's for {r.txn} time out")
        self._vote_round_over(r)

    def _crash_rm(self, r: RMNode) -> None:
        """A prepared RM restarts: Participant.resume resends the vote and learns the outcome."""
        self._line(f"crash and restart {r.rm} (prepared in {r.txn}, durably)")
        self.faults += 1
        r.call = 0
        r.vote = Vote.PREPARED
        self._start_vote(r)

    def _prepare_wait_over(self, c: CoordNode, w: Msg) -> None:
        self._line(f"{c.name}: the AwaitPrepare wait of {w.src} for {w.txn} ends")
        c.prepare_waiters.remove(w)
        self._reply(w, "prepare_reply")

    def _bundle_wait_over(self, a: AcceptorNode, w: Msg) -> None:
        self._line(f"{a.name}: the AwaitPhase2b wait of {w.src} for {w.txn} ends")
        a.waiters.remove(w)
        self._send_bundle(a, w)

    def _rpc_timeout(self, c: CoordNode, drv: Driver) -> None:
        assert drv.fan is not None
        left = ",".join(f"a{i}" for i in sorted(drv.fan.waiting))
        self._line(f"{c.name}: calls of {drv.txn} ({drv.stage}) to {left} time out")
        drv.fan.waiting.clear()
        self._fan_returned(c, drv)

    def _backoff_over(self, c: CoordNode, drv: Driver) -> None:
        self._line(f"{c.name}: back-off over for {drv.txn}")
        self._attempt(c, drv)

    def _recovery_timeout(self, c: CoordNode, drv: Driver) -> None:
        self._line(f"{c.name}: {drv.txn} is older than the recovery timeout: recovery")
        self._recover(c, drv)

    def _learn_later(self, c: CoordNode, drv: Driver) -> None:
        self._line(f"{c.name}: {drv.txn} is too young to recover; _learn_once returns None")
        del c.drivers[drv.txn]

    def _scan(self, c: CoordNode, txn: str) -> None:
        self._line(f"{c.name}: recovery scan finds {txn} undecided")
        self._learn(c, txn, "recovery scan")

    # ------------------------------------------------------------------ phases

    def _step(self, acts: list[Action], faults: list[Action]) -> None:
        faults = [f for f in faults if f[0] > 0]  # a scale of 0 leaves a fault out
        if faults and (not acts or self.rng.random() < self.fault_rate):
            acts = faults
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
        self._check_step(before)

    def _progress_done(self) -> bool:
        return all(r.state not in UNDONE for r in self.rms.values())

    def run(self) -> Result:
        try:
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
            recovered=self.recovered,
            faults=self.faults,
            committed_rms=sum(r.state == COMMITTED for r in self.rms.values()),
            dueling=any(len(ls) > 1 for ls in self.ballot_leaders.values()),
        )

    def _faulty_phase(self) -> None:
        steps = self.rng.randint(*self.cfg.fault_steps)
        self.schedule.append(f"# seed {self.seed}: {self.cfg.describe()}; {steps} faulty steps")
        knobs = ", ".join(f"{k}={v:g}" for k, v in self.knobs.items())
        self.schedule.append(f"# fault rate {self.fault_rate:g}; scales: {knobs}")
        for _ in range(steps):
            acts, faults = self._actions()
            if not acts:
                break
            self._step(acts, faults)

    def _quiet_phase(self) -> None:
        self.phase = "quiet"
        self.schedule.append("# faults stop: every acceptor up, one coordinator, no loss")
        if self.side:
            self.step_no += 1
            self._heal()
        for a in self.accs:
            if not a.up:
                self.step_no += 1
                self._restart_acceptor(a)
        c0, c1 = self.coords["c0"], self.coords["c1"]
        owner_alive = c0.up and c0.incarnation == 1
        survivor = c0 if owner_alive else self.rng.choice([c0, c1])
        for c in (c0, c1):
            if c is survivor and not c.up:
                self.step_no += 1
                self._restart_coordinator(c)
            elif c is not survivor and c.up:
                self.step_no += 1
                self._crash_coordinator(c, "for good: one leader from here on")
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
    seconds: float = 0.0

    def merge(self, other: Sweep) -> None:
        self.seeds += other.seeds
        self.failures += other.failures
        for k, v in other.outcomes.items():
            self.outcomes[k] += v
        self.steps += other.steps
        self.ballots += other.ballots
        self.recovered += other.recovered
        self.dueling += other.dueling
        self.faulty += other.faulty
        self.rm_committed += other.rm_committed
        self.configs |= other.configs
        self.seconds = max(self.seconds, other.seconds)

    def summary(self) -> str:
        return (
            f"{self.seeds} seeds in {self.seconds:.1f}s: {len(self.failures)} failed; txns {self.outcomes}; "
            f"{self.rm_committed} runs in which RMs committed; {self.steps} steps, {self.ballots} leader "
            f"ballots ({self.dueling} runs with two leaders), {self.recovered} decisions by recovery"
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
    p.add_argument("--mutation", choices=sorted(MUTATIONS), help="seed a bug in the glue")
    p.add_argument("--recover-attempts", type=int, default=20, help="Leader.recover attempts (default 20)")
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
