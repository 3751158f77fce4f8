"""The nemesis: a schedule of faults drawn from a seed, and the code that applies them.

A schedule is a list of :class:`Fault` entries, each applied for its ``duration`` and then
healed, with a ``gap`` before the next. The same seed and cluster shape give the same
schedule (it is printed, and ``--seed`` replays it); the times the faults really started
and ended are logged to ``faults.ndjson`` for the checker.

In a liveness run (``safety_only=False``) one fault is active at a time and impairs at most
F acceptors, so every abort it causes among acceptors alone is one the configuration
should have tolerated ("unnecessary"); a safety-only run also takes down majorities.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cluster import ChaosCluster

__all__ = ["KINDS", "Fault", "Nemesis", "make_schedule"]

KINDS = ("kill", "pause", "partition", "disk-full", "clock-jump")
SHAPES = ("isolate", "link", "one-way", "split")


@dataclass(frozen=True)
class Fault:
    i: int
    kind: str
    targets: tuple[str, ...]
    duration: float
    gap: float
    shape: str = ""  # partitions: isolate | link | one-way | split
    #: clock-jump: seconds the targets' clocks jump forward.
    jump: float = 0.0
    #: True if the configuration claims to mask it: at most F acceptors impaired, nothing else.
    tolerated: bool = False

    def describe(self) -> str:
        what = f"{self.kind}{'/' + self.shape if self.shape else ''}"
        extra = f" +{self.jump:.0f}s" if self.jump else ""
        return (
            f"#{self.i} {what} {','.join(self.targets)}{extra} for {self.duration:.1f}s, gap {self.gap:.1f}s"
        )


def make_schedule(
    seed: int,
    nodes: dict[str, str],
    f: int,
    count: int,
    *,
    kinds: tuple[str, ...] = KINDS,
    safety_only: bool = False,
    scale: float = 1.0,
) -> list[Fault]:
    """``nodes``: name -> role. ``scale`` stretches durations and gaps."""
    rng = random.Random(seed)
    by_role: dict[str, list[str]] = {}
    for name, role in sorted(nodes.items()):
        by_role.setdefault(role, []).append(name)
    acceptors = by_role.get("acceptor", [])
    servers = [n for n in sorted(nodes) if nodes[n] != "client"]
    # Kills, pauses and isolations visit the roles in turn (in a seeded order), so a short
    # schedule reaches every role; the node within the role is drawn.
    roles = sorted(by_role)
    rng.shuffle(roles)
    turns: Counter[str] = Counter()

    def next_role(kind: str, candidates: list[str]) -> str:
        turns[kind] += 1
        order = [r for r in roles if r in candidates]
        return order[turns[kind] % len(order)]

    out: list[Fault] = []
    for i in range(count):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        duration = rng.uniform(0.5, 3.0) * scale
        gap = rng.uniform(0.3, 1.5) * scale
        shape, jump = "", 0.0
        if kind in ("kill", "pause"):
            role = next_role(kind, roles)
            if role == "acceptor" and safety_only:
                targets = rng.sample(acceptors, rng.randint(1, len(acceptors)))
            else:
                targets = [rng.choice(by_role[role])]
        elif kind == "disk-full":
            k = rng.randint(1, len(acceptors)) if safety_only else rng.randint(1, f)
            targets = rng.sample(acceptors, k)
        elif kind == "clock-jump":
            targets = [rng.choice(by_role.get("coordinator", []) + by_role.get("rm", []))]
            jump = float(rng.randint(2, 12))
        else:
            shape = rng.choice(SHAPES)
            if shape == "isolate":
                targets = [rng.choice(by_role[next_role("isolate", [nodes[s] for s in servers])])]
            elif shape in ("link", "one-way"):
                targets = rng.sample(sorted(nodes), 2)
            else:
                # A minority side: at most F acceptors (any number in a safety-only run),
                # and some of the other processes.
                k = rng.randint(1, len(acceptors)) if safety_only else rng.randint(0, f)
                side = rng.sample(acceptors, k)
                others = [n for n in sorted(nodes) if nodes[n] != "acceptor"]
                side += rng.sample(others, rng.randint(0 if side else 1, max(1, len(others) // 2)))
                targets = sorted(side)
        out.append(
            Fault(
                i,
                kind,
                tuple(sorted(targets)),
                round(duration, 2),
                round(gap, 2),
                shape,
                jump,
                _tolerated(kind, shape, targets, nodes, f),
            )
        )
    return out


def _tolerated(kind: str, shape: str, targets: list[str], nodes: dict[str, str], f: int) -> bool:
    acc = [t for t in targets if nodes[t] == "acceptor"]
    if kind == "clock-jump":
        return False
    if kind == "partition" and shape in ("link", "one-way"):
        return bool(acc) and len(acc) <= f
    if kind == "partition" and shape == "split":
        return len(acc) == len(targets) and len(acc) <= f
    return len(acc) == len(targets) and 0 < len(acc) <= f


@dataclass
class Nemesis:
    cluster: ChaosCluster
    schedule: list[Fault]
    log_path: Path
    done: Callable[[], bool]
    applied: list[dict[str, object]] = field(default_factory=list)
    _clock: dict[str, float] = field(default_factory=dict)

    def run(self, max_seconds: float) -> None:
        """Apply faults in order until the workload is done, the schedule ends or time
        runs out; every fault is healed before this returns."""
        deadline = time.monotonic() + max_seconds
        with self.log_path.open("a") as log:
            for fault in self.schedule:
                if self.done() or time.monotonic() > deadline:
                    break
                start = time.time()
                self._apply(fault)
                self._sleep(fault.duration)
                self._heal(fault)
                rec = {**asdict(fault), "start": start, "end": time.time()}
                self.applied.append(rec)
                log.write(json.dumps(rec) + "\n")
                log.flush()
                self._sleep(fault.gap)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.cluster.supervise()
            time.sleep(min(0.1, left))

    def _apply(self, fault: Fault) -> None:
        c, net = self.cluster, self.cluster.network
        if fault.kind == "kill":
            for t in fault.targets:
                c.kill(t)
        elif fault.kind == "pause":
            for t in fault.targets:
                c.pause(t)
        elif fault.kind == "disk-full":
            for t in fault.targets:
                _fill(c.data_dir(t))
        elif fault.kind == "clock-jump":
            for t in fault.targets:
                self._clock[t] = self._clock.get(t, 0.0) + fault.jump
                c.clock_file(t).write_text(f"+{self._clock[t]:.0f}\n")
        elif fault.shape == "isolate":
            (t,) = fault.targets
            others = [o for o in net.nodes if o != t]
            net.cut_many([(t, o) for o in others] + [(o, t) for o in others])
        elif fault.shape == "link":
            a, b = fault.targets
            net.cut_many([(a, b), (b, a)])
        elif fault.shape == "one-way":
            a, b = fault.targets
            net.cut(a, b)
        else:
            side = set(fault.targets)
            rest = [b for b in net.nodes if b not in side]
            net.cut_many([p for a in side for b in rest for p in ((a, b), (b, a))])

    def _heal(self, fault: Fault) -> None:
        c = self.cluster
        if fault.kind == "kill":
            for t in fault.targets:
                c.revive(t)
            # The fault lasts until the restarted processes serve again.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(c.serving(t) for t in fault.targets):
                c.supervise()
                time.sleep(0.05)
        elif fault.kind == "pause":
            for t in fault.targets:
                c.resume(t)
        elif fault.kind == "disk-full":
            for t in fault.targets:
                (c.data_dir(t) / "filler").unlink(missing_ok=True)
        elif fault.kind == "partition":
            c.network.heal()

    def heal_all(self) -> None:
        c = self.cluster
        c.network.heal()
        for name, node in c.nodes.items():
            if node.paused:
                c.resume(name)
            if node.down:
                c.revive(name)
            if node.role == "acceptor":
                (c.data_dir(name) / "filler").unlink(missing_ok=True)


def _fill(d: Path) -> None:
    """Fill the file system holding ``d`` (a small tmpfs) to the last byte."""
    fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
