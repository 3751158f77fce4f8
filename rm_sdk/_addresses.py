"""Addresses and durations given to the SDK, checked where they are given: a wrong one
is named at once (ValueError/TypeError) instead of failing later as an unreachable peer
or a deadline that has already passed."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable

__all__ = ["check_addresses", "check_seconds", "is_ip"]


def check_addresses(kind: str, addresses: object, *, allow_empty: bool = False) -> list[str]:
    """``addresses`` as a list of ``host:port`` strings (a DNS name, an IPv4 address or a
    bracketed IPv6 one; port 1-65535), or a ValueError/TypeError naming the bad one. A bare
    string is refused: iterating it would dial each of its characters."""
    if isinstance(addresses, (str, bytes)) or not isinstance(addresses, Iterable):
        raise TypeError(f"{kind} addresses: a list of 'host:port' strings, not {type(addresses).__name__}")
    out = list(addresses)
    if not out and not allow_empty:
        raise ValueError(f"need at least one {kind} address")
    for a in out:
        if not isinstance(a, str):
            raise TypeError(f"{kind} address {a!r}: a 'host:port' string, not {type(a).__name__}")
        host, sep, port = a.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            ok_host = is_ip(host[1:-1])
        else:
            ok_host = bool(_HOST.fullmatch(host))
        if not (sep and ok_host and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{kind} address {a!r}: expected host:port (port 1-65535, IPv6 in brackets)")
    return out


def check_seconds(name: str, value: object) -> float:
    """A positive, finite number of seconds, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: {value} seconds; give a finite number > 0")
    return float(value)


#: A DNS name or IPv4 address: dot-separated labels of letters, digits, '-' and '_'.
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
