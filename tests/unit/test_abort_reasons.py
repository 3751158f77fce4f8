"""Which :class:`TransactionAborted` subclass each coordinator abort reason becomes."""

from __future__ import annotations

import pickle

import pytest

from rm_sdk.client import (
    Cancelled,
    CoordinatorFailed,
    RMRefused,
    TransactionAborted,
    TransactionTimeout,
    VoteTimeout,
)


@pytest.mark.parametrize(
    ("reason", "cls", "rm_id"),
    [
        ("resource manager 'bank-a' voted to abort", RMRefused, "bank-a"),
        ("resource manager 'rm:1.x' did not vote in time", VoteTimeout, "rm:1.x"),
        ("transaction timeout", TransactionTimeout, None),
        ("the owning coordinator failed before registration closed", CoordinatorFailed, None),
        ("aborted by the application", Cancelled, None),
        ("out of stock", Cancelled, None),
        ("recorded at an acceptor", TransactionAborted, None),
        ("aborted before commit (by the application or the transaction timeout)", TransactionAborted, None),
        ("", TransactionAborted, None),
    ],
)
def test_reason_picks_the_subclass(reason: str, cls: type[TransactionAborted], rm_id: str | None) -> None:
    exc = TransactionAborted.from_reason("t1", reason)
    assert type(exc) is cls and exc.txn_id == "t1"
    assert exc.reason == (reason or "aborted")
    assert getattr(exc, "rm_id", None) == rm_id
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is cls and again.reason == exc.reason and str(again) == str(exc)
    assert getattr(again, "rm_id", None) == rm_id
