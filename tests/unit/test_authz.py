"""Every operators' RPC asks :mod:`paxos_commit.authz` first: the one place where the
admin role of "Nobody can forge a decision" will be checked. A new operator RPC that
skips it fails here."""

from __future__ import annotations

import inspect

import pytest

from acceptor.service import AcceptorServicer
from coordinator.service import CoordinatorServicer
from paxos_commit import admin, authz

OPERATOR_RPCS = [
    (AcceptorServicer.InspectTransaction, authz.Action.INSPECT),
    (AcceptorServicer.ListTransactions, authz.Action.INSPECT),
    (CoordinatorServicer.ListOwned, authz.Action.INSPECT),
    (CoordinatorServicer.Retry, authz.Action.RETRY),
]


@pytest.mark.parametrize(("method", "action"), OPERATOR_RPCS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_operator_rpcs_ask_authz_first(method: object, action: authz.Action) -> None:
    lines = inspect.getsource(method).splitlines()  # type: ignore[arg-type]
    start = next(i for i, line in enumerate(lines) if "->" in line and line.rstrip().endswith(":"))
    first = next(line.strip() for line in lines[start + 1 :] if line.strip())
    assert first == f"await authz.require(context, authz.Action.{action.name})", first


def test_resolve_asks_authz_first() -> None:
    body = inspect.getsource(admin.Admin.resolve_abort)
    assert body.index("authz.require_local(authz.Action.RESOLVE)") < body.index("await self.show(")
