"""paxos-commit SDK: begin and commit transactions, and write resource managers.

Applications use :class:`Client` (or :class:`SyncClient`); services that hold resources
run a :class:`Participant` for a :class:`ResourceManager`, or use a ready-made one: the
SQLite :class:`Ledger`, :class:`TccParticipant` (try/confirm/cancel callbacks), or
:class:`rm_sdk.postgres.PostgresRM` (``PREPARE TRANSACTION``; the ``postgres`` extra).
:mod:`rm_sdk.propagation` carries the transaction to the services an application calls;
:mod:`rm_sdk.testing` runs a cluster inside a test process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rm_sdk.client import (
        Cancelled,
        Client,
        CoordinatorFailed,
        OutcomeUnknown,
        RMRefused,
        Transaction,
        TransactionAborted,
        TransactionContext,
        TransactionNotFound,
        TransactionTimeout,
        VoteTimeout,
    )
    from rm_sdk.ledger import Ledger
    from rm_sdk.participant import Participant, ResourceManager, RMState
    from rm_sdk.protocol import Outcome, Vote
    from rm_sdk.runtime import tune_gc
    from rm_sdk.sync import SyncClient, SyncParticipant, SyncResourceManager, SyncTransaction
    from rm_sdk.tcc import TccCallback, TccParticipant

    #: The installed version of the ``paxos-commit`` distribution this SDK came with.
    __version__: str

# The public names load on first use (PEP 562): the services import this package for
# its protocol and wire modules, and a process start should not pay for the client, the
# participant and the ledgers it never runs (about a tenth of a second each start).
_EXPORTS = {
    "Cancelled": "rm_sdk.client",
    "Client": "rm_sdk.client",
    "CoordinatorFailed": "rm_sdk.client",
    "OutcomeUnknown": "rm_sdk.client",
    "RMRefused": "rm_sdk.client",
    "Transaction": "rm_sdk.client",
    "TransactionAborted": "rm_sdk.client",
    "TransactionContext": "rm_sdk.client",
    "TransactionNotFound": "rm_sdk.client",
    "TransactionTimeout": "rm_sdk.client",
    "VoteTimeout": "rm_sdk.client",
    "Ledger": "rm_sdk.ledger",
    "Participant": "rm_sdk.participant",
    "ResourceManager": "rm_sdk.participant",
    "RMState": "rm_sdk.participant",
    "Outcome": "rm_sdk.protocol",
    "Vote": "rm_sdk.protocol",
    "tune_gc": "rm_sdk.runtime",
    "SyncClient": "rm_sdk.sync",
    "SyncParticipant": "rm_sdk.sync",
    "SyncResourceManager": "rm_sdk.sync",
    "SyncTransaction": "rm_sdk.sync",
    "TccCallback": "rm_sdk.tcc",
    "TccParticipant": "rm_sdk.tcc",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib import metadata

        try:
            version = metadata.version("paxos-commit")
        except metadata.PackageNotFoundError:  # a source tree that is not installed
            version = "0+unknown"
        globals()["__version__"] = version
        return version
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rm_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Cancelled",
    "Client",
    "CoordinatorFailed",
    "Ledger",
    "Outcome",
    "OutcomeUnknown",
    "Participant",
    "RMRefused",
    "RMState",
    "ResourceManager",
    "SyncClient",
    "SyncParticipant",
    "SyncResourceManager",
    "SyncTransaction",
    "TccCallback",
    "TccParticipant",
    "Transaction",
    "TransactionAborted",
    "TransactionContext",
    "TransactionNotFound",
    "TransactionTimeout",
    "Vote",
    "VoteTimeout",
    "__version__",
    "tune_gc",
]
