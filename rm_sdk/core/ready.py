"""What a step of the core asks its driver to do (etcd-io/raft's ``Ready``).

A core never performs I/O: each step appends to a :class:`Ready`, and the driver, after
the step, sends the messages, delivers the replies and writes the trace events. Time
comes in as an argument (seconds on the driver's monotonic clock); a core says when it
next needs a tick through ``next_deadline()``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rm_sdk.core.messages import AcceptorRequest, Decision
from rm_sdk.protocol import Ballot, NoValue, RMSet, Value

__all__ = ["Deadlines", "Ready", "TraceEvent", "trace_ballot", "trace_value"]

K = TypeVar("K")


def trace_ballot(b: Ballot) -> list[int | str]:
    """A ballot in a trace: [round, leader]; [-1, ""] for "nothing accepted"."""
    return [b.round, b.leader]


def trace_value(v: Value | NoValue) -> str | list[str] | None:
    """A value in a trace: "prepared", "aborted", "noset", a sorted list of RM ids (a
    participant set), or null (nothing accepted)."""
    if isinstance(v, NoValue):
        return None
    if isinstance(v, RMSet):
        return sorted(v.rms)
    return str(v.value)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One protocol event for trace validation (``docs/trace-format.md``)."""

    name: str
    txn_id: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ready:
    #: Requests to acceptors, by acceptor index (0..2F).
    sends: list[tuple[int, AcceptorRequest]] = field(default_factory=list)
    #: Answers to whoever asked: (the token the driver gave with the request, message).
    replies: list[tuple[Any, Any]] = field(default_factory=list)
    trace: list[TraceEvent] = field(default_factory=list)
    #: Lines for the operator's log: (txn id, text).
    log: list[tuple[str, str]] = field(default_factory=list)
    #: Transactions decided in this step by this process, with how long deciding took.
    decided: list[tuple[str, Decision, float]] = field(default_factory=list)
    #: Leader ballots started in this step (a metric).
    ballots: int = 0
    #: Other work for the driver, defined by the core that asks for it (e.g. a resource
    #: manager's ``prepare``/``commit``/``abort``, a request to a coordinator).
    effects: list[Any] = field(default_factory=list)

    def send(self, acceptor: int, msg: AcceptorRequest) -> None:
        self.sends.append((acceptor, msg))

    def reply(self, token: Any, msg: Any) -> None:
        self.replies.append((token, msg))

    def effect(self, item: Any) -> None:
        self.effects.append(item)

    def event(self, name: str, txn_id: str, **fields: Any) -> None:
        self.trace.append(TraceEvent(name, txn_id, fields))

    def take(self) -> Ready:
        """This Ready's contents, leaving it empty."""
        out = Ready(self.sends, self.replies, self.trace, self.log, self.decided, self.ballots, self.effects)
        self.sends, self.replies, self.trace, self.log, self.decided = [], [], [], [], []
        self.ballots = 0
        self.effects = []
        return out

    def __bool__(self) -> bool:
        return bool(self.sends or self.replies or self.trace or self.log or self.decided or self.effects)


class Deadlines(Generic[K]):
    """When each key next wants a tick. Stale entries are fine: a tick that finds nothing
    due for its key does nothing. :meth:`discard` drops every entry of a key whose
    transaction ended, so no timer outlives its transaction (memory stays bounded by the
    live ones: dropped entries are skipped, and compacted away once they are many)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0
        #: Entries in the heap per key (keys with none are not here).
        self._pending: dict[K, int] = {}
        #: The seq below which a key's entries were discarded.
        self._cut: dict[K, int] = {}
        self._stale = 0

    def at(self, when: float, key: K) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key))
        self._pending[key] = self._pending.get(key, 0) + 1

    def discard(self, key: K) -> None:
        """Forget every deadline of ``key`` so far."""
        n = self._pending.pop(key, 0)
        if n:
            self._cut[key] = self._seq
            self._stale += n
            if self._stale > 1024 and self._stale * 2 > len(self._heap):
                self._compact()

    def _dead(self, seq: int, key: K) -> bool:
        cut = self._cut.get(key)
        return cut is not None and seq <= cut

    def _pop(self) -> tuple[K, bool]:
        """The head's key, and whether it is live."""
        _, seq, key = heapq.heappop(self._heap)
        if self._dead(seq, key):
            self._stale -= 1
            if not self._stale:
                self._cut.clear()  # no discarded entry is left anywhere
            return key, False
        left = self._pending[key] - 1
        if left:
            self._pending[key] = left
        else:
            del self._pending[key]
        return key, True

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if not self._dead(e[1], e[2])]
        heapq.heapify(self._heap)
        self._stale = 0
        self._cut.clear()

    def due(self, now: float) -> list[K]:
        keys: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            key, live = self._pop()
            if live:
                keys.append(key)
        return keys

    def next(self) -> float | None:
        while self._heap and self._dead(self._heap[0][1], self._heap[0][2]):
            self._pop()
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap) - self._stale
