"""Who may send what: the authorization policy of every service, in one place.

A pure function of (peer identity, request) -> None (allowed) or a :class:`Refusal`
naming the rule, used by the unary calls and by every message of a batched stream alike
(the identity is read once per call or stream, from the TLS peer's certificate; see
:func:`peer_identity`). One rule depends on an acceptor's state (an RM's recovery ballots,
:func:`check_rm_ballot`); the acceptor checks it inside the storage step, before anything
is written. The README's "Trust model" section explains the rules.

Rules (``rule`` names, as counted in ``paxos_commit_authz_refusals_total``):

- ``authenticated``: a peer without a ``spiffe://paxos-commit/<role>/<name>`` certificate
  is refused everything (UNAUTHENTICATED);
- ``leader-ballot``: phase 1a, and phase 2a above ballot 0, come from coordinators and
  admins, or from an RM running a recovery ballot under its own leader id
  (``rm-leader-id``) in a transaction in which it has voted (``rm-voted``);
- ``registrar``: the registrar instance's ballot-0 value comes from coordinators (and admins);
- ``own-vote``: an RM sends ballot-0 2a only for its own instance; coordinators send none;
- ``outcome-record``, ``list-undecided``: coordinators and admins only;
- ``read-bundle``: 2b bundles are read by coordinators, RMs and admins;
- ``application``: begin, commit and abort (without an RM id) come from applications and admins;
- ``own-rm``: join, await-prepare, an RM's acknowledgement of an applied outcome and an
  RM's refusal (abort with rm_id) only as that RM;
- ``ask-outcome``: outcomes are asked by applications, RMs, coordinators and admins;
- ``operator-inspect``, ``operator-retry``, ``operator-resolve``: operators' actions
  (:class:`Action`: ``txn show``/``list`` and the console, ``txn retry``, ``txn resolve``)
  are admins' only (:func:`check_action`). The operators' RPCs (``InspectTransaction``,
  ``ListTransactions``, ``ListOwned``, ``Retry``) are checked as their action; ``txn
  resolve``'s ballots are an admin's leader ballots (``leader-ballot`` admits admins).

Admins may do everything (tools and tests); acceptors call nobody and may do nothing.
Without TLS (``--insecure``) every request runs as :data:`INSECURE`, an admin.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from rm_sdk.identity import ACCEPTOR, ADMIN, APP, COORDINATOR, RM, Identity, identity_from_uris
from rm_sdk.protocol import REGISTRAR, InstanceState, NoValue, ProtocolError, RMSet
from rm_sdk.wire import pb

__all__ = [
    "ACTION_OF",
    "INSECURE",
    "Action",
    "Denied",
    "Refusal",
    "UNAUTHENTICATED",
    "check",
    "check_action",
    "check_rm_ballot",
    "peer_identity",
    "require_local",
    "rm_of_leader",
]

#: The identity of every peer of a server started with --insecure: no checks at all.
INSECURE: Final = Identity(ADMIN, "insecure")

#: An RM's leader ids (its recovery ballots): ``rm-<rm id>-<8 hex digits>``; the RM id is
#: recovered exactly, so one RM can never use another's ballots.
_RM_LEADER: Final = re.compile(r"rm-(.+)-[0-9a-f]{8}")


class Action(enum.Enum):
    """Operators' actions (:mod:`paxos_commit.admin`), each an admin's (:func:`check_action`)."""

    #: Read transactions' state (``txn show``, ``txn list``, the console).
    INSPECT = "inspect"
    #: Wake recovery at a coordinator (``txn retry``).
    RETRY = "retry"
    #: Run ballots as an admin leader (``txn resolve``); the acceptors check the ballots
    #: themselves as leader ballots (``leader-ballot``).
    RESOLVE = "resolve"


#: The operators' RPCs' requests, by the action each is.
ACTION_OF: Final[Mapping[type, Action]] = {
    pb.InspectTransactionRequest: Action.INSPECT,
    pb.ListTransactionsRequest: Action.INSPECT,
    pb.ListOwnedRequest: Action.INSPECT,
    pb.RetryRequest: Action.RETRY,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused: the gRPC status code name, the rule, and what to tell the peer."""

    code: str
    rule: str
    detail: str


class Denied(ProtocolError):
    """A :class:`Refusal` raised through the services' usual error path (a ProtocolError,
    so nothing changes and the refusal's code answers)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal
        self.status = refusal.code


def _deny(rule: str, ident: Identity, what: str) -> Refusal:
    return Refusal("PERMISSION_DENIED", rule, f"permission denied ({rule}): {ident} may not {what}")


def rm_of_leader(leader: str) -> str | None:
    """The RM whose leader id this is, or None if it is not an RM's."""
    m = _RM_LEADER.fullmatch(leader)
    return m.group(1) if m else None


def peer_identity(auth_context: Mapping[str, Any]) -> Identity | None:
    """The peer's identity from a gRPC auth context (its certificate's URI SANs), or None."""
    uris = auth_context.get("peer_uri") or ()
    return identity_from_uris(u.decode(errors="replace") if isinstance(u, bytes) else str(u) for u in uris)


UNAUTHENTICATED: Final = Refusal(
    "UNAUTHENTICATED",
    "authenticated",
    "unauthenticated (authenticated): present a certificate naming spiffe://paxos-commit/<role>/<name>",
)


def check(ident: Identity | None, msg: Any) -> Refusal | None:
    """None if ``ident`` may send ``msg`` (a request message of the Acceptor or the
    Coordinator service), else why not. Cheap: no decoding beyond reading fields."""
    if ident is None:
        return UNAUTHENTICATED
    role = ident.role
    if role == ADMIN:
        return None
    if role == ACCEPTOR:
        return _deny("no-calls", ident, "call other services")
    t = type(msg)
    action = ACTION_OF.get(t)
    if action is not None:
        return check_action(ident, action)
    # ------------------------------------------------ acceptor service
    if t is pb.Phase2aRequest:
        if msg.ballot.round == 0:
            if role != COORDINATOR and role != RM:
                return _deny("own-vote", ident, "send ballot-0 values")
            for p in msg.proposals:
                if p.instance == REGISTRAR:
                    if role != COORDINATOR:
                        return _deny("registrar", ident, "propose the registrar's ballot-0 value")
                elif role != RM or p.instance != ident.name:
                    return _deny("own-vote", ident, f"vote at ballot 0 for instance {_short(p.instance)!r}")
            return None
        return _leader(ident, msg.ballot.leader)
    if t is pb.Phase1aRequest:
        return _leader(ident, msg.ballot.leader)
    if t is pb.AwaitPhase2bRequest:
        return None if role in (COORDINATOR, RM) else _deny("read-bundle", ident, "read 2b bundles")
    if t is pb.RecordOutcomeRequest:
        return None if role == COORDINATOR else _deny("outcome-record", ident, "record outcomes")
    if t is pb.ListUndecidedRequest:
        return None if role == COORDINATOR else _deny("list-undecided", ident, "list undecided transactions")
    # ------------------------------------------------ coordinator service
    if t is pb.GetOutcomeRequest:
        return None if role in (APP, RM, COORDINATOR) else _deny("ask-outcome", ident, "ask outcomes")
    if t is pb.JoinRequest or t is pb.AwaitPrepareRequest or t is pb.AcknowledgeRequest:
        if role == RM and msg.rm_id == ident.name:
            return None
        return _deny("own-rm", ident, f"act as resource manager {_short(msg.rm_id)!r}")
    if t is pb.AbortRequest and msg.rm_id:
        if role == RM and msg.rm_id == ident.name:
            return None
        return _deny("own-rm", ident, f"refuse as resource manager {_short(msg.rm_id)!r}")
    if t is pb.BeginRequest or t is pb.CommitRequest or t is pb.AbortRequest:
        return None if role == APP else _deny("application", ident, "begin, commit or abort transactions")
    return Refusal("PERMISSION_DENIED", "unknown-request", f"no rule admits {t.__name__}")


def check_action(ident: Identity | None, action: Action) -> Refusal | None:
    """None if ``ident`` may do the operators' ``action``, else why not (rule
    ``operator-<action>``): admins only (with --insecure everyone is :data:`INSECURE`, an
    admin)."""
    if ident is None:
        return UNAUTHENTICATED
    if ident.role == ADMIN:
        return None
    return _deny(f"operator-{action.value}", ident, f"{action.value} transactions (operators' {action.name})")


def require_local(ident: Identity, action: Action) -> None:
    """The client-side twin of :func:`check_action`, for a tool acting on its own
    (``txn resolve``'s ballots): raise :class:`Denied` before sending anything if the
    tool's own certificate may not do ``action`` (the servers would refuse it anyway)."""
    refusal = check_action(ident, action)
    if refusal is not None:
        raise Denied(refusal)


def _leader(ident: Identity, leader: str) -> Refusal | None:
    if ident.role == COORDINATOR:
        return None
    if ident.role == RM:
        if rm_of_leader(leader) != ident.name:
            return _deny("rm-leader-id", ident, f"run ballots as leader {_short(leader)!r}")
        return None  # and check_rm_ballot, against the acceptor's state
    return _deny("leader-ballot", ident, "send leader ballots (phase 1a, phase 2a above ballot 0)")


def check_rm_ballot(ident: Identity, txn_id: str, states: Mapping[str, InstanceState]) -> Refusal | None:
    """An RM's recovery ballot (1a, or 2a above 0) against what this acceptor holds of the
    transaction: allowed only if the RM has voted in it here (its instance holds a value)
    or the registrar's value here names it. Other roles: None (:func:`check` decided)."""
    if ident.role != RM:
        return None
    own = states.get(ident.name)
    if own is not None and not isinstance(own.val, NoValue):
        return None
    reg = states.get(REGISTRAR)
    if reg is not None and isinstance(reg.val, RMSet) and ident.name in reg.val.rms:
        return None
    return _deny("rm-voted", ident, f"run ballots in transaction {txn_id}, in which it has not voted here")


def _short(s: str) -> str:
    return s if len(s) <= 40 else s[:40] + "..."
