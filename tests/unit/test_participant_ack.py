"""The participant driver's acknowledgement: to the coordinator it joined at, then to each
other replica while they answer UNAVAILABLE (an owner that crashed holding the ack, or a
replica whose acceptors have not confirmed it yet), never past a real refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from paxos_commit.bench import NullRM
from rm_sdk.core.messages import Acknowledge
from rm_sdk.participant import Participant
from rm_sdk.protocol import Outcome


class _Stub:
    def __init__(
        self, addr: str, log: list[str], codes: dict[str, grpc.StatusCode], lazy: list[bool]
    ) -> None:
        self.addr, self.log, self.codes, self.lazy = addr, log, codes, lazy

    async def Acknowledge(self, request: Any, timeout: float | None = None, lazy: bool = False) -> Any:  # noqa: ASYNC109
        self.log.append(self.addr)
        self.lazy.append(lazy)
        code = self.codes.get(self.addr)
        if code is not None:
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)
        return None


class _Channels:
    coordinator_name = "coordinator"

    def __init__(self, codes: dict[str, grpc.StatusCode]) -> None:
        self.log: list[str] = []
        self.lazy: list[bool] = []
        self.codes = codes

    def coordinator(self, addr: str) -> _Stub:
        return _Stub(addr, self.log, self.codes, self.lazy)


def _ack(
    codes: dict[str, grpc.StatusCode], prefer: str, urgent: bool = False, lazy: list[bool] | None = None
) -> tuple[list[str], BaseException | None]:
    channels = _Channels(codes)
    p = Participant(NullRM("rm-a"), ["c1:7800", "c2:7800", "c3:7800"], channels=channels)  # type: ignore[arg-type]
    err: BaseException | None = None
    try:
        asyncio.run(p._acknowledge(Acknowledge("t1", "rm-a", Outcome.COMMITTED, urgent=urgent), prefer))
    except grpc.aio.AioRpcError as exc:
        err = exc
    if lazy is not None:
        lazy.extend(channels.lazy)
    return channels.log, err


def test_an_ack_nobody_waits_for_is_sent_lazily_and_an_awaited_one_at_once() -> None:
    lazy: list[bool] = []
    _ack({"c1:7800": grpc.StatusCode.UNAVAILABLE}, "c1:7800", lazy=lazy)
    assert lazy == [True, True]
    lazy.clear()
    _ack({"c1:7800": grpc.StatusCode.UNAVAILABLE}, "c1:7800", urgent=True, lazy=lazy)
    assert lazy == [False, False]


def test_the_ack_goes_to_the_coordinator_the_rm_joined_at_first() -> None:
    assert _ack({}, "c2:7800") == (["c2:7800"], None)


def test_an_unavailable_coordinator_passes_the_ack_to_the_next_replica() -> None:
    log, err = _ack(
        {"c2:7800": grpc.StatusCode.UNAVAILABLE, "c1:7800": grpc.StatusCode.DEADLINE_EXCEEDED}, "c2:7800"
    )
    assert log == ["c2:7800", "c1:7800", "c3:7800"] and err is None


def test_a_refusal_is_not_tried_elsewhere_and_every_replica_failing_is_an_error() -> None:
    log, err = _ack({"c1:7800": grpc.StatusCode.INVALID_ARGUMENT}, "c1:7800")
    assert log == ["c1:7800"] and isinstance(err, grpc.aio.AioRpcError)
    down = dict.fromkeys(("c1:7800", "c2:7800", "c3:7800"), grpc.StatusCode.UNAVAILABLE)
    log, err = _ack(down, "")
    assert log == ["c1:7800", "c2:7800", "c3:7800"] and isinstance(err, grpc.aio.AioRpcError)
    assert err.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_transient_codes_move_on(code: grpc.StatusCode) -> None:
    log, err = _ack({"c1:7800": code}, "c1:7800")
    assert log == ["c1:7800", "c2:7800"] and err is None
