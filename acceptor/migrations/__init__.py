"""Alembic migrations of the acceptor schema; :func:`upgrade` runs them at start, unless
:func:`at_head` says the store is already at the newest revision."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["HEAD", "at_head", "upgrade"]

HERE = Path(__file__).resolve().parent

#: The newest revision in ``versions/``; a test pins it to Alembic's own head. A store
#: already there starts without loading Alembic, whose imports (every dialect's DDL) cost
#: about 0.2 s of each acceptor's start, on the path of a restart after a crash.
HEAD = "0002"


def at_head(conn: Connection) -> bool:
    """Whether Alembic's version table names exactly :data:`HEAD`."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return False
    return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()) == [HEAD]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` in one transaction."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
