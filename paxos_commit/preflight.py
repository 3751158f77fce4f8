"""Checks a command runs before it starts anything, so that an unusable setting ends it
at once with :class:`~paxos_commit.argtypes.CommandError` (a message naming the problem,
exit 2) instead of a traceback or a run whose every transaction fails."""

from __future__ import annotations

from paxos_commit.argtypes import CommandError

__all__ = ["require_postgres"]


def require_postgres(dsn: str, *, prepared: int = 0, why: str = "") -> None:
    """The Postgres server of ``dsn`` answers, and holds at least ``prepared`` prepared
    transactions at once (``max_prepared_transactions``; Postgres's default is 0). ``why``
    says what needs that many, for the message."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SHOW max_prepared_transactions").fetchone()
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"cannot use the Postgres server at {dsn!r}: {detail}") from None
    have = int(row[0]) if row else 0
    if have < prepared:
        raise CommandError(
            f"the Postgres server has max_prepared_transactions = {have}; {why or 'this run'} "
            f"needs at least {prepared}: ALTER SYSTEM SET max_prepared_transactions = "
            f"{max(prepared, 64)}, then restart Postgres"
        )
