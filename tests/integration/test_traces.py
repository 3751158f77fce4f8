"""Trace validation of real multi-process runs: every process logs its protocol events,
and TLC checks that each transaction's merged trace is a behaviour of the spec; a
corrupted trace is rejected at the corrupted event."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from paxos_commit.cluster import LocalCluster
from paxos_commit.tracecheck import check_dir, check_transaction, events_of, find_jar, load_events
from rm_sdk import Client, Outcome, Participant, RMState, TransactionAborted, Vote, tracing
from tests.integration.helpers import ScriptedRM, acceptor_states, wait_until


@pytest.fixture
def jar() -> Path:
    try:
        return find_jar()
    except FileNotFoundError as exc:
        if shutil.which("java") is None:
            pytest.skip(f"no java: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "traces"
    folder.mkdir()
    tracing.enable(folder / "app.ndjson", "app")
    try:
        yield folder
    finally:
        tracing.disable()


async def test_traces_of_a_run_with_kills_and_restarts_are_behaviours_of_the_spec(
    traced: Path, tmp_path: Path, jar: Path
) -> None:
    from rm_sdk._channels import Channels

    cluster = LocalCluster(
        tmp_path / "c",
        trace_dir=traced,
        vote_timeout=3.0,
        recovery_timeout=1.5,
        recovery_interval=0.3,
        tls=False,
    )
    with cluster:
        coords = cluster.coordinator_addresses
        channels = Channels()
        outcomes: dict[str, Outcome] = {}

        async def run(
            rms: list[ScriptedRM],
            kill_owner: bool = False,
            last_dies: bool = False,
            restart_acceptor: bool = False,
        ) -> str:
            parts = [Participant(r, coords) for r in rms]
            async with Client(coords, outcome_timeout=30) as client:
                txn = await client.begin()
                for p in parts:
                    await p.join(txn.context)
                commit = asyncio.create_task(txn.commit())
                if restart_acceptor:
                    # SIGKILL and restart an acceptor after it took the registrar's 2a and
                    # before the last RM votes.
                    await rms[-1].preparing.wait()
                    victim = cluster.acceptors[1]

                    async def has_set() -> bool:
                        if "@registrar" not in await acceptor_states(channels, victim.address, txn.txn_id):
                            return False
                        # ...and its trace line is written: the acceptor logs a step after the
                        # step is durable, so a kill in between leaves a stored 2a that its
                        # trace never shows (then the restart sorts before this transaction).
                        log = traced / f"{victim.name}.ndjson"
                        return f'"txn": "{txn.txn_id}"' in log.read_text()

                    await wait_until(has_set)
                    victim.kill()
                    # Off the event loop: the RMs of this process must go on voting meanwhile.
                    await asyncio.to_thread(cluster.restart, victim)
                    rms[-1].release.set()
                if kill_owner:
                    await rms[-1].preparing.wait()

                    async def first_vote_in() -> bool:
                        # All at once, a slow one ignored: an acceptor restarted earlier may
                        # still be reconnecting, and the owner must die before its vote timeout.
                        states = await asyncio.gather(
                            *(
                                asyncio.wait_for(acceptor_states(channels, a, txn.txn_id), 0.5)
                                for a in cluster.acceptor_addresses
                            ),
                            return_exceptions=True,
                        )
                        return sum(isinstance(s, dict) and rms[0].rm_id in s for s in states) >= 2

                    await wait_until(first_vote_in)
                    owner = next(c for c in cluster.coordinators if c.address == txn.context.coordinator)
                    owner.kill()
                    if not last_dies:
                        rms[-1].release.set()
                try:
                    outcomes[txn.txn_id] = await commit
                except TransactionAborted:
                    outcomes[txn.txn_id] = Outcome.ABORTED
                if kill_owner:
                    await asyncio.to_thread(cluster.restart, owner)  # a new incarnation, same address
                for p in parts[:-1] if last_dies else parts:
                    assert await asyncio.wait_for(p.wait(txn.txn_id), 30) in (
                        RMState.COMMITTED,
                        RMState.ABORTED,
                    )
                for p in parts:
                    await p.close()
                return txn.txn_id

        committed = await run([ScriptedRM("a"), ScriptedRM("b")])
        refused = await run([ScriptedRM("a"), ScriptedRM("b", vote=Vote.ABORTED)])
        late = ScriptedRM("c")
        late.release.clear()
        after_restart = await run([ScriptedRM("a"), ScriptedRM("b"), late], restart_acceptor=True)
        slow = ScriptedRM("slow")
        slow.release.clear()
        recovered = await run([ScriptedRM("fast"), slow], kill_owner=True)
        # The owner dies and so does the last RM before voting: recovery ballots abort it.
        dead = ScriptedRM("dead")
        dead.release.clear()
        by_ballot = await run([ScriptedRM("fast"), dead], kill_owner=True, last_dies=True)
        await channels.close()
    assert outcomes == {
        committed: Outcome.COMMITTED,
        refused: Outcome.ABORTED,
        after_restart: Outcome.COMMITTED,
        recovered: Outcome.COMMITTED,
        by_ballot: Outcome.ABORTED,
    }
    events = load_events(traced)
    assert any(e["event"] == "Phase1a" for e in events_of(events, by_ballot)), "recovery ran ballots"
    assert any(e["event"] == "AcceptorRestart" for e in events_of(events, after_restart))
    results = check_dir(traced, jar, n_acceptors=3)
    report = "\n".join(r.describe(ev) for r, ev in results)
    assert {r.txn for r, _ in results} == set(outcomes), report
    assert all(r.accepted for r, _ in results), report


async def test_a_corrupted_trace_is_rejected_at_the_corrupted_event(
    traced: Path, tmp_path: Path, jar: Path
) -> None:
    with LocalCluster(tmp_path / "c", trace_dir=traced, tls=False) as cluster:
        coords = cluster.coordinator_addresses
        parts = [Participant(ScriptedRM("a"), coords), Participant(ScriptedRM("b"), coords)]
        async with Client(coords) as client:
            txn = await client.begin()
            for p in parts:
                await p.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED
        for p in parts:
            await p.wait(txn.txn_id)
            await p.close()
    events = events_of(load_events(traced), txn.txn_id)
    good, rendered = check_transaction(events, 3, jar, txn.txn_id)
    assert good.accepted, good.describe(rendered)

    # An acceptor that claims to have accepted "b"'s vote as aborted: nobody proposed that.
    bad = json.loads(json.dumps(events))
    i = next(k for k, e in enumerate(bad) if e["event"] == "Phase2b" and e["accepted"][0]["ins"] == "b")
    bad[i]["accepted"][0]["val"] = "aborted"
    result, rendered = check_transaction(bad, 3, jar, txn.txn_id)
    assert not result.accepted
    assert result.first_unmatched is not None and rendered[result.first_unmatched] == bad[i], result.describe(
        rendered
    )

    # An RM that commits before anyone decided.
    bad = json.loads(json.dumps(events))
    j = next(k for k, e in enumerate(bad) if e["event"] == "RMRcvCommitMsg")
    decide = next(k for k, e in enumerate(bad) if e["event"] == "Decide")
    moved = bad.pop(j)
    bad.insert(decide, moved)
    result, rendered = check_transaction(bad, 3, jar, txn.txn_id)
    assert not result.accepted and rendered[result.first_unmatched or 0] == moved, result.describe(rendered)
