"""The authorization policy (paxos_commit.authz), rule by rule: the right identity is
admitted, every wrong one refused with the rule's name (issue 9); the operators' actions
(issue 12) are admins' only, and every operators' RPC asks the policy first."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from acceptor.service import AcceptorServicer
from coordinator.service import CoordinatorServicer
from paxos_commit import admin, authz
from paxos_commit.authz import INSECURE, check, check_rm_ballot, peer_identity, rm_of_leader
from paxos_commit.metrics import AcceptorMetrics, CoordinatorMetrics
from rm_sdk.identity import Identity, identity_from_uris, parse_spiffe_id
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, InstanceState, RMSet, Vote
from rm_sdk.wire import pb

COORD = Identity("coordinator", "c0")
RM_A = Identity("rm", "bank-a")
RM_B = Identity("rm", "bank-b")
APP = Identity("app", "shop")
ADMIN = Identity("admin", "ops")
ACC = Identity("acceptor", "0")
EVERYONE = [COORD, RM_A, RM_B, APP, ADMIN, ACC]

VOTE = pb.Value(vote=pb.VOTE_PREPARED)
B0 = pb.Ballot(round=0)
LEADER = pb.Ballot(round=9, leader="c0.0123456789ab")
RM_A_LEADER = pb.Ballot(round=3, leader="rm-bank-a-0123abcd")

CASES: list[tuple[object, set[Identity], str]] = [
    (pb.Phase1aRequest(txn_id="t", ballot=LEADER, instances=["bank-a"]), {COORD, ADMIN}, "rm-leader-id"),
    (pb.Phase1aRequest(txn_id="t", ballot=RM_A_LEADER, instances=["bank-a"]), {COORD, ADMIN, RM_A}, ""),
    (pb.Phase2aRequest(txn_id="t", ballot=LEADER, proposals=[pb.Proposal(instance="bank-a", value=VOTE)]),
     {COORD, ADMIN}, ""),
    (pb.Phase2aRequest(txn_id="t", ballot=B0, proposals=[pb.Proposal(instance="bank-a", value=VOTE)]),
     {RM_A, ADMIN}, "own-vote"),
    (pb.Phase2aRequest(txn_id="t", ballot=B0, proposals=[
        pb.Proposal(instance=REGISTRAR, value=pb.Value(rm_set=pb.RMSet()))]), {COORD, ADMIN}, "registrar"),
    (pb.AwaitPhase2bRequest(txn_id="t"), {COORD, RM_A, RM_B, ADMIN}, "read-bundle"),
    (pb.RecordOutcomeRequest(txn_id="t", outcome=pb.OUTCOME_COMMITTED), {COORD, ADMIN}, "outcome-record"),
    (pb.ListUndecidedRequest(), {COORD, ADMIN}, "list-undecided"),
    (pb.BeginRequest(), {APP, ADMIN}, "application"),
    (pb.CommitRequest(txn_id="t"), {APP, ADMIN}, "application"),
    (pb.AbortRequest(txn_id="t"), {APP, ADMIN}, "application"),
    (pb.AbortRequest(txn_id="t", rm_id="bank-a"), {RM_A, ADMIN}, "own-rm"),
    (pb.GetOutcomeRequest(txn_id="t"), {APP, RM_A, RM_B, COORD, ADMIN}, "ask-outcome"),
    (pb.JoinRequest(txn_id="t", rm_id="bank-a"), {RM_A, ADMIN}, "own-rm"),
    (pb.AwaitPrepareRequest(txn_id="t", rm_id="bank-a"), {RM_A, ADMIN}, "own-rm"),
    # Operators' RPCs (issue 12): admins only.
    (pb.InspectTransactionRequest(txn_id="t"), {ADMIN}, "operator-inspect"),
    (pb.ListTransactionsRequest(), {ADMIN}, "operator-inspect"),
    (pb.ListOwnedRequest(), {ADMIN}, "operator-inspect"),
    (pb.RetryRequest(txn_id="t"), {ADMIN}, "operator-retry"),
    # What `txn resolve` sends: an admin leader's ballots (admins may do everything).
    (pb.Phase1aRequest(txn_id="t", ballot=pb.Ballot(round=5, leader="admin.0123456789ab"),
                       instances=["bank-a"]), {COORD, ADMIN}, "leader-ballot"),
]  # fmt: skip


@pytest.mark.parametrize(("msg", "allowed", "rule"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_rule_admits_the_right_identities_only(msg: object, allowed: set[Identity], rule: str) -> None:
    for ident in EVERYONE:
        refusal = check(ident, msg)
        if ident in allowed:
            assert refusal is None, (ident, refusal)
        else:
            assert refusal is not None and refusal.code == "PERMISSION_DENIED", ident
            assert f"({refusal.rule})" in refusal.detail
            if rule and ident.role not in ("acceptor",):
                assert refusal.rule in (rule, "leader-ballot", "rm-leader-id", "own-vote"), refusal
    assert check(INSECURE, msg) is None
    unauth = check(None, msg)
    assert unauth is not None and unauth.code == "UNAUTHENTICATED"


def test_a_registrar_value_from_an_rm_is_refused_even_beside_its_own_vote() -> None:
    msg = pb.Phase2aRequest(txn_id="t", ballot=B0, proposals=[
        pb.Proposal(instance="bank-a", value=VOTE),
        pb.Proposal(instance=REGISTRAR, value=pb.Value(rm_set=pb.RMSet())),
    ])  # fmt: skip
    refusal = check(RM_A, msg)
    assert refusal is not None and refusal.rule == "registrar"


def test_an_rm_runs_recovery_ballots_only_where_it_voted() -> None:
    assert check_rm_ballot(RM_A, "t", {})  # never heard of it here
    voted = {"bank-a": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED)}
    assert check_rm_ballot(RM_A, "t", voted) is None
    assert check_rm_ballot(RM_B, "t", voted) is not None
    named = {REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, RMSet.of(["bank-b"]))}
    assert check_rm_ballot(RM_B, "t", named) is None
    assert check_rm_ballot(COORD, "t", {}) is None


def test_rm_leader_ids_name_exactly_one_rm() -> None:
    assert rm_of_leader("rm-bank-a-0123abcd") == "bank-a"
    assert rm_of_leader("rm-a-b-0123abcd") == "a-b"
    assert rm_of_leader("rm-a-b-0123abc") is None
    assert rm_of_leader("c0.0123456789ab") is None


def test_identities_come_from_one_spiffe_uri() -> None:
    assert parse_spiffe_id("spiffe://paxos-commit/rm/bank-a") == RM_A
    for bad in ("spiffe://other/rm/bank-a", "spiffe://paxos-commit/root/x", "spiffe://paxos-commit/rm/a/b",
                "spiffe://paxos-commit/rm/has space", "https://paxos-commit/rm/a"):  # fmt: skip
        assert parse_spiffe_id(bad) is None
    two = ["spiffe://paxos-commit/rm/a", "spiffe://paxos-commit/admin/a"]
    assert identity_from_uris(two) is None
    assert peer_identity({"peer_uri": [b"spiffe://paxos-commit/app/shop"]}) == APP
    assert peer_identity({}) is None


# ---------------------------------------------------------------- operators' actions


@pytest.mark.parametrize("action", list(authz.Action), ids=lambda a: a.name)
def test_operators_actions_are_admins_only(action: authz.Action) -> None:
    for ident in EVERYONE:
        refusal = authz.check_action(ident, action)
        if ident == ADMIN:
            assert refusal is None
        else:
            assert refusal is not None and refusal.code == "PERMISSION_DENIED"
            assert refusal.rule == f"operator-{action.value}"
            assert f"(operator-{action.value})" in refusal.detail and str(ident) in refusal.detail
    assert authz.check_action(INSECURE, action) is None  # --insecure: everyone is an admin
    unauth = authz.check_action(None, action)
    assert unauth is not None and unauth.code == "UNAUTHENTICATED"


def test_every_operators_request_is_an_action() -> None:
    operator_requests = {
        pb.InspectTransactionRequest: authz.Action.INSPECT,
        pb.ListTransactionsRequest: authz.Action.INSPECT,
        pb.ListOwnedRequest: authz.Action.INSPECT,
        pb.RetryRequest: authz.Action.RETRY,
    }
    assert dict(authz.ACTION_OF) == operator_requests


def test_resolve_asks_authz_first() -> None:
    """``txn resolve`` refuses itself before reading or sending anything unless its own
    certificate is an admin's (the acceptors would refuse its ballots anyway)."""
    body = inspect.getsource(admin.Admin.resolve_abort)
    assert body.index("authz.require_local(self.identity, authz.Action.RESOLVE)") < body.index(
        "await self.show("
    )
    authz.require_local(ADMIN, authz.Action.RESOLVE)
    authz.require_local(INSECURE, authz.Action.RESOLVE)
    with pytest.raises(authz.Denied) as info:
        authz.require_local(APP, authz.Action.RESOLVE)
    assert info.value.status == "PERMISSION_DENIED" and "operator-resolve" in str(info.value)


class _Aborted(Exception):
    pass


class _Context:
    """A unary call's context: the peer's certificate URIs, and abort()."""

    def __init__(self, uris: list[bytes]) -> None:
        self._auth = {"peer_uri": uris} if uris else {}
        self.code: grpc.StatusCode | None = None
        self.detail = ""

    def auth_context(self) -> dict[str, Any]:
        return self._auth

    async def abort(self, code: grpc.StatusCode, detail: str) -> None:
        self.code, self.detail = code, detail
        raise _Aborted(detail)


def _acceptor() -> tuple[Any, Any]:
    m = AcceptorMetrics()
    return AcceptorServicer(SimpleNamespace(acceptor_id=0), m, secure=True), m  # type: ignore[arg-type]


def _coordinator() -> tuple[Any, Any]:
    s = object.__new__(CoordinatorServicer)
    s.config = SimpleNamespace(tls=True)
    s.metrics = CoordinatorMetrics()
    return s, s.metrics


OPERATOR_RPCS = [
    (_acceptor, "InspectTransaction", pb.InspectTransactionRequest(txn_id="t"), authz.Action.INSPECT),
    (_acceptor, "ListTransactions", pb.ListTransactionsRequest(), authz.Action.INSPECT),
    (_coordinator, "ListOwned", pb.ListOwnedRequest(), authz.Action.INSPECT),
    (_coordinator, "Retry", pb.RetryRequest(txn_id="t"), authz.Action.RETRY),
]


@pytest.mark.parametrize(
    ("make", "method", "request_", "action"), OPERATOR_RPCS, ids=[r[1] for r in OPERATOR_RPCS]
)
async def test_operator_rpcs_refuse_non_admins_before_anything(
    make: Any, method: str, request_: Any, action: authz.Action
) -> None:
    """With TLS, each operators' RPC reads the peer's identity (the servicer's
    ``_identity``) and asks the policy before touching storage or the core (the fakes
    here have neither): an RM is PERMISSION_DENIED naming the rule, a peer without a
    certificate UNAUTHENTICATED, each counted in paxos_commit_authz_refusals_total."""
    servicer, metrics = make()
    ctx = _Context([b"spiffe://paxos-commit/rm/bank-a"])
    with pytest.raises(_Aborted):
        await getattr(servicer, method)(request_, ctx)
    assert ctx.code is grpc.StatusCode.PERMISSION_DENIED
    assert f"(operator-{action.value})" in ctx.detail
    rule = f"operator-{action.value}"
    assert (
        metrics.registry.get_sample_value("paxos_commit_authz_refusals_total", {"rule": rule, "role": "rm"})
        == 1
    )
    ctx = _Context([])
    with pytest.raises(_Aborted):
        await getattr(servicer, method)(request_, ctx)
    assert ctx.code is grpc.StatusCode.UNAUTHENTICATED
    assert (
        metrics.registry.get_sample_value(
            "paxos_commit_authz_refusals_total", {"rule": "authenticated", "role": "none"}
        )
        == 1
    )
