"""``paxos-commit demo``: two banks, concurrent transfers, a coordinator killed mid-commit.

Starts a local cluster (3 acceptors, 2 coordinators, separate processes) and two SQLite
ledger RMs. Transfers move money from bank A to bank B; some ask for more than the
account holds, and bank A refuses them at prepare. One transfer is marked: bank B
prepares it slowly, and while it does, the coordinator that owns the transaction is
killed with SIGKILL. The other coordinator finishes it. Every check is printed; the exit
status is non-zero if any fails.

With ``--postgres DSN`` each bank is a Postgres database of its own (created from the DSN
and dropped at the end), run by :class:`rm_sdk.postgres.PostgresRM`: a transfer's work is
an ``UPDATE`` in a two-phase transaction, prepared with ``PREPARE TRANSACTION``; an
overdraft violates a ``CHECK`` and the bank votes no.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from paxos_commit.cluster import LocalCluster
from paxos_commit.preflight import require_postgres
from rm_sdk import Client, Ledger, Outcome, RMState, TransactionAborted, Vote
from rm_sdk.client import OutcomeUnknown, TransactionContext
from rm_sdk.participant import Participant

__all__ = ["run_demo"]

ACCOUNTS = 4
OPENING = 100


@dataclass
class Transfer:
    n: int
    src: str
    dst: str
    amount: int
    txn_id: str = ""
    owner: str = ""
    #: Attempts abandoned before commit (their owner died under them): must end aborted.
    abandoned: tuple[str, ...] = ()
    outcome: str = "?"
    reason: str = ""


class SlowLedger(Ledger):
    """Bank B: prepares one chosen transaction slowly, so the demo can kill its owner."""

    slow_txn: str = ""
    preparing: asyncio.Event | None = None

    async def prepare(self, txn_id: str) -> Vote:
        if txn_id == self.slow_txn and self.preparing is not None:
            self.preparing.set()
            await asyncio.sleep(1.0)
        return await super().prepare(txn_id)

    def unfinished(self) -> list[str]:
        return self.in_doubt()


class Bank(Protocol):
    """What the demo needs of a bank: the SQLite :class:`Ledger` or :class:`PgBank`."""

    rm_id: str
    participant: Participant

    def open_account(self, name: str, balance: int) -> None: ...
    def balances(self) -> dict[str, int]: ...
    def unfinished(self) -> list[str]:
        """Transactions the bank holds prepared (none must be left at the end)."""
        ...

    async def debit(self, ctx: TransactionContext, account: str, amount: int) -> None: ...
    async def credit(self, ctx: TransactionContext, account: str, amount: int) -> None: ...
    async def close(self) -> None: ...


class SlowBank(Bank, Protocol):
    """Bank B: prepares ``slow_txn`` slowly, setting ``preparing`` first."""

    slow_txn: str
    preparing: asyncio.Event | None


def _pg_bank_class() -> Callable[..., SlowBank]:
    """The Postgres bank, defined on demand: psycopg is needed only with ``--postgres``."""
    import psycopg
    import psycopg.errors

    from rm_sdk.postgres import PostgresRM

    class PgBank(PostgresRM):
        """A bank in its own Postgres database; overdrafts fail a CHECK, so it votes no."""

        slow_txn: str = ""
        preparing: asyncio.Event | None = None

        def open_account(self, name: str, balance: int) -> None:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS accounts"
                    " (name TEXT PRIMARY KEY, balance INT NOT NULL CHECK (balance >= 0))"
                )
                conn.execute("INSERT INTO accounts VALUES (%s, %s)", (name, balance))

        def balances(self) -> dict[str, int]:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                rows = conn.execute("SELECT name, balance FROM accounts ORDER BY name").fetchall()
            return {str(n): int(b) for n, b in rows}

        def unfinished(self) -> list[str]:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
                ).fetchall()
            return [str(r[0]) for r in rows]

        async def debit(self, ctx: TransactionContext, account: str, amount: int) -> None:
            await self._change(ctx, account, -amount)

        async def credit(self, ctx: TransactionContext, account: str, amount: int) -> None:
            await self._change(ctx, account, amount)

        async def _change(self, ctx: TransactionContext, account: str, delta: int) -> None:
            # An overdraft fails the CHECK inside the work block: this bank will vote no,
            # like the SQLite ledger refusing at prepare.
            with contextlib.suppress(psycopg.errors.CheckViolation):
                async with self.work(ctx) as conn:
                    await conn.execute(
                        "UPDATE accounts SET balance = balance + %s WHERE name = %s", (delta, account)
                    )

        async def prepare(self, txn_id: str) -> Vote:
            if txn_id == self.slow_txn and self.preparing is not None:
                self.preparing.set()
                await asyncio.sleep(1.0)
            return await super().prepare(txn_id)

    return PgBank


@contextlib.contextmanager
def _pg_databases(dsn: str, concurrency: int) -> Iterator[list[str]]:
    """Two new databases on the server of ``dsn`` (their DSNs), dropped on exit."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    names = [f"paxos_commit_demo_{uuid.uuid4().hex[:8]}_{bank}" for bank in "ab"]
    require_postgres(dsn, prepared=2 * concurrency, why=f"{concurrency} transfers at a time at two banks")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    print(f"created Postgres databases {', '.join(names)}", flush=True)
    try:
        yield [make_conninfo(dsn, dbname=n) for n in names]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in names:
                # Never leave prepared transactions behind: they hold locks and block DROP.
                for (g,) in conn.execute(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)
                ).fetchall():
                    with psycopg.connect(make_conninfo(dsn, dbname=name), autocommit=True) as c:
                        c.tpc_rollback(g)
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"dropped Postgres databases {', '.join(names)}", flush=True)


async def run_demo(args: argparse.Namespace) -> int:
    if args.data_dir:
        return await _run(Path(args.data_dir), args)
    with tempfile.TemporaryDirectory(prefix="paxos-commit-demo-") as tmp:
        return await _run(Path(tmp), args)


def _log_to_file(root: Path) -> Path:
    """The libraries' INFO lines go to ``root/demo.log``; the terminal keeps WARNING and
    above, so the summary reads without interleaved logs."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "demo.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    top = logging.getLogger()
    for h in top.handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(max(h.level, logging.WARNING))
    top.addHandler(handler)
    top.setLevel(min(top.level or logging.INFO, logging.INFO))
    return path


class Progress:
    """One line that follows the transfers: rewritten in place on a terminal, printed at
    each quarter otherwise (a CI log)."""

    def __init__(self, total: int, out: TextIO = sys.stdout) -> None:
        self.total = total
        self.out = out
        self.tty = out.isatty()
        self.done = self.committed = self.aborted = self.retried = 0
        self._shown = 0

    def update(self, t: Transfer) -> None:
        self.done += 1
        self.committed += t.outcome == "committed"
        self.aborted += t.outcome == "aborted"
        self.retried += len(t.abandoned)
        line = (
            f"  progress: {self.done}/{self.total} transfers finished, {self.committed} committed, "
            f"{self.aborted} aborted, {self.retried} retried"
        )
        if self.tty:
            self.out.write("\r" + line + ("\n" if self.done == self.total else ""))
            self.out.flush()
        elif self.done * 4 // self.total > self._shown or self.done == self.total:
            self._shown = self.done * 4 // self.total
            print(line, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A line of its own, without breaking the progress line."""
        if self.tty and self.done:
            self.out.write("\n")
        print(text, file=self.out, flush=True)


async def _run(root: Path, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    log_path = _log_to_file(root)
    kept = "" if args.data_dir else " (a temporary folder: pass --data-dir to keep it)"
    print(f"library logs: {log_path}{kept}", flush=True)
    if args.attach:
        cluster = LocalCluster.attach(Path(args.attach))
        if len(cluster.coordinators) < 2:
            print("paxos-commit demo: the attached cluster needs at least 2 coordinators", file=sys.stderr)
            return 2
        print(f"using the cluster of paxos-commit up in {args.attach}", flush=True)
    else:
        cluster = LocalCluster(
            root / "cluster",
            n_acceptors=3,
            n_coordinators=2,
            vote_timeout=3.0,
            recovery_timeout=2.0,
            recovery_interval=0.5,
            tls=not getattr(args, "insecure", False),
        )
        print(
            "starting 3 acceptors and 2 coordinators (separate processes, "
            + ("mTLS on every hop)..." if cluster.tls else "INSECURE: no TLS)..."),
            flush=True,
        )
        cluster.start()
    try:
        return await _transfers(cluster, root, rng, args)
    finally:
        cluster.stop()


async def _transfers(cluster: LocalCluster, root: Path, rng: random.Random, args: argparse.Namespace) -> int:
    coords = cluster.coordinator_addresses
    for p in [*cluster.acceptors, *cluster.coordinators]:
        print(f"  {p.name:<14} {p.address}  pid {p.pid}")
    if getattr(args, "postgres", None):
        with _pg_databases(args.postgres, args.concurrency) as dsns:
            pg_bank = _pg_bank_class()
            accs = cluster.acceptor_addresses
            print("each bank is a Postgres database; a vote is a PREPARE TRANSACTION", flush=True)
            return await _with_banks(
                pg_bank(
                    dsns[0],
                    "bank-a",
                    coords,
                    acceptors=accs,
                    owner_timeout=5.0,
                    credentials=cluster.credentials("rm", "bank-a"),
                ),
                pg_bank(
                    dsns[1],
                    "bank-b",
                    coords,
                    acceptors=accs,
                    owner_timeout=5.0,
                    credentials=cluster.credentials("rm", "bank-b"),
                ),
                cluster,
                rng,
                args,
            )
    return await _with_banks(
        # Each bank is its own identity (rm/bank-a, rm/bank-b): it may vote only for itself.
        SlowLedger(
            root / "bank-a.db",
            "bank-a",
            coords,
            owner_timeout=5.0,
            credentials=cluster.credentials("rm", "bank-a"),
        ),
        SlowLedger(
            root / "bank-b.db",
            "bank-b",
            coords,
            owner_timeout=5.0,
            credentials=cluster.credentials("rm", "bank-b"),
        ),
        cluster,
        rng,
        args,
    )


async def _with_banks(
    bank_a: Bank, bank_b: SlowBank, cluster: LocalCluster, rng: random.Random, args: argparse.Namespace
) -> int:
    coords = cluster.coordinator_addresses
    preparing = bank_b.preparing = asyncio.Event()
    for i in range(ACCOUNTS):
        bank_a.open_account(f"a{i}", OPENING)
        bank_b.open_account(f"b{i}", OPENING)
    total_before = sum(bank_a.balances().values()) + sum(bank_b.balances().values())

    transfers = [
        Transfer(
            n,
            f"a{rng.randrange(ACCOUNTS)}",
            f"b{rng.randrange(ACCOUNTS)}",
            rng.choice([5, 10, 15, 20, 25, 40, 150]),
        )
        for n in range(args.transfers)
    ]
    victim = transfers[len(transfers) // 3]
    killed: list[str] = []
    client = Client(coords, outcome_timeout=60.0, credentials=cluster.credentials("app", "demo"))

    async def run_one(t: Transfer) -> None:
        txn = await client.begin()
        t.txn_id, t.owner = txn.txn_id, txn.context.coordinator
        try:
            await bank_a.debit(txn.context, t.src, t.amount)
            await bank_b.credit(txn.context, t.dst, t.amount)
        except Exception as exc:
            # Give the attempt up at once, so that a bank that joined releases what it
            # holds now, not when its coordinator is found gone (best effort: the owner
            # may be the one that died).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(txn.abort(f"transfer failed: {type(exc).__name__}"), 2.0)
            raise
        if t is victim:
            bank_b.slow_txn = txn.txn_id
            commit = asyncio.create_task(txn.commit())
            # Bank B is preparing: the registrar's 2a is out and bank A may have voted.
            await preparing.wait()
            owner = next(p for p in cluster.coordinators if p.address == t.owner)
            owner.kill()
            killed.append(owner.name)
            progress.note(
                f"  transfer {t.n}: SIGKILL {owner.name} (pid {owner.pid}) while txn {t.txn_id[:8]} commits"
            )
            await _finish(t, commit)
        else:
            await _finish(t, asyncio.create_task(txn.commit()))

    sem = asyncio.Semaphore(args.concurrency)
    progress = Progress(len(transfers))

    async def limited(t: Transfer) -> None:
        async with sem:
            try:
                for _attempt in range(3):
                    try:
                        await run_one(t)
                        return
                    except Exception as exc:
                        # Like any application: the call failed before commit (the owner died
                        # under it), so retry in a new transaction. The old one must abort.
                        if t.txn_id:
                            t.abandoned += (t.txn_id,)
                        t.txn_id, t.outcome, t.reason = "", "error", f"{type(exc).__name__}: {exc}"
            finally:
                progress.update(t)

    started = time.monotonic()
    print(f"running {len(transfers)} transfers, {args.concurrency} at a time...", flush=True)
    await asyncio.gather(*(limited(t) for t in transfers))
    for t in transfers:
        for txn_id in [t.txn_id, *t.abandoned]:
            if txn_id:
                await asyncio.wait_for(bank_a.participant.wait(txn_id), 60)
                await asyncio.wait_for(bank_b.participant.wait(txn_id), 60)
    elapsed = time.monotonic() - started

    failures = _check(transfers, victim, bank_a, bank_b, total_before, killed)
    print()
    print(_table(transfers, elapsed, bank_a, bank_b))
    print(
        f"\nsurvivor: txn {victim.txn_id} (transfer {victim.n}, {victim.amount} from {victim.src} to "
        f"{victim.dst}) was owned by {killed[0] if killed else '?'}, killed mid-commit; "
        f"the other coordinator finished it: {victim.outcome}"
    )
    await _show(cluster, victim.txn_id)
    await client.close()
    await bank_a.close()
    await bank_b.close()
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall checks passed")
    return 0


def _table(transfers: list[Transfer], elapsed: float, bank_a: Bank, bank_b: Bank) -> str:
    """The short final table."""
    committed = sum(t.outcome == "committed" for t in transfers)
    refused = sum(t.outcome == "aborted" and "voted to abort" in t.reason for t in transfers)
    aborted = sum(t.outcome == "aborted" for t in transfers)
    retried = sum(len(t.abandoned) for t in transfers)
    rows = [
        ("transfers", f"{len(transfers)} in {elapsed:.1f}s"),
        ("committed", str(committed)),
        ("aborted", f"{aborted} ({refused} refused by a bank for lack of funds)"),
        ("retried", f"{retried} attempts cut off by the coordinator kill"),
        ("bank A", " ".join(f"{k}={v}" for k, v in bank_a.balances().items())),
        ("bank B", " ".join(f"{k}={v}" for k, v in bank_b.balances().items())),
    ]
    width = max(len(k) for k, _ in rows)
    bar = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([bar, *(f"{k:<{width}}  {v}" for k, v in rows), bar])


async def _show(cluster: LocalCluster, txn_id: str) -> None:
    """What ``paxos-commit txn show`` says of the transaction whose owner was killed."""
    if not txn_id:
        return
    from paxos_commit.admin import Admin
    from paxos_commit.txn_cli import format_show

    live = [c.address for c in cluster.coordinators if c.alive()]
    print(f"\n$ paxos-commit txn show {txn_id}")
    try:
        async with Admin(cluster.acceptor_addresses, live, tls=cluster.admin_tls()) as admin:
            print(format_show(await admin.show(txn_id)))
    except Exception as exc:  # the summary must not fail for the view's sake
        print(f"  (could not read it: {exc})")


async def _finish(t: Transfer, commit: asyncio.Task[Outcome]) -> None:
    try:
        await commit
        t.outcome = "committed"
    except TransactionAborted as exc:
        t.outcome, t.reason = "aborted", exc.reason
    except OutcomeUnknown as exc:
        t.outcome, t.reason = "unknown", str(exc)


def _check(
    transfers: list[Transfer],
    victim: Transfer,
    bank_a: Bank,
    bank_b: Bank,
    total_before: int,
    killed: list[str],
) -> list[str]:
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            failures.append(what)

    print("\nchecks:")
    expected_a = {f"a{i}": OPENING for i in range(ACCOUNTS)}
    expected_b = {f"b{i}": OPENING for i in range(ACCOUNTS)}
    mismatched = []
    for t in transfers:
        sa = bank_a.participant.states.get(t.txn_id)
        sb = bank_b.participant.states.get(t.txn_id)
        want = {"committed": RMState.COMMITTED, "aborted": RMState.ABORTED}.get(t.outcome)
        # An aborted transfer whose bank never joined (its join, not waited for by the
        # work, failed with the killed owner: the bank undid the work) is applied nowhere.
        ok = (want,) if want is not RMState.ABORTED else (want, None)
        if want is None or sa not in ok or sb not in ok:
            mismatched.append(f"#{t.n} app={t.outcome} bank-a={sa} bank-b={sb} {t.reason}")
        for old in t.abandoned:
            for bank in (bank_a, bank_b):
                st = bank.participant.states.get(old)
                if st not in (None, RMState.ABORTED):
                    mismatched.append(f"#{t.n} abandoned attempt {old[:8]} is {st} at {bank.rm_id}")
        if t.outcome == "committed":
            expected_a[t.src] -= t.amount
            expected_b[t.dst] += t.amount
    check(
        not mismatched,
        "each transfer applied at both banks or at neither, as the application was told"
        + ("" if not mismatched else ": " + "; ".join(mismatched[:5])),
    )
    check(
        bank_a.balances() == expected_a and bank_b.balances() == expected_b,
        "balances equal the opening balances plus exactly the committed transfers",
    )
    total = sum(bank_a.balances().values()) + sum(bank_b.balances().values())
    check(total == total_before, f"total money unchanged ({total_before} -> {total})")
    check(min([*bank_a.balances().values(), *bank_b.balances().values()]) >= 0, "no account overdrawn")
    check(
        not bank_a.unfinished() and not bank_b.unfinished(),
        "no prepared transaction left in doubt at either bank",
    )
    refused = [t for t in transfers if t.outcome == "aborted" and "voted to abort" in t.reason]
    check(bool(refused), f"some transfers were refused by a bank ({len(refused)})")
    check(bool(killed), "the owning coordinator of a transaction was killed mid-commit")
    retried = sum(len(t.abandoned) for t in transfers)
    if retried:
        print(
            f"  [ok] {retried} attempts cut off by the kill before commit were retried; they aborted everywhere"
        )
    check(
        victim.outcome in ("committed", "aborted"),
        f"the transaction whose coordinator was killed was finished by another ({victim.outcome})",
    )
    return failures
