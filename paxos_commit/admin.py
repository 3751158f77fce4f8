"""Operators' view and settlement of transactions: what ``paxos-commit txn`` and the
console run.

:class:`Admin` reads every acceptor (``InspectTransaction``, ``ListTransactions``) and every
coordinator (``ListOwned``), and merges what they say into one :class:`TxnView` per
transaction: the owner, the age, the registrar's value, each instance's ``mbal``/``bal``/
``val`` at each acceptor, the recorded outcome, the decision the acceptors' states imply
(:func:`rm_sdk.core.leader.evaluate`, the same rule the coordinators use), and what an
undecided transaction waits for.

:meth:`Admin.resolve_abort` settles a stuck transaction the only safe way: it reads the
acceptors and, unless that already decides the transaction, runs higher ballots as a
leader of its own (a fresh ``admin.<id>`` leader id per call, so no ballot is ever
reused) with the core's :class:`~rm_sdk.core.leader.Recovery`: a free instance gets
``aborted``, a free registrar "no set", and any value that may have been chosen is
proposed again, so a chosen commit stays a commit. It never writes anything when the
transaction is already decided. :meth:`Admin.retry` asks the coordinators to recover
now. Both are logged (logger ``paxos_commit.admin``) and counted
(:data:`OPERATOR_ACTIONS`); who may run them is decided in :mod:`paxos_commit.authz`
(admins: with TLS, :class:`Admin` presents an ``admin/<name>`` certificate on every call and
on its ballots' streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from paxos_commit import authz
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk._streams import StreamAcceptors
from rm_sdk.ballots import ADMIN_LEADER_PREFIX, BallotSource, Tally
from rm_sdk.core.leader import Recovery, RecoveryPhase, evaluate
from rm_sdk.core.messages import AcceptorReply, Decision, RecordOutcome
from rm_sdk.core.ready import Ready
from rm_sdk.identity import Identity
from rm_sdk.protocol import (
    NO_BALLOT,
    REGISTRAR,
    Ballot,
    Instance,
    InstanceState,
    NoSet,
    NoValue,
    Outcome,
    RMSet,
    Value,
    Vote,
    chosen,
    majority,
    validate_id,
)
from rm_sdk.wire import cause_from_pb, outcome_from_pb, pb, states_from_pb

__all__ = [
    "OPERATOR_ACTIONS",
    "REGISTRY",
    "Admin",
    "Filters",
    "Health",
    "ResolveResult",
    "TxnNotFound",
    "TxnView",
    "parse_duration",
    "show_ballot",
    "show_value",
]

if TYPE_CHECKING:
    from paxos_commit.certs import TlsFiles

log = logging.getLogger("paxos_commit.admin")

#: Metrics of the operator tools of this process (the console serves them on /metrics).
REGISTRY = CollectorRegistry()
OPERATOR_ACTIONS = Counter(
    "paxos_commit_operator_actions",
    "Operators' actions run from this process (resolve, retry), by action and result.",
    ["action", "result"],
    registry=REGISTRY,
)


class TxnNotFound(LookupError):
    """No acceptor and no coordinator knows the transaction."""


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``2h``, ``1d``, ``250ms`` or plain seconds -> seconds."""
    t = text.strip().lower()
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0))
    number, scale = t, 1.0
    for suffix, unit in units:
        if t.endswith(suffix):
            number, scale = t[: -len(suffix)], unit
            break
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 5m, 2h)") from None
    if value < 0:
        raise ValueError(f"negative duration: {text!r}")
    return value * scale


def show_value(v: Value | NoValue | None) -> str:
    if v is None or isinstance(v, NoValue):
        return "-"
    if isinstance(v, RMSet):
        return "{" + ",".join(sorted(v.rms)) + "}"
    if isinstance(v, NoSet):
        return "no-set"
    return v.value


def show_ballot(b: Ballot) -> str:
    return "-" if b == NO_BALLOT else str(b)


@dataclass
class Owned:
    """What the owning coordinator says of a transaction it has not finished."""

    coordinator: str
    leader_id: str
    phase: str
    age_s: float
    joined: list[str]
    rm_set: list[str]
    waiting_for: list[str]


@dataclass
class TxnView:
    """One transaction as the whole cluster sees it."""

    txn_id: str
    n_acceptors: int
    #: Per acceptor index: its states (None: the acceptor did not answer).
    states: dict[int, dict[Instance, InstanceState] | None] = field(default_factory=dict)
    #: Per acceptor index that answered: the outcome it recorded.
    recorded: dict[int, Outcome] = field(default_factory=dict)
    #: Per acceptor index that answered and knows it: first heard of (Unix seconds).
    first_seen: dict[int, float] = field(default_factory=dict)
    #: Acceptor errors, by index.
    unreachable: dict[int, str] = field(default_factory=dict)
    #: Per acceptor index that knows it: (collected there, the participants collection
    #: waits for (None: not recorded yet), the RMs that acknowledged).
    collection: dict[int, tuple[bool, frozenset[str] | None, frozenset[str]]] = field(default_factory=dict)
    owned: Owned | None = None
    #: Coordinators (leader id at address) recovering it for an owner that is gone.
    recovering_by: list[str] = field(default_factory=list)
    #: A decision some coordinator made and remembers (with its cause), if any.
    decided_by: str = ""
    decided_cause: str = ""
    decided_reason: str = ""
    now: float = field(default_factory=time.time)

    # ---------------------------------------------------------------- derived

    @property
    def known(self) -> bool:
        return (
            bool(self.first_seen) or bool(self.collection) or self.owned is not None or bool(self.decided_by)
        )

    @property
    def age_s(self) -> float | None:
        if self.first_seen:
            return max(0.0, self.now - min(self.first_seen.values()))
        return self.owned.age_s if self.owned is not None else None

    def tally(self) -> Tally:
        t = Tally(self.n_acceptors)
        for i, st in self.states.items():
            if st:
                t.add(i, st)
        return t

    def decision(self) -> Decision | None:
        """The outcome: recorded at an acceptor, or implied by what is chosen."""
        for o in self.recorded.values():
            if o is not Outcome.PENDING:
                return Decision.recorded(o)
        return evaluate(self.tally(), None)

    @property
    def outcome(self) -> Outcome:
        d = self.decision()
        return d.outcome if d is not None else Outcome.PENDING

    @property
    def in_doubt(self) -> bool:
        """Undecided after registration closed: RMs may hold prepared work."""
        if self.outcome is not Outcome.PENDING:
            return False
        return bool(self.first_seen) or (self.owned is not None and self.owned.phase != "open")

    def instances(self) -> list[Instance]:
        found: set[Instance] = set()
        for st in self.states.values():
            found.update(st or {})
        s = self.tally().known_set()
        if s is not None:
            found.update(s.rms)
        if self.owned is not None:
            found.update(self.owned.joined)
        return sorted(found, key=lambda i: (i != REGISTRAR, i))

    def registrar(self) -> str:
        """The registrar's value: chosen, or what acceptors accepted so far."""
        values = chosen(self.tally().reports, self.n_acceptors)
        if REGISTRAR in values:
            return f"{show_value(values[REGISTRAR])} (chosen)"
        seen = [
            show_value(st[REGISTRAR].val)
            for st in self.states.values()
            if st and REGISTRAR in st and not isinstance(st[REGISTRAR].val, NoValue)
        ]
        if seen:
            return f"{seen[0]} (accepted by {len(seen)} of {self.n_acceptors}, not chosen yet)"
        if self.owned is not None and self.owned.phase == "open":
            return f"registration open (joined: {', '.join(self.owned.joined) or 'none'})"
        return "none"

    def waits_for(self) -> list[str]:
        """What an undecided transaction waits for, for people."""
        if self.outcome is not Outcome.PENDING:
            return []
        out: list[str] = []
        need = majority(self.n_acceptors)
        if self.owned is not None and self.owned.phase == "open":
            out.append(
                f"commit or abort from the application (registration open at {self.owned.coordinator})"
            )
        s = self.tally().known_set()
        values = chosen(self.tally().reports, self.n_acceptors)
        if REGISTRAR not in values and (self.first_seen or (self.owned and self.owned.phase != "open")):
            out.append("the registrar's participant set at a majority of acceptors")
        members = sorted(s.rms) if s else (self.owned.rm_set if self.owned else [])
        for rm in members:
            if rm in values:
                continue
            have = sum(1 for st in self.states.values() if st and rm in st and isinstance(st[rm].val, Vote))
            if have == 0:
                out.append(f"{rm} has not voted")
            else:
                out.append(f"{rm}'s vote reached {have} of {self.n_acceptors} acceptors (needs {need})")
        for who in self.recovering_by:
            out.append(f"recovery ballots by {who}")
        for i, err in sorted(self.unreachable.items()):
            out.append(f"acceptor {i} unreachable ({err})")
        if not out and self.first_seen:
            out.append("a leader's decision (recovery ballots)")
        return out

    def collection_state(self) -> str:
        """Whether finished, acknowledged transactions are (or may be) collected, for people
        ("Bounded state": a decided transaction is collectable once its outcome is recorded
        and every RM of its set acknowledged applying it)."""
        if not self.collection:
            return "nothing here to collect"
        done = sorted(i for i, (c, _, _) in self.collection.items() if c)
        if done and len(done) == len(self.collection):
            return f"collected at acceptor{'s' if len(done) > 1 else ''} {', '.join(map(str, done))}"
        if self.outcome is Outcome.PENDING:
            return "not collectable: undecided"
        rms: frozenset[str] | None = None
        acked: set[str] = set()
        for _c, parts, ack in self.collection.values():
            if parts is not None and rms is None:
                rms = parts
            acked |= ack
        if rms is None:
            return "not collectable yet: no acceptor has the participant set with the outcome"
        missing = sorted(rms - acked)
        head = f"collected at {', '.join(map(str, done))}; " if done else ""
        if done and missing:
            # An acceptor collects only once it holds every RM's acknowledgement, so every
            # RM acknowledged; the others' records of it are on their way (sent lazily).
            rest = [str(i) for i in sorted(self.collection) if i not in done]
            who = f"acceptor{'s' if len(rest) > 1 else ''} {', '.join(rest)}"
            return f"{head}every RM acknowledged ({who} not told yet)"
        if missing:
            return f"{head}not collectable: waiting for acknowledgements from {', '.join(missing)}"
        return f"{head}collectable: every RM acknowledged"

    def operator_ballots(self) -> list[str]:
        """Admin leaders (``txn resolve``) whose ballots some acceptor accepted here."""
        return sorted(
            {
                st.bal.leader
                for states in self.states.values()
                for st in (states or {}).values()
                if st.bal.leader.startswith(ADMIN_LEADER_PREFIX)
            }
        )

    def cause(self) -> str:
        if self.decided_cause:
            return self.decided_cause
        d = self.decision()
        if d is None or d.outcome is Outcome.COMMITTED:
            return ""
        return d.cause.value if d.cause else ""

    def reason(self) -> str:
        if self.decided_reason:
            return self.decided_reason
        d = self.decision()
        return d.reason if d is not None else ""

    def to_json(self) -> dict[str, Any]:
        age = self.age_s
        return {
            "txn_id": self.txn_id,
            "known": self.known,
            "age_s": round(age, 3) if age is not None else None,
            "owner": (
                {
                    "coordinator": self.owned.coordinator,
                    "leader_id": self.owned.leader_id,
                    "phase": self.owned.phase,
                }
                if self.owned
                else None
            ),
            "registrar": self.registrar(),
            "outcome": self.outcome.value,
            "in_doubt": self.in_doubt,
            "cause": self.cause(),
            "reason": self.reason(),
            "decided_by": self.decided_by,
            "recovering_by": self.recovering_by,
            "operator_ballots": self.operator_ballots(),
            "recorded": {str(i): o.value for i, o in sorted(self.recorded.items())},
            "waits_for": self.waits_for(),
            "collection": self.collection_state(),
            "instances": {
                ins: {
                    str(i): (None if st is None else _state_json(st.get(ins)))
                    for i, st in sorted(self.states.items())
                }
                for ins in self.instances()
            },
            "unreachable": {str(i): e for i, e in sorted(self.unreachable.items())},
        }


def _state_json(st: InstanceState | None) -> dict[str, str] | str:
    if st is None:
        return "absent"
    return {"mbal": show_ballot(st.mbal), "bal": show_ballot(st.bal), "val": show_value(st.val)}


@dataclass(frozen=True)
class Filters:
    """``txn list`` filters (all optional)."""

    in_doubt: bool = False
    older_than: float = 0.0
    rm_id: str = ""
    outcome: Outcome | None = None
    limit: int = 200

    def keep(self, v: TxnView) -> bool:
        if self.in_doubt and not v.in_doubt:
            return False
        if self.older_than and (v.age_s or 0.0) < self.older_than:
            return False
        if self.rm_id and self.rm_id not in v.instances():
            return False
        return self.outcome is None or v.outcome is self.outcome


@dataclass
class ResolveResult:
    txn_id: str
    outcome: Outcome
    #: True when this call's ballots decided the transaction (it wrote to acceptors).
    changed: bool
    detail: str
    ballots: int = 0
    leader_id: str = ""


@dataclass
class Health:
    name: str
    address: str
    status: str
    detail: str = ""


def _error(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class Admin:
    """Operators' calls against one cluster: its acceptors (in acceptor-id order) and its
    coordinators. Use as ``async with Admin(acceptors, coordinators) as admin``.

    ``tls``: this tool's certificate files (an ``admin/<name>`` certificate from the
    cluster's CA, e.g. ``admin-local.pem`` that ``paxos-commit up`` makes): every channel is
    mTLS with them. None: plain text, for a cluster run with ``--insecure``."""

    def __init__(
        self,
        acceptors: Sequence[str],
        coordinators: Sequence[str] = (),
        *,
        timeout: float = 3.0,
        tls: TlsFiles | None = None,
    ) -> None:
        if not acceptors or len(acceptors) % 2 == 0:
            raise ValueError(f"need the 2F+1 acceptor addresses (an odd number), got {len(acceptors)}")
        self.acceptor_addresses = list(acceptors)
        self.coordinator_addresses = list(coordinators)
        self.timeout = timeout
        self.tls = tls
        #: Who this tool is to the cluster (its certificate's identity; INSECURE without TLS).
        self.identity: Identity = tls.identity() if tls is not None else authz.INSECURE
        self._credentials = tls.channel_credentials() if tls is not None else None
        self._channels: dict[str, grpc.aio.Channel] = {}
        #: Whether the last :meth:`list_transactions` may have left matching transactions out.
        self.truncated = False

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close(None)

    @property
    def n(self) -> int:
        return len(self.acceptor_addresses)

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = (
                grpc.aio.secure_channel(address, self._credentials)
                if self._credentials is not None
                else grpc.aio.insecure_channel(address)
            )
        return ch

    def _acceptor(self, i: int) -> pb_grpc.AcceptorAsyncStub:
        return pb_grpc.AcceptorStub(self._channel(self.acceptor_addresses[i]))

    def _coordinator(self, address: str) -> pb_grpc.CoordinatorAsyncStub:
        return pb_grpc.CoordinatorStub(self._channel(address))

    # ---------------------------------------------------------------- reads

    async def show(self, txn_id: str) -> TxnView:
        """One transaction from every acceptor and coordinator; :class:`TxnNotFound` if
        none knows it."""
        validate_id("transaction id", txn_id)
        view = TxnView(txn_id, self.n)
        req = pb.InspectTransactionRequest(txn_id=txn_id)
        replies = await asyncio.gather(
            *(self._acceptor(i).InspectTransaction(req, timeout=self.timeout) for i in range(self.n)),
            return_exceptions=True,
        )
        for i, r in enumerate(replies):
            if isinstance(r, pb.InspectTransactionReply):
                self._add_record(view, i, r.record, r.now_unix_ms)
            else:
                view.states[i] = None
                view.unreachable[i] = _error(r)
        await self._add_owned(view, txn_id)
        if not view.known:
            if len(view.unreachable) >= majority(self.n):
                raise ConnectionError(
                    f"only {self.n - len(view.unreachable)} of {self.n} acceptors answered and none knows "
                    f"{txn_id}: cannot tell whether it exists ({'; '.join(view.unreachable.values())})"
                )
            raise TxnNotFound(f"no acceptor or coordinator knows transaction {txn_id}")
        return view

    @staticmethod
    def _add_record(view: TxnView, i: int, rec: pb.TransactionRecord, now_ms: int) -> None:
        view.states[i] = states_from_pb(rec.states) if rec.known else {}
        if rec.known:
            view.recorded[i] = outcome_from_pb(rec.outcome)
            parts = frozenset(rec.participants) if rec.participants_known else None
            view.collection[i] = (rec.collected, parts, frozenset(rec.acknowledged))
            # Ages against the answering acceptor's clock: skew with ours does not matter. (A
            # collected transaction's compact record read by InspectTransaction has no time.)
            if rec.first_seen_unix_ms or not rec.collected:
                view.first_seen[i] = view.now - max(0, now_ms - rec.first_seen_unix_ms) / 1000.0

    async def _owned(self, txn_id: str = "") -> list[tuple[str, pb.ListOwnedReply | BaseException]]:
        req = pb.ListOwnedRequest(txn_id=txn_id)
        replies = await asyncio.gather(
            *(self._coordinator(a).ListOwned(req, timeout=self.timeout) for a in self.coordinator_addresses),
            return_exceptions=True,
        )
        return list(zip(self.coordinator_addresses, replies, strict=True))

    async def _add_owned(self, view: TxnView, txn_id: str) -> None:
        for address, r in await self._owned(txn_id):
            if not isinstance(r, pb.ListOwnedReply):
                continue
            for o in r.owned:
                view.owned = _owned_from_pb(address, o)
            if txn_id in r.recovering:
                view.recovering_by.append(f"{r.leader_id} at {address}")
            for d in r.recent:
                view.decided_by = f"{r.leader_id} at {address}"
                cause = cause_from_pb(d.cause)
                view.decided_cause = cause.value if cause else ""
                view.decided_reason = d.reason

    async def list_transactions(self, filters: Filters | None = None) -> list[TxnView]:
        """Transactions from every acceptor (and those still open at a coordinator),
        newest first, filtered."""
        f = filters or Filters()
        if f.rm_id:
            validate_id("rm id", f.rm_id)
        req = pb.ListTransactionsRequest(
            older_than_ms=int(f.older_than * 1000),
            # Undecided everywhere is undecided at each acceptor: a safe pre-filter.
            outcome=pb.OUTCOME_PENDING
            if f.in_doubt or f.outcome is Outcome.PENDING
            else pb.OUTCOME_UNSPECIFIED,
            rm_id=f.rm_id,
            limit=min(10_000, max(f.limit * 2, 100)),
            with_states=True,
        )
        replies = await asyncio.gather(
            *(self._acceptor(i).ListTransactions(req, timeout=self.timeout) for i in range(self.n)),
            return_exceptions=True,
        )
        views: dict[str, TxnView] = {}
        truncated = False
        answered: list[int] = []
        down: dict[int, str] = {}
        for i, r in enumerate(replies):
            if not isinstance(r, pb.ListTransactionsReply):
                down[i] = _error(r)
                continue
            answered.append(i)
            truncated = truncated or r.truncated
            for rec in r.transactions:
                v = views.setdefault(rec.txn_id, TxnView(rec.txn_id, self.n))
                self._add_record(v, i, rec, r.now_unix_ms)
        for address, owned in await self._owned():
            if not isinstance(owned, pb.ListOwnedReply):
                continue
            for o in owned.owned:
                if o.phase == "decided" and o.txn_id not in views:
                    # Decided, its owner only waiting for the RMs' acknowledgements: not
                    # pending, and the acceptors' records (filtered out) say how it ended.
                    continue
                v = views.setdefault(o.txn_id, TxnView(o.txn_id, self.n))
                v.owned = _owned_from_pb(address, o)
            for t in owned.recovering:
                if t in views:
                    views[t].recovering_by.append(f"{owned.leader_id} at {address}")
            for d in owned.recent:
                v2 = views.get(d.txn_id)
                if v2 is not None:
                    cause = cause_from_pb(d.cause)
                    v2.decided_by = f"{owned.leader_id} at {address}"
                    v2.decided_cause = cause.value if cause else ""
                    v2.decided_reason = d.reason
        # An acceptor that did not list a transaction may hold it all the same (past its
        # limit, or filtered as pending while recorded elsewhere): read it there, for the
        # undecided ones, so "in doubt" is never claimed from a partial view.
        fill = [
            (v, i)
            for v in views.values()
            # (one still open at its owner is on no acceptor yet: nothing to read)
            if v.outcome is Outcome.PENDING and v.first_seen
            for i in answered
            if i not in v.states
        ][:500]
        if fill:
            got = await asyncio.gather(
                *(
                    self._acceptor(i).InspectTransaction(
                        pb.InspectTransactionRequest(txn_id=v.txn_id), timeout=self.timeout
                    )
                    for v, i in fill
                ),
                return_exceptions=True,
            )
            for (v, i), one in zip(fill, got, strict=True):
                if isinstance(one, pb.InspectTransactionReply):
                    self._add_record(v, i, one.record, one.now_unix_ms)
        for v in views.values():
            for i, err in down.items():
                v.states[i] = None
                v.unreachable[i] = err
        kept = [v for v in views.values() if f.keep(v)]
        kept.sort(key=lambda v: v.age_s or 0.0)
        self.truncated = truncated or len(kept) > f.limit
        return kept[: f.limit]

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Outcomes the coordinators decided recently, with their causes, newest first."""
        found: list[dict[str, Any]] = []
        for address, r in await self._owned():
            if not isinstance(r, pb.ListOwnedReply):
                continue
            for d in r.recent[:limit]:
                cause = cause_from_pb(d.cause)
                found.append(
                    {
                        "txn_id": d.txn_id,
                        "outcome": outcome_from_pb(d.outcome).value,
                        "cause": cause.value if cause else "",
                        "rm_id": d.rm_id,
                        "reason": d.reason,
                        "decided_unix_ms": d.decided_unix_ms,
                        "age_s": max(0.0, (r.now_unix_ms - d.decided_unix_ms) / 1000.0),
                        "decided_by": f"{r.leader_id} at {address}",
                    }
                )
        found.sort(key=lambda d: -int(d["decided_unix_ms"]))
        return found[:limit]

    async def health(self) -> list[Health]:
        """Each acceptor's and coordinator's gRPC health (readiness of its service)."""
        targets = [
            (f"acceptor-{i}", a, "paxoscommit.v1.Acceptor") for i, a in enumerate(self.acceptor_addresses)
        ]
        targets += [
            (f"coordinator-{i}", a, "paxoscommit.v1.Coordinator")
            for i, a in enumerate(self.coordinator_addresses)
        ]

        async def check(name: str, address: str, service: str) -> Health:
            try:
                r = await health_pb2_grpc.HealthStub(self._channel(address)).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                return Health(name, address, status)
            except Exception as exc:
                return Health(name, address, "UNREACHABLE", _error(exc))

        return list(await asyncio.gather(*(check(*t) for t in targets)))

    # ---------------------------------------------------------------- actions

    async def retry(self, txn_id: str) -> list[tuple[str, str]]:
        """Ask every coordinator to recover ``txn_id`` now: the owner starts its recovery
        ballots, the others read the acceptors and recover without waiting. Returns
        (coordinator, what it did or its error)."""
        validate_id("transaction id", txn_id)
        req = pb.RetryRequest(txn_id=txn_id)
        replies = await asyncio.gather(
            *(self._coordinator(a).Retry(req, timeout=self.timeout) for a in self.coordinator_addresses),
            return_exceptions=True,
        )
        out = [
            (a, r.action if isinstance(r, pb.RetryReply) else f"error: {_error(r)}")
            for a, r in zip(self.coordinator_addresses, replies, strict=True)
        ]
        ok = any(isinstance(r, pb.RetryReply) for r in replies)
        OPERATOR_ACTIONS.labels("retry", "ok" if ok else "unreachable").inc()
        log.info("txn %s: operator retry: %s", txn_id, out, extra={"txn_id": txn_id})
        return out

    async def resolve_abort(self, txn_id: str, *, within: float = 30.0) -> ResolveResult:
        """Settle ``txn_id``: if the acceptors' states already decide it, report that and
        change nothing; otherwise run ballots as an admin leader until it is decided (free
        instances abort). Returns the outcome, which is COMMITTED if commit was (or may
        have been) chosen: no ballot can turn that into an abort."""
        authz.require_local(self.identity, authz.Action.RESOLVE)
        view = await self.show(txn_id)
        if len(view.unreachable) * 2 >= self.n:
            OPERATOR_ACTIONS.labels("resolve", "unreachable").inc()
            raise ConnectionError(
                f"only {self.n - len(view.unreachable)} of {self.n} acceptors answered: need a majority"
            )
        d = view.decision()
        if d is not None:
            OPERATOR_ACTIONS.labels("resolve", f"already_{d.outcome.value}").inc()
            log.info("txn %s: operator resolve: already %s; nothing changed", txn_id, d.outcome.value)
            return ResolveResult(txn_id, d.outcome, False, f"already {d.outcome.value}: nothing changed")
        leader = f"{ADMIN_LEADER_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            result = await _run_recovery(
                self.acceptor_addresses, txn_id, view.tally(), leader, within, self._credentials
            )
        except TimeoutError:
            OPERATOR_ACTIONS.labels("resolve", "gave_up").inc()
            log.warning("txn %s: operator resolve as %s: no decision in %.0fs", txn_id, leader, within)
            raise
        OPERATOR_ACTIONS.labels("resolve", result.outcome.value).inc()
        log.warning(
            "txn %s: operator resolve as %s: %s after %d ballot(s)",
            txn_id,
            leader,
            result.outcome.value,
            result.ballots,
            extra={"txn_id": txn_id},
        )
        return result


def _owned_from_pb(address: str, o: pb.OwnedTransaction) -> Owned:
    return Owned(
        coordinator=address,
        leader_id=o.owner,
        phase=o.phase,
        age_s=o.age_ms / 1000.0,
        joined=list(o.joined),
        rm_set=list(o.rm_set),
        waiting_for=list(o.waiting_for),
    )


async def _run_recovery(
    addresses: list[str],
    txn_id: str,
    tally: Tally,
    leader: str,
    within: float,
    credentials: grpc.ChannelCredentials | None = None,
) -> ResolveResult:
    """Drive the core's :class:`Recovery` over batched acceptor streams until decided,
    then record the outcome on the acceptors (as a coordinator that decided would)."""
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[AcceptorReply] = asyncio.Queue()
    link = StreamAcceptors(addresses, replies.put_nowait, rpc_timeout=2.0, credentials=credentials)
    rec = Recovery(txn_id, BallotSource(leader), tally, None, answer_timeout=1.0, max_attempts=20)
    ballots = 0

    def flush(out: Ready) -> None:
        nonlocal ballots
        ballots += out.ballots
        for txn, text in out.log:
            log.info("txn %s: %s", txn, text)
        for i, msg in out.sends:
            link.send(i, msg)

    try:
        out = Ready()
        rec.start(loop.time(), out)
        flush(out)
        deadline = loop.time() + within
        while rec.decision is None and rec.phase is not RecoveryPhase.GAVE_UP:
            now = loop.time()
            if now >= deadline:
                break
            nd = rec.next_deadline()
            wait = max(0.0, min(deadline, nd if nd is not None else deadline) - now)
            out = Ready()
            try:
                msg = await asyncio.wait_for(replies.get(), wait)
                rec.on_reply(msg, loop.time(), out)
            except TimeoutError:
                rec.tick(loop.time(), out)
            flush(out)
        if rec.decision is None:
            raise TimeoutError(
                f"transaction {txn_id}: no decision after {ballots} ballot(s) in {within:.0f}s"
            )
        decision = rec.decision
        for i in range(len(addresses)):
            link.send(i, RecordOutcome(txn_id, decision.outcome))
        # Best effort: wait a moment for the records (a coordinator records them too).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                got = 0
                while got < len(addresses):
                    await replies.get()
                    got += 1
        how = (
            "commit had been chosen (or accepted where it may have been): kept"
            if decision.outcome is Outcome.COMMITTED
            else "free instances set to aborted / the registrar to no-set"
        )
        return ResolveResult(txn_id, decision.outcome, True, how, ballots, leader)
    finally:
        await link.close()
