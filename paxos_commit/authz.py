"""Who may run operators' calls: the one place where that is decided.

Every operator RPC (the acceptors' ``InspectTransaction`` / ``ListTransactions``, the
coordinators' ``Retry`` / ``ListOwned``) calls :func:`require` before doing anything, and
``paxos-commit txn resolve`` runs its ballots through :func:`require_local`. Today both
allow everything: the cluster has no identities yet. When "Nobody can forge a decision"
(mTLS identities, issue 9) lands, :func:`require` reads the peer's certificate from
``context.auth_context()`` and refuses (``PERMISSION_DENIED``) any action its role does
not allow; the actions are named here so that policy is one table.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["Action", "require", "require_local"]


class Action(enum.Enum):
    """Operators' actions, by the role they will need."""

    #: Read transactions' state (``txn show``, ``txn list``, the console): role "operator".
    INSPECT = "inspect"
    #: Wake recovery at a coordinator (``txn retry``): role "admin".
    RETRY = "retry"
    #: Run ballots as an admin leader (``txn resolve``): role "admin"; the acceptors will
    #: check it on the ballots' Phase1a/Phase2a once they check leaders' identities.
    RESOLVE = "resolve"


async def require(context: Any, action: Action) -> None:
    """Refuse the call unless its peer may do ``action``. Allows every peer for now (no
    identities exist yet; see the module docstring)."""
    del context, action


def require_local(action: Action) -> None:
    """The client-side twin for a tool acting on its own (``txn resolve``): where the
    admin certificate will be loaded. A no-op until identities exist."""
    del action
