"""paxos-commit SDK: begin and commit transactions, and write resource managers.

Applications use :class:`Client`; services that hold resources run a
:class:`Participant` for a :class:`ResourceManager` (or use the ready-made
:class:`Ledger`).
"""

from rm_sdk.client import Client, OutcomeUnknown, Transaction, TransactionAborted, TransactionContext
from rm_sdk.ledger import Ledger
from rm_sdk.participant import Participant, ResourceManager, RMState
from rm_sdk.protocol import Outcome, Vote

__all__ = [
    "Client",
    "Ledger",
    "Outcome",
    "OutcomeUnknown",
    "Participant",
    "RMState",
    "ResourceManager",
    "Transaction",
    "TransactionAborted",
    "TransactionContext",
    "Vote",
]
