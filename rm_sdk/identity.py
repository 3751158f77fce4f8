"""Who a peer is: the role and name in its certificate's SPIFFE-style URI SAN.

``spiffe://paxos-commit/<role>/<name>``, e.g. ``spiffe://paxos-commit/rm/bank-a``. The
roles are what :mod:`paxos_commit.authz` authorizes; the name is an RM id for ``rm``, an
acceptor index for ``acceptor``, and a free label (an id) for the others. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from rm_sdk.protocol import ID_PATTERN

__all__ = [
    "ACCEPTOR",
    "ADMIN",
    "APP",
    "COORDINATOR",
    "RM",
    "ROLES",
    "TRUST_DOMAIN",
    "Identity",
    "identity_from_uris",
    "parse_spiffe_id",
    "spiffe_id",
]

TRUST_DOMAIN: Final = "paxos-commit"
COORDINATOR: Final = "coordinator"
RM: Final = "rm"
APP: Final = "app"
ADMIN: Final = "admin"
ACCEPTOR: Final = "acceptor"
ROLES: Final = (COORDINATOR, RM, APP, ADMIN, ACCEPTOR)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated peer: its role and its name within the role."""

    role: str
    name: str

    def __str__(self) -> str:
        return f"{self.role}/{self.name}"


def spiffe_id(ident: Identity) -> str:
    return f"spiffe://{TRUST_DOMAIN}/{ident.role}/{ident.name}"


def parse_spiffe_id(uri: str) -> Identity | None:
    """The identity a URI names, or None if it is not one of ours (another trust domain,
    an unknown role, a malformed name)."""
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        return None
    parts = uri[len(prefix) :].split("/")
    if len(parts) != 2:
        return None
    role, name = parts
    if role not in ROLES or ID_PATTERN.fullmatch(name) is None:
        return None
    return Identity(role, name)


def identity_from_uris(uris: Iterable[str]) -> Identity | None:
    """The one identity among a certificate's URI SANs; None if none or several
    (a certificate naming two identities is refused rather than guessed at)."""
    found = {i for i in (parse_spiffe_id(u) for u in uris) if i is not None}
    return found.pop() if len(found) == 1 else None
