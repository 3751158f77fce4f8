"""The operators' web console (``paxos-commit console``); see :mod:`paxos_commit.console.server`."""

from paxos_commit.console.server import Console

__all__ = ["Console"]
