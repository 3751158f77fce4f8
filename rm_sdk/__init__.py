"""paxos-commit SDK: begin and commit transactions, and write resource managers.

Applications use :class:`Client` (or :class:`SyncClient`); services that hold resources
run a :class:`Participant` for a :class:`ResourceManager`, or use a ready-made one: the
SQLite :class:`Ledger`, :class:`TccParticipant` (try/confirm/cancel callbacks), or
:class:`rm_sdk.postgres.PostgresRM` (``PREPARE TRANSACTION``; the ``postgres`` extra).
:mod:`rm_sdk.propagation` carries the transaction to the services an application calls;
:mod:`rm_sdk.testing` runs a cluster inside a test process.
"""

from importlib import metadata as _metadata

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

try:
    #: The installed version of the ``paxos-commit`` distribution this SDK came with.
    __version__: str = _metadata.version("paxos-commit")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

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
