"""The messages of Paxos Commit as plain values: what the core reads and writes.

One class per message of the paper (and of ``spec/PaxosCommit.tla``), plus the requests
applications and resource managers make of a coordinator. No protobuf type crosses into
the core: adapters translate (``rm_sdk.wire``). Every message is idempotent: the network
may lose, duplicate and reorder any of them (DESIGN.md pitfall 6).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from rm_sdk.protocol import Ballot, Instance, InstanceState, Outcome, Value

__all__ = [
    "Abort",
    "AbortCause",
    "Acknowledge",
    "Acknowledged",
    "AcceptorReply",
    "AcceptorRequest",
    "AskOutcome",
    "AwaitPrepare",
    "Begin",
    "Bundle",
    "BundleRequest",
    "Commit",
    "Decided",
    "Decision",
    "Join",
    "Joined",
    "NoAnswer",
    "OutcomeRecorded",
    "Phase1a",
    "Phase1b",
    "Phase2a",
    "Phase2b",
    "Prepare",
    "RecordOutcome",
    "Refused",
    "Request",
    "Unknown",
]


class AbortCause(enum.Enum):
    """Why a transaction aborted; carried on the wire (stored values are pinned by tests)."""

    #: The outcome was learned (from a record or another replica) without its cause.
    UNKNOWN = "unknown"
    #: A resource manager voted aborted (its own ballot-0 value).
    RM_REFUSED = "rm_refused"
    #: A resource manager did not vote in time: a recovery ballot chose aborted for it.
    VOTE_TIMEOUT = "vote_timeout"
    #: Commit was not asked for within the owner's transaction timeout.
    TXN_TIMEOUT = "txn_timeout"
    #: The owner failed before registration closed: a recovery ballot chose "no set".
    COORDINATOR_FAILED = "coordinator_failed"
    #: The application (or another holder of the id) asked to abort.
    APPLICATION = "application"
    #: An operator settled it (``paxos-commit txn resolve``): an admin leader's ballot.
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Decision:
    """A transaction's outcome and, for an abort, its cause (``rm_id`` names the RM for
    RM_REFUSED and VOTE_TIMEOUT; ``reason`` is text for people)."""

    outcome: Outcome
    cause: AbortCause | None = None
    rm_id: str = ""
    reason: str = ""

    @staticmethod
    def recorded(outcome: Outcome) -> Decision:
        """An outcome read from an acceptor's record: its cause is not recorded."""
        if outcome is Outcome.COMMITTED:
            return Decision(Outcome.COMMITTED)
        return Decision(outcome, AbortCause.UNKNOWN, reason="recorded at an acceptor")


# ---------------------------------------------------------------- leader/RM -> acceptor


@dataclass(frozen=True, slots=True)
class Phase1a:
    """Spec ``Phase1a``: a leader starts ``ballot`` (> 0) in ``instances``."""

    txn_id: str
    ballot: Ballot
    instances: tuple[Instance, ...]


@dataclass(frozen=True, slots=True)
class Phase2a:
    """Spec ``Phase2a``: at ballot 0 an RM's vote or the registrar's set; above, a leader's
    proposals."""

    txn_id: str
    ballot: Ballot
    proposals: Mapping[Instance, Value]


@dataclass(frozen=True, slots=True)
class BundleRequest:
    """Ask an acceptor for its 2b's of a transaction, bundled (paper section 4), once
    they let a leader decide or ``wait`` seconds pass (0: at once)."""

    txn_id: str
    wait: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """Record a decided outcome, so later questions are answered from the record.

    Collection (DESIGN.md pitfall 8, spec ``Collect``): ``participants`` is the registrar's
    set as the decider knows it (for an abort, every RM that joined; None: not known here),
    ``acked`` the RMs that acknowledged they applied the outcome. The acceptor keeps the
    union of every ``acked`` it is told, and the first ``participants``; once every
    participant acknowledged, the transaction is collectable there. Acknowledgements
    without participants are passed-on acks, not a decision: they record no outcome."""

    txn_id: str
    outcome: Outcome
    participants: frozenset[str] | None = None
    acked: frozenset[str] = frozenset()
    #: Every RM acknowledged: a decider read a collected record elsewhere.
    all_acked: bool = False


AcceptorRequest: TypeAlias = Phase1a | Phase2a | BundleRequest | RecordOutcome

# ---------------------------------------------------------------- acceptor -> sender


@dataclass(frozen=True, slots=True)
class Phase1b:
    """Spec ``Phase1b``: ``states`` after the 1a (``mbal`` equal to the ballot is a
    promise; higher, a NACK naming the ballot to beat)."""

    txn_id: str
    acceptor: int
    states: Mapping[Instance, InstanceState]
    outcome: Outcome = Outcome.PENDING


@dataclass(frozen=True, slots=True)
class Phase2b:
    """Spec ``Phase2b``: ``states`` after the 2a (``bal`` equal to the ballot: accepted)."""

    txn_id: str
    acceptor: int
    states: Mapping[Instance, InstanceState]
    outcome: Outcome = Outcome.PENDING


@dataclass(frozen=True, slots=True)
class Bundle:
    """One acceptor's 2b's of every instance of a transaction; ``age_ms``: how long the
    acceptor has known it (0: never)."""

    txn_id: str
    acceptor: int
    states: Mapping[Instance, InstanceState]
    outcome: Outcome = Outcome.PENDING
    age_ms: int = 0
    #: Collected there: every RM of the set acknowledged the outcome.
    collected: bool = False
    #: The acknowledgements this acceptor holds.
    acked: frozenset[str] = frozenset()
    #: The registrar's set as recorded here with the outcome (None: not recorded here).
    participants: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class OutcomeRecorded:
    """The outcome is durable at ``acceptor``, with the acknowledgements ``acked`` (the
    acceptor's whole union); ``collected``: every RM acknowledged, the state is gone."""

    txn_id: str
    acceptor: int
    acked: frozenset[str] = frozenset()
    collected: bool = False

    def holds_ack(self, rm_id: str) -> bool:
        return self.collected or rm_id in self.acked


@dataclass(frozen=True, slots=True)
class Refused:
    """An acceptor refused a request (it contradicts durable state, e.g. another value at
    a ballot it accepted). Nothing changed there."""

    txn_id: str
    acceptor: int
    request: AcceptorRequest
    detail: str


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """The transport gave up on a request to an acceptor (connection lost, deadline):
    the request may or may not have arrived."""

    txn_id: str
    acceptor: int
    request: AcceptorRequest


AcceptorReply: TypeAlias = Phase1b | Phase2b | Bundle | OutcomeRecorded | Refused | NoAnswer

# ---------------------------------------------------------------- application/RM -> coordinator


@dataclass(frozen=True, slots=True)
class Begin:
    """Start ``txn_id`` with the receiving coordinator as its owner."""

    txn_id: str


@dataclass(frozen=True, slots=True)
class Join:
    """Spec ``Join``: ``rm_id`` takes part in ``txn_id``."""

    txn_id: str
    rm_id: str


@dataclass(frozen=True, slots=True)
class AwaitPrepare:
    """An RM that joined asks to be told when to prepare (or the outcome, if first)."""

    txn_id: str
    rm_id: str
    wait: float


@dataclass(frozen=True, slots=True)
class Commit:
    """Close registration and decide. ``wait_applied``: answer only once every RM of the
    set acknowledged it applied the outcome (or the owner's ack wait ended)."""

    txn_id: str
    wait_applied: bool = False


@dataclass(frozen=True, slots=True)
class Abort:
    """Abort before commit; ``rm_id``: a joined RM refusing before it prepared."""

    txn_id: str
    reason: str = ""
    rm_id: str = ""


@dataclass(frozen=True, slots=True)
class AskOutcome:
    """How did ``txn_id`` end? Answered once decided, or PENDING after ``wait`` seconds."""

    txn_id: str
    wait: float = 0.0


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Spec ``RMAck``: ``rm_id`` applied ``outcome`` of ``txn_id`` durably and will never
    ask about it again (DESIGN.md pitfall 8)."""

    txn_id: str
    rm_id: str
    outcome: Outcome
    #: Someone waits for it (:attr:`Decided.ack_awaited`): the driver sends it at once,
    #: not lazily with the next message. Not on the wire.
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The coordinator took an :class:`Acknowledge` (counted it, or passed it on)."""

    txn_id: str
    rm_id: str


Request: TypeAlias = Begin | Join | AwaitPrepare | Commit | Abort | AskOutcome | Acknowledge

# ---------------------------------------------------------------- coordinator -> application/RM


@dataclass(frozen=True, slots=True)
class Joined:
    txn_id: str
    rm_id: str


@dataclass(frozen=True, slots=True)
class Prepare:
    """The paper's Prepare: registration closed with ``rm_id`` in the set; vote now.
    ``prepare`` False: the wait ended first (ask again)."""

    txn_id: str
    rm_id: str
    prepare: bool = True


@dataclass(frozen=True, slots=True)
class Decided:
    """The outcome. ``applied``: every RM of the set acknowledged applying it (only
    reported to a :class:`Commit` with ``wait_applied``). ``ack_awaited`` (to an RM): a
    commit caller waits for the RMs' acknowledgements, so they should not be deferred."""

    txn_id: str
    decision: Decision
    applied: bool = False
    ack_awaited: bool = False


@dataclass(frozen=True, slots=True)
class Unknown:
    """No coordinator owns ``txn_id`` and a majority of acceptors never heard of it."""

    txn_id: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Pending:
    """The wait of an :class:`AskOutcome` ended before a decision."""

    txn_id: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A request broke a rule; ``error`` says which (its ``status`` names the gRPC code)."""

    txn_id: str
    error: Exception = field(compare=False)
