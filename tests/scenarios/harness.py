"""Golden scenarios (etcd-io/raft's ``testdata/`` style): a small script drives the real
core (``CoordinatorNode`` replicas, ``acceptor.core`` handlers) step by step, and every
step's Ready (sends, replies, trace events, log lines) and acceptor reply is printed in
a stable text form, to be diffed against the checked-in expectation.

Commands, one a line (``#`` starts a comment, echoed)::

    acceptors N                 N acceptors (2F+1), before any node
    start C                     a coordinator replica C (leader id C.<incarnation>)
    crash C                     C loses its soft state; messages to it are lost
    request C TOKEN MSG ARGS    begin T | join T RM | await T RM WAIT | commit T | abort T
                                | ask T WAIT
    vote T RM VALUE A,B,...     RM's ballot-0 2a (prepared | aborted) to those acceptors
    deliver [X]                 deliver what is queued for X (an acceptor aN or a node C),
                                or everything until nothing is queued
    drop X                      lose what is queued for X (X stays silent)
    noanswer C X                the transport gives up on C's requests queued for X
    tick T                      the clock moves to T seconds; due nodes and bundle waits tick
    scan C T                    C's recovery scan finds T undecided
"""

from __future__ import annotations

import json
from typing import Any

from acceptor import core as acceptor_core
from acceptor.core import TxnRecord
from rm_sdk.core.coordinator import CoordinatorNode
from rm_sdk.core.messages import (
    Abort,
    AskOutcome,
    AwaitPrepare,
    Begin,
    BundleRequest,
    Commit,
    Join,
    NoAnswer,
    Phase1a,
    Phase2a,
    Refused,
)
from rm_sdk.core.ready import Ready
from rm_sdk.protocol import RM_BALLOT, ConflictError, Vote
from tests.sim.simulator import show

__all__ = ["run_script"]


class Scenario:
    def __init__(self) -> None:
        self.n = 3
        self.now = 0.0
        self.records: list[dict[str, TxnRecord]] = []
        self.nodes: dict[str, CoordinatorNode] = {}
        self.incarnations: dict[str, int] = {}
        #: Queued for each acceptor: (sender, request); for each node: acceptor replies.
        self.to_acc: dict[str, list[tuple[str, Any]]] = {}
        self.to_node: dict[str, list[Any]] = {}
        self.waiting: list[tuple[int, str, BundleRequest, float]] = []
        self.out: list[str] = []

    def emit(self, text: str) -> None:
        self.out.append(text)

    # ------------------------------------------------------------ nodes

    def ready(self, name: str) -> None:
        r: Ready = self.nodes[name].take_ready()
        for ev in r.trace:
            self.emit(f"  {name} trace {ev.name} {ev.txn_id} {json.dumps(ev.fields, sort_keys=True)}")
        for txn, text in r.log:
            self.emit(f"  {name} log {txn}: {text}")
        for i, req in r.sends:
            self.emit(f"  {name} -> a{i}: {show(req)}")
            self.to_acc[f"a{i}"].append((name, req))
        for token, msg in r.replies:
            self.emit(f"  {name} -> {token}: {show(msg)}")
        for txn, d, took in r.decided:
            self.emit(f"  {name} decided {txn} {d.outcome.value} after {took:g}s")

    # ------------------------------------------------------------ acceptors

    def acceptor(self, i: int, sender: str, req: Any) -> None:
        now_ms = int(self.now * 1000)
        txn = req.txn_id
        rec = self.records[i].get(txn)
        if isinstance(req, BundleRequest):
            if req.wait <= 0 or acceptor_core.bundle_ready(rec):
                self.answer(i, sender, acceptor_core.bundle(i, rec, req, now_ms))
            else:
                self.emit(f"  a{i} holds {show(req)} until complete or {self.now + req.wait:g}s")
                self.waiting.append((i, sender, req, self.now + req.wait))
            return
        handler = {
            "Phase1a": acceptor_core.phase1a,
            "Phase2a": acceptor_core.phase2a,
            "RecordOutcome": acceptor_core.record_outcome,
        }[type(req).__name__]
        try:
            step = handler(i, rec, req, now_ms)  # type: ignore[operator]
        except ConflictError as exc:
            self.answer(i, sender, Refused(txn, i, req, str(exc)))
            return
        if step.record is not None:
            self.records[i][txn] = step.record
            self.emit(f"  a{i} persists {txn}")
        for ev in step.trace:
            self.emit(f"  a{i} trace {ev.name} {ev.txn_id} {json.dumps(ev.fields, sort_keys=True)}")
        self.answer(i, sender, step.reply)
        for w in [w for w in self.waiting if w[0] == i and w[2].txn_id == txn]:
            if acceptor_core.bundle_ready(self.records[i].get(txn)):
                self.waiting.remove(w)
                self.answer(i, w[1], acceptor_core.bundle(i, self.records[i].get(txn), w[2], now_ms))

    def answer(self, i: int, sender: str, reply: Any) -> None:
        self.emit(f"  a{i} -> {sender}: {show(reply)}")
        if sender in self.to_node:
            self.to_node[sender].append(reply)

    # ------------------------------------------------------------ commands

    def deliver(self, target: str | None) -> None:
        if target is None:
            for _ in range(100):
                busy = [x for x, q in [*self.to_acc.items(), *self.to_node.items()] if q]
                if not busy:
                    return
                for x in busy:
                    self.deliver(x)
            raise AssertionError("deliver: still busy after 100 rounds")
        if target in self.to_acc:
            queue, self.to_acc[target] = self.to_acc[target], []
            for sender, req in queue:
                self.acceptor(int(target[1:]), sender, req)
        else:
            queue, self.to_node[target] = self.to_node[target], []
            node = self.nodes.get(target)
            for reply in queue:
                if node is None:
                    continue
                node.acceptor_reply(reply, self.now)
                self.ready(target)

    def run(self, line: str) -> None:
        words = line.split()
        cmd, args = words[0], words[1:]
        if cmd == "acceptors":
            self.n = int(args[0])
            self.records = [{} for _ in range(self.n)]
            self.to_acc = {f"a{i}": [] for i in range(self.n)}
        elif cmd == "start":
            c = args[0]
            self.incarnations[c] = self.incarnations.get(c, 0) + 1
            self.nodes[c] = CoordinatorNode(f"{c}.{self.incarnations[c]}", self.n)
            self.to_node[c] = []
        elif cmd == "crash":
            del self.nodes[args[0]]
            self.to_node[args[0]] = []
        elif cmd == "request":
            c, token, kind, txn = args[:4]
            rest = args[4:]
            msg: Any = {
                "begin": lambda: Begin(txn),
                "join": lambda: Join(txn, rest[0]),
                "await": lambda: AwaitPrepare(txn, rest[0], float(rest[1])),
                "commit": lambda: Commit(txn),
                "abort": lambda: Abort(txn, " ".join(rest)),
                "ask": lambda: AskOutcome(txn, float(rest[0])),
            }[kind]()
            self.nodes[c].request(token, msg, self.now)
            self.ready(c)
        elif cmd == "vote":
            txn, rm, value, targets = args
            for a in targets.split(","):
                self.to_acc[a].append((rm, Phase2a(txn, RM_BALLOT, {rm: Vote(value)})))
        elif cmd == "deliver":
            self.deliver(args[0] if args else None)
        elif cmd == "drop":
            for _, req in self.to_acc.get(args[0], []):
                self.emit(f"  lost: {show(req)}")
            self.to_acc[args[0]] = []
        elif cmd == "noanswer":
            c, a = args
            mine = [(s, r) for s, r in self.to_acc[a] if s == c]
            self.to_acc[a] = [(s, r) for s, r in self.to_acc[a] if s != c]
            for _, req in mine:
                self.nodes[c].acceptor_reply(NoAnswer(req.txn_id, int(a[1:]), req), self.now)
                self.ready(c)
        elif cmd == "tick":
            self.now = float(args[0])
            for w in [w for w in self.waiting if w[3] <= self.now]:
                self.waiting.remove(w)
                i, sender, req, _ = w
                self.answer(
                    i,
                    sender,
                    acceptor_core.bundle(i, self.records[i].get(req.txn_id), req, int(self.now * 1000)),
                )
            for c, node in self.nodes.items():
                nd = node.next_deadline()
                if nd is not None and nd <= self.now:
                    node.tick(self.now)
                    self.ready(c)
        elif cmd == "scan":
            self.nodes[args[0]].found_undecided([args[1]], self.now)
            self.ready(args[0])
        else:
            raise ValueError(f"unknown command {cmd!r}")


def run_script(text: str) -> str:
    """Run a scenario script; its output (each command, then what it caused)."""
    sc = Scenario()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            sc.emit(line)
            continue
        sc.emit(f"> {line}")
        sc.run(line)
    return "\n".join(sc.out) + "\n"


_ = Phase1a  # re-exported for scripts' readers: the messages printed are core messages
