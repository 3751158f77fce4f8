"""What a service process loads at start: the CLI, its service and what that runs; not
the SDK's client and resource managers, the operators' tools, Alembic (a store at head)
or cryptography (no TLS). Each is a tenth of a second or so of every start, a restart
after a crash included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import rm_sdk

NOT_AT_START = (
    "alembic",
    "cryptography",
    "paxos_commit.admin",
    "paxos_commit.chaos.workload",
    "rm_sdk.client",
    "rm_sdk.ledger",
    "rm_sdk.participant",
    "rm_sdk.postgres",
    "rm_sdk.sync",
)


def _loaded_by(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    modules: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return modules


@pytest.mark.parametrize("service", ["acceptor.service", "coordinator.service"])
def test_a_service_start_loads_neither_the_sdk_client_nor_the_operators_tools(service: str) -> None:
    loaded = _loaded_by(f"import paxos_commit.cli as cli\ncli.build_parser()\nimport {service}")
    assert service in loaded
    heavy = [m for m in loaded if m.startswith(NOT_AT_START)]
    assert heavy == [], f"{service} loads {heavy} at start"


def test_every_public_name_of_the_sdk_resolves_and_is_listed() -> None:
    # The package loads its names on first use: a name in __all__ that the lazy table
    # lost would break `from rm_sdk import X` only for whoever first asks for it.
    for name in rm_sdk.__all__:
        assert getattr(rm_sdk, name) is not None, name
        assert name in dir(rm_sdk), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = rm_sdk.Nope  # type: ignore[attr-defined]


def test_importing_the_sdk_alone_loads_only_its_package() -> None:
    loaded = _loaded_by("import rm_sdk")
    assert [m for m in loaded if m.startswith("rm_sdk.")] == [], "rm_sdk's __init__ imports eagerly again"
    assert "rm_sdk.client" in _loaded_by("from rm_sdk import Client")
