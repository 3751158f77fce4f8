"""paxos-commit SDK: begin and commit transactions, and write resource managers.

Applications use :class:`Client`; services that hold resources run a
:class:`Participant` for a :class:`ResourceManager` (or use the ready-made
:class:`Ledger`).
"""

from rm_sdk.client import (
    Cancelled,
    Client,
    CoordinatorFailed,
    OutcomeUnknown,
    RMRefused,
    Transaction,
    TransactionAborted,
    TransactionContext,
    TransactionTimeout,
    VoteTimeout,
)
from rm_sdk.ledger import Ledger
from rm_sdk.participant import Participant, ResourceManager, RMState
from rm_sdk.protocol import Outcome, Vote
from rm_sdk.sync import SyncClient, SyncParticipant, SyncResourceManager, SyncTransaction

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
    "Transaction",
    "TransactionAborted",
    "TransactionContext",
    "TransactionTimeout",
    "Vote",
    "VoteTimeout",
]
