"""The network may duplicate and reorder anything: neither changes an outcome."""

from __future__ import annotations

import asyncio

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Outcome, Participant, RMState
from rm_sdk._channels import Channels
from rm_sdk.protocol import RM_BALLOT, Ballot, Vote
from rm_sdk.wire import pb, states_from_pb
from tests.integration.helpers import ScriptedRM, acceptor_states


async def test_duplicated_votes_and_commits_change_nothing(cluster: LocalCluster, channels: Channels) -> None:
    coords = cluster.coordinator_addresses
    rms = [ScriptedRM("r1"), ScriptedRM("r2")]
    parts = [Participant(r, coords) for r in rms]
    async with Client(coords) as client:
        txn = await client.begin()
        for p in parts:
            await p.join(txn.context)
            await p.join(txn.context)  # a duplicated join is a no-op
        results = await asyncio.gather(txn.commit(), txn.commit(), txn.commit())
        assert results == [Outcome.COMMITTED] * 3
        before = [await acceptor_states(channels, a, txn.txn_id) for a in cluster.acceptor_addresses]
        # Every vote delivered again, twice, to every acceptor.
        for a in cluster.acceptor_addresses:
            for rm in ("r1", "r2"):
                for _ in range(2):
                    await channels.acceptor(a).Phase2a(
                        pb.Phase2aRequest(
                            txn_id=txn.txn_id,
                            ballot=pb.Ballot(round=0),
                            proposals=[pb.Proposal(instance=rm, value=pb.Value(vote=pb.VOTE_PREPARED))],
                        ),
                        timeout=5,
                    )
        after = [await acceptor_states(channels, a, txn.txn_id) for a in cluster.acceptor_addresses]
        for b, a in zip(before, after, strict=True):
            # Unchanged; or, if every RM acknowledged and the acceptor collected the
            # transaction meanwhile, answered from its compact record: no state at all.
            assert a == {} or all(a[ins] == b[ins] for ins in b)
        for p, r in zip(parts, rms, strict=True):
            assert await p.wait(txn.txn_id) is RMState.COMMITTED
            assert r.committed == [txn.txn_id]
        assert (await client.outcome(txn.txn_id))[0] is Outcome.COMMITTED
    for p in parts:
        await p.close()


async def test_reordered_messages_are_ignored_by_ballot(cluster: LocalCluster, channels: Channels) -> None:
    """A late ballot-0 vote after a leader's 1a, and a late lower-ballot 2a after a higher
    1a, are not accepted (spec Phase2b: bal >= mbal); the reply carries the NACK."""
    acc = channels.acceptor(cluster.acceptor_addresses[1])
    hi = pb.Ballot(round=5, leader="leader-b")
    lo = pb.Ballot(round=4, leader="leader-a")
    await acc.Phase1a(pb.Phase1aRequest(txn_id="t-re", ballot=hi, instances=["rm"]), timeout=5)
    r = await acc.Phase2a(
        pb.Phase2aRequest(
            txn_id="t-re",
            ballot=pb.Ballot(round=0),
            proposals=[pb.Proposal(instance="rm", value=pb.Value(vote=pb.VOTE_PREPARED))],
        ),
        timeout=5,
    )
    st = states_from_pb(r.states)["rm"]
    assert st.mbal == Ballot(5, "leader-b") and not st.accepted
    r = await acc.Phase2a(
        pb.Phase2aRequest(
            txn_id="t-re",
            ballot=lo,
            proposals=[pb.Proposal(instance="rm", value=pb.Value(vote=pb.VOTE_ABORTED))],
        ),
        timeout=5,
    )
    assert not states_from_pb(r.states)["rm"].accepted
    # A duplicated, delayed lower 1a does not lower the promise.
    r1 = await acc.Phase1a(pb.Phase1aRequest(txn_id="t-re", ballot=lo, instances=["rm"]), timeout=5)
    assert states_from_pb(r1.states)["rm"].mbal == Ballot(5, "leader-b")
    # The owner's vote was ignored: a fresh RM vote now is still refused (NACK, not accepted).
    st = (await acceptor_states(channels, cluster.acceptor_addresses[1], "t-re"))["rm"]
    assert st.mbal > RM_BALLOT and st.val != Vote.PREPARED
