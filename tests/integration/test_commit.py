"""End to end through real processes: commit, refusal, timeout, a coordinator killed
mid-commit, an acceptor killed and restarted."""

from __future__ import annotations

from pathlib import Path

import pytest

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Ledger, Outcome, Participant, RMState, TransactionAborted, Vote
from rm_sdk._channels import Channels
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, RMSet
from rm_sdk.wire import pb
from tests.integration.helpers import ScriptedRM, acceptor_states, wait_until


async def test_commit_applies_at_both_ledgers(cluster: LocalCluster, tmp_path: Path) -> None:
    coords = cluster.coordinator_addresses
    a = Ledger(tmp_path / "a.db", "bank-a", coords)
    b = Ledger(tmp_path / "b.db", "bank-b", coords)
    a.open_account("alice", 100)
    b.open_account("bob", 0)
    async with Client(coords) as client:
        txn = await client.begin()
        await a.debit(txn.context, "alice", 30)
        await b.credit(txn.context, "bob", 30)
        assert await txn.commit() is Outcome.COMMITTED
        assert await a.participant.wait(txn.txn_id) is RMState.COMMITTED
        assert await b.participant.wait(txn.txn_id) is RMState.COMMITTED
        # Any replica, not only the owner, answers the outcome afterwards.
        for c in coords:
            assert (await Client([c]).outcome(txn.txn_id, wait=2))[0] is Outcome.COMMITTED
    assert a.balances() == {"alice": 70}
    assert b.balances() == {"bob": 30}
    assert a.in_doubt() == [] and b.in_doubt() == []
    await a.close()
    await b.close()


async def test_abort_when_one_rm_refuses(cluster: LocalCluster, tmp_path: Path) -> None:
    coords = cluster.coordinator_addresses
    a = Ledger(tmp_path / "a.db", "bank-a", coords)
    b = Ledger(tmp_path / "b.db", "bank-b", coords)
    a.open_account("alice", 10)
    b.open_account("bob", 0)
    async with Client(coords) as client:
        txn = await client.begin()
        await a.debit(txn.context, "alice", 50)  # more than alice has: bank-a votes abort
        await b.credit(txn.context, "bob", 50)
        with pytest.raises(TransactionAborted) as info:
            await txn.commit()
        assert "bank-a" in info.value.reason
        assert await a.participant.wait(txn.txn_id) is RMState.ABORTED
        assert await b.participant.wait(txn.txn_id) is RMState.ABORTED
    assert a.balances() == {"alice": 10}
    assert b.balances() == {"bob": 0}
    assert a.in_doubt() == [] and b.in_doubt() == []
    await a.close()
    await b.close()


async def test_rm_that_never_votes_is_aborted_after_the_timeout(
    cluster: LocalCluster, channels: Channels
) -> None:
    coords = cluster.coordinator_addresses
    rm = ScriptedRM("fast")
    p = Participant(rm, coords)
    async with Client(coords) as client:
        txn = await client.begin()
        await p.join(txn.context)
        # "silent" joins through the raw API and then never votes.
        await channels.coordinator(txn.context.coordinator).Join(
            pb.JoinRequest(txn_id=txn.txn_id, rm_id="silent"), timeout=5
        )
        with pytest.raises(TransactionAborted) as info:
            await txn.commit()
        assert "silent" in info.value.reason and "did not vote" in info.value.reason
        assert await p.wait(txn.txn_id) is RMState.ABORTED
        assert rm.aborted == [txn.txn_id] and rm.committed == []
    await p.close()


@pytest.mark.parametrize("last_vote", [Vote.PREPARED, Vote.ABORTED])
async def test_owner_killed_after_registrar_and_some_votes(
    cluster: LocalCluster, channels: Channels, last_vote: Vote
) -> None:
    """SIGKILL the owner once the registrar's 2a and one RM's 2a are on the acceptors;
    the other replica finishes the transaction and every RM applies the same outcome."""
    coords = cluster.coordinator_addresses
    fast, slow = ScriptedRM("fast"), ScriptedRM("slow", vote=last_vote)
    slow.release.clear()
    pf, ps = Participant(fast, coords), Participant(slow, coords)
    async with Client(coords, outcome_timeout=30) as client:
        txn = await client.begin()
        await pf.join(txn.context)
        await ps.join(txn.context)
        import asyncio

        commit = asyncio.create_task(txn.commit())
        await slow.preparing.wait()

        async def votes_on_acceptors() -> bool:
            states = [await acceptor_states(channels, a, txn.txn_id) for a in cluster.acceptor_addresses]
            majority_has = [
                REGISTRAR in s
                and s[REGISTRAR].val == RMSet.of(["fast", "slow"])
                and "fast" in s
                and s["fast"].bal == RM_BALLOT
                for s in states
            ]
            return sum(majority_has) >= 2

        await wait_until(votes_on_acceptors, what="registrar's and fast's 2a on a majority")
        owner = next(p for p in cluster.coordinators if p.address == txn.context.coordinator)
        owner.kill()
        slow.release.set()
        expected = Outcome.COMMITTED if last_vote is Vote.PREPARED else Outcome.ABORTED
        if expected is Outcome.COMMITTED:
            assert await commit is Outcome.COMMITTED
        else:
            with pytest.raises(TransactionAborted):
                await commit
        want = RMState.COMMITTED if expected is Outcome.COMMITTED else RMState.ABORTED
        assert await asyncio.wait_for(pf.wait(txn.txn_id), 30) is want
        assert await asyncio.wait_for(ps.wait(txn.txn_id), 30) is want
        survivor = next(c for c in coords if c != txn.context.coordinator)
        assert (await Client([survivor]).outcome(txn.txn_id, wait=5))[0] is expected
    await pf.close()
    await ps.close()


async def test_owner_killed_before_any_vote_aborts_everywhere(cluster: LocalCluster) -> None:
    """Owner dies after joins, before commit: nobody prepared; everyone aborts."""
    coords = cluster.coordinator_addresses
    rm = ScriptedRM("only")
    p = Participant(rm, coords, owner_timeout=1.0)
    async with Client(coords) as client:
        txn = await client.begin()
        await p.join(txn.context)
        owner = next(x for x in cluster.coordinators if x.address == txn.context.coordinator)
        owner.kill()
        import asyncio

        assert await asyncio.wait_for(p.wait(txn.txn_id), 30) is RMState.ABORTED
        assert rm.prepared == [] and rm.aborted == [txn.txn_id]
        survivor = next(c for c in coords if c != txn.context.coordinator)
        outcome, _ = await Client([survivor]).outcome(txn.txn_id, wait=15)
        assert outcome is Outcome.ABORTED
    await p.close()


async def test_acceptor_killed_commits_go_on_and_promises_survive_restart(
    cluster: LocalCluster, channels: Channels
) -> None:
    coords = cluster.coordinator_addresses
    victim = cluster.acceptors[2]
    # A leader's promise and acceptance at acceptor 2, before it is killed.
    stub = channels.acceptor(victim.address)
    high = pb.Ballot(round=7, leader="test-leader")
    await stub.Phase1a(pb.Phase1aRequest(txn_id="t-durable", ballot=high, instances=["rm-x"]), timeout=5)
    await stub.Phase2a(
        pb.Phase2aRequest(
            txn_id="t-durable",
            ballot=high,
            proposals=[pb.Proposal(instance="rm-x", value=pb.Value(vote=pb.VOTE_ABORTED))],
        ),
        timeout=5,
    )
    victim.kill()

    rms = [ScriptedRM("r1"), ScriptedRM("r2")]
    parts = [Participant(r, coords) for r in rms]
    async with Client(coords) as client:
        for _ in range(3):
            txn = await client.begin()
            for p in parts:
                await p.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED

    cluster.restart(victim)
    # A lower-ballot leader is refused with the promise the acceptor made before the kill.
    low = pb.Ballot(round=3, leader="other-leader")
    r = await channels.acceptor(victim.address).Phase1a(
        pb.Phase1aRequest(txn_id="t-durable", ballot=low, instances=["rm-x"]),
        timeout=5,
        wait_for_ready=True,  # this channel saw the kill: let it reconnect, not fail fast
    )
    (st,) = r.states
    # The restarted acceptor lists t-durable as undecided, so a coordinator's recovery scan
    # may have run a ballot on it since: always above round 7, which only this acceptor's
    # surviving promise could have told it (a leader that knows nothing starts at round 1).
    if st.mbal.leader == "test-leader":
        assert st.mbal.round == 7
    else:
        assert st.mbal.round > 7, st
    if st.bal.leader == "test-leader":
        assert st.bal.round == 7 and st.val.vote == pb.VOTE_ABORTED
    else:  # re-proposed by the recovery: the value it found accepted here
        assert st.bal.round > 7 and st.val.vote == pb.VOTE_ABORTED, st
    # And the restarted acceptor takes part in commits again.
    async with Client(coords) as client:
        txn = await client.begin()
        for p in parts:
            await p.join(txn.context)
        assert await txn.commit() is Outcome.COMMITTED
    for p in parts:
        await p.close()


class _CrashBeforeOutcome(Ledger):
    """A ledger whose process 'dies' after its prepared vote left and before it applies
    the outcome: commit never returns (the test then drops the object)."""

    async def commit(self, txn_id: str) -> None:
        import asyncio

        await asyncio.Event().wait()


async def test_prepared_ledger_survives_a_crash_and_learns_the_outcome(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    import asyncio

    coords = cluster.coordinator_addresses
    a = _CrashBeforeOutcome(tmp_path / "a.db", "bank-a", coords)
    b = Ledger(tmp_path / "b.db", "bank-b", coords)
    a.open_account("alice", 100)
    b.open_account("bob", 0)
    async with Client(coords) as client:
        txn = await client.begin()
        await a.debit(txn.context, "alice", 40)
        await b.credit(txn.context, "bob", 40)
        assert await txn.commit() is Outcome.COMMITTED
    assert await b.participant.wait(txn.txn_id) is RMState.COMMITTED
    assert a.in_doubt() == [txn.txn_id] and a.balances() == {"alice": 100}
    await a.close()  # the crash: the prepared intent is all that is left

    again = Ledger(tmp_path / "a.db", "bank-a", coords)
    assert again.in_doubt() == [txn.txn_id]
    assert await again.recover() == [txn.txn_id]
    assert await asyncio.wait_for(again.participant.wait(txn.txn_id), 30) is RMState.COMMITTED
    assert again.balances() == {"alice": 60} and again.in_doubt() == []
    await again.close()
    await b.close()
