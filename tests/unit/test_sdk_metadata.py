"""``rm_sdk.__version__`` and RM reasons carried in abort reasons."""

from __future__ import annotations

from importlib import metadata

import rm_sdk
from rm_sdk.client import RMRefused, TransactionAborted


def test_version_comes_from_the_package_metadata() -> None:
    assert rm_sdk.__version__ == metadata.version("paxos-commit")
    assert "__version__" in rm_sdk.__all__


def test_an_rms_own_reason_after_the_coordinators_text_still_names_the_rm() -> None:
    reason = "resource manager 'pg-a' voted to abort: CheckViolation: new row violates\ncheck"
    exc = TransactionAborted.from_reason("t1", reason)
    assert isinstance(exc, RMRefused) and exc.rm_id == "pg-a" and exc.reason == reason
