"""Start the selected TLC models ahead, in the background (see ``tests/spec/tlc.py``)."""

from __future__ import annotations

import pytest

from tests.spec import tlc


def pytest_collection_finish(session: pytest.Session) -> None:
    models = [
        item.callspec.params["model"]
        for item in session.items
        if item.originalname == "test_tlc_result_is_the_expected_one" and hasattr(item, "callspec")
    ]
    if models:
        tlc.start(models)


def pytest_sessionfinish(session: pytest.Session) -> None:
    tlc.stop()
