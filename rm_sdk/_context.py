"""The current transaction of this task or thread (a context variable).

Kept apart from :mod:`rm_sdk.propagation` so that :mod:`rm_sdk.client` can make a
transaction current without importing the gRPC interceptors (which import the client).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rm_sdk.client import Transaction, TransactionContext

_current: ContextVar[TransactionContext | None] = ContextVar("paxos_commit_txn", default=None)


def current() -> TransactionContext | None:
    """The transaction current in this task or thread, or None."""
    return _current.get()


@contextlib.contextmanager
def use(ctx: TransactionContext | None) -> Iterator[TransactionContext | None]:
    """Make ``ctx`` current (None: no transaction) until the block ends."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


#: Transactions begun by a Client of this process and not finished, by id: an RM of this
#: process may join one without waiting (its commit waits for the join instead).
_local: weakref.WeakValueDictionary[str, Transaction] = weakref.WeakValueDictionary()


def local(txn_id: str) -> Transaction | None:
    """The unfinished transaction ``txn_id`` if a Client of this process began it."""
    return _local.get(txn_id)
