"""What the SDK is given is checked where it is given: addresses and durations, named in the
error (a bare string of one address used to be taken as a list of its characters, an
address without a port or a negative timeout failed only later, as an unreachable peer or
an expired deadline)."""

from __future__ import annotations

import math
import re

import pytest

from paxos_commit.bench import NullRM
from rm_sdk import Client, Participant
from rm_sdk._addresses import check_addresses, check_seconds

GOOD = ["127.0.0.1:7700", "localhost:1", "[::1]:65535", "acc-0.acc.ns.svc.cluster.local:7700", "a_b:80"]
BAD = [
    "nohostport",
    "host:",
    ":7700",
    "host:0",
    "host:65536",
    "host:http",
    "host:-1",
    "ho st:1",
    "::1:7700",
    "[nothost]:1",
    "-host:1",
    "host.:1",
    "",
]


def test_good_addresses_pass_unchanged() -> None:
    assert check_addresses("acceptor", GOOD) == GOOD
    assert check_addresses("acceptor", tuple(GOOD[:1])) == GOOD[:1]
    assert check_addresses("acceptor", [], allow_empty=True) == []


@pytest.mark.parametrize("address", BAD)
def test_a_bad_address_is_named(address: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"acceptor address {address!r}: expected host:port")):
        check_addresses("acceptor", ["127.0.0.1:1", address])


def test_a_string_or_a_non_string_is_not_a_list_of_addresses() -> None:
    with pytest.raises(TypeError, match="a list of 'host:port' strings, not str"):
        check_addresses("coordinator", "127.0.0.1:7800")
    with pytest.raises(TypeError, match="not bytes"):
        check_addresses("coordinator", b"127.0.0.1:7800")
    with pytest.raises(TypeError, match="not int"):
        check_addresses("coordinator", 7800)
    with pytest.raises(TypeError, match="a 'host:port' string, not int"):
        check_addresses("coordinator", ["127.0.0.1:7800", 7801])
    with pytest.raises(ValueError, match="need at least one coordinator address"):
        check_addresses("coordinator", [])


def test_durations_are_finite_and_positive() -> None:
    assert check_seconds("t", 0.001) == 0.001
    assert check_seconds("t", 3) == 3.0
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"^t: "):
            check_seconds("t", bad)
    for wrong in ("5", None, True):
        with pytest.raises(TypeError, match=r"^t: a number of seconds"):
            check_seconds("t", wrong)


def test_client_and_participant_refuse_what_they_cannot_use() -> None:
    with pytest.raises(TypeError):
        Client("127.0.0.1:7800")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'coordinator'"):
        Client(["coordinator"])
    with pytest.raises(ValueError, match="rpc_timeout"):
        Client(["127.0.0.1:7800"], rpc_timeout=-1)
    with pytest.raises(ValueError, match="outcome_timeout"):
        Client(["127.0.0.1:7800"], outcome_timeout=0)
    with pytest.raises(ValueError, match="acceptor address 'acc'"):
        Participant(NullRM("rm-1"), ["127.0.0.1:7800"], acceptors=["acc"])
    with pytest.raises(ValueError, match="owner_timeout"):
        Participant(NullRM("rm-1"), ["127.0.0.1:7800"], owner_timeout=0)
    with pytest.raises(ValueError, match="recovery_timeout"):
        Participant(NullRM("rm-1"), ["127.0.0.1:7800"], recovery_timeout=math.nan)
    c = Client(["127.0.0.1:7800", "[::1]:7801"], rpc_timeout=0.5)
    assert c.coordinators == ["127.0.0.1:7800", "[::1]:7801"] and c.rpc_timeout == 0.5
