"""The services' event loop (``paxos_commit.serving.run``): uvloop when installed, asyncio's
own loop on request, and a clear error for anything else."""

from __future__ import annotations

import asyncio

import pytest

from paxos_commit import serving


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_uvloop_by_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(serving.EVENT_LOOP_ENV, raising=False)
    assert serving.run(_loop_module()) == "uvloop"
    monkeypatch.setenv(serving.EVENT_LOOP_ENV, "uvloop")
    assert serving.run(_loop_module()) == "uvloop"


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(serving.EVENT_LOOP_ENV, "asyncio")
    assert serving.run(_loop_module()) == "asyncio"


def test_an_unknown_loop_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(serving.EVENT_LOOP_ENV, "trio")
    with pytest.raises(SystemExit, match="PAXOS_COMMIT_EVENT_LOOP must be 'uvloop' or 'asyncio', not 'trio'"):
        serving.run(_loop_module())
