"""Argument types for the command line: each turns a string (typed, or a PAXOS_COMMIT_*
environment variable given as a string default) into a value or an argparse error that
names the bad value, so a wrong number stops the command before it starts anything
(no traceback, no division by zero, no run with a silently replaced value)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from rm_sdk._addresses import check_addresses

__all__ = ["CommandError", "addresses", "count", "levels", "odd_count", "port", "seconds"]


class CommandError(Exception):
    """A command cannot run as asked (a missing tool, an unusable database address):
    ``paxos-commit`` prints the message and exits 2, without a traceback."""


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def count(minimum: int = 1) -> Callable[[str], int]:
    """A whole number, at least ``minimum``."""

    def parse(value: str) -> int:
        n = _int(value)
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{n} is below {minimum}: give a whole number >= {minimum}")
        return n

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def odd_count(value: str) -> int:
    """2F+1: a positive odd number (a majority must be unique)."""
    n = _int(value)
    if n < 1 or n % 2 == 0:
        raise argparse.ArgumentTypeError(f"{n} acceptors: give 2F+1, an odd number >= 1")
    return n


def port(value: str) -> int:
    """A TCP port; 0 lets the system pick a free one."""
    n = _int(value)
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is not a TCP port (0-65535)")
    return n


def seconds(*, positive: bool = False) -> Callable[[str], float]:
    """A finite duration in seconds: >= 0, or > 0 with ``positive``."""

    def parse(value: str) -> float:
        try:
            s = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
        if not math.isfinite(s) or s < 0 or (positive and s == 0):
            raise argparse.ArgumentTypeError(
                f"{value} seconds: give a finite number {'> 0' if positive else '>= 0'}"
            )
        return s

    parse.__name__ = "seconds"
    return parse


def _items(value: str) -> list[str]:
    """The non-empty items of a comma-separated list, stripped."""
    return [p.strip() for p in value.split(",") if p.strip()]


def levels(value: str) -> list[int]:
    """Comma-separated concurrency levels, each >= 1 (e.g. ``1,16,64``)."""
    parts = _items(value)
    if not parts:
        raise argparse.ArgumentTypeError("no concurrency level given (e.g. 1,16,64)")
    one = count(1)
    return [one(p) for p in parts]


def addresses(kind: str, *, odd: bool = False) -> Callable[[str], str]:
    """Comma-separated ``host:port`` addresses (2F+1 of them with ``odd``), given back
    joined by commas, as the commands read them."""

    def parse(value: str) -> str:
        parts = _items(value)
        try:
            check_addresses(kind, parts)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if odd and len(parts) % 2 == 0:
            raise argparse.ArgumentTypeError(f"{len(parts)} {kind} addresses: give 2F+1, an odd number")
        return ",".join(parts)

    parse.__name__ = f"{kind} addresses"
    return parse
