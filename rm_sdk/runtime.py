"""Process-wide settings an application opts into; the SDK never changes them itself."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc() -> None:
    """Collect cycles far less often, and keep what was built so far out of every
    collection. A process that runs many transactions allocates and frees many
    short-lived objects per message; CPython's default cyclic GC (a young collection
    every 700 allocations) then spends 8-17% of its CPU on them (measured with
    ``paxos-commit bench``: 13-16% of the application's). The SDK and the services make
    no reference cycles on the failure-free path (tests/integration/test_cycles.py), so
    their state is freed by reference counting and rare collections only let the few
    cycles of failures (exceptions, broken streams) wait longer. Call it once, after
    startup; the paxos-commit services do."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(500_000, 50, 100)
