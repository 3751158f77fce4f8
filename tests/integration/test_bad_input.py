"""Bad input gets a clear gRPC status and changes no state."""

from __future__ import annotations

import grpc
import pytest

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Outcome, Participant
from rm_sdk._channels import Channels
from rm_sdk.wire import pb
from tests.integration.helpers import ScriptedRM

BAD_IDS = ["", "@registrar", "has space", "x" * 129, "dash-but-\u00e9", "-leading"]


async def _status(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


async def _snapshot(ch: Channels, cluster: LocalCluster) -> list[bytes]:
    """Everything the acceptors hold that a request could have touched."""
    out = []
    for a in cluster.acceptor_addresses:
        r = await ch.acceptor(a).ListUndecided(
            pb.ListUndecidedRequest(older_than_ms=0, limit=10_000), timeout=5
        )
        out.append(r.SerializeToString(deterministic=True))
        for txn in sorted(r.txn_ids):
            b = await ch.acceptor(a).AwaitPhase2b(pb.AwaitPhase2bRequest(txn_id=txn, wait_ms=0), timeout=5)
            b.ClearField("age_ms")
            out.append(b.SerializeToString(deterministic=True))
    return out


async def test_acceptor_rejects_bad_messages_without_state_change(
    cluster: LocalCluster, channels: Channels
) -> None:
    acc = channels.acceptor(cluster.acceptor_addresses[0])
    vote = pb.Value(vote=pb.VOTE_PREPARED)
    # Some state to protect.
    await acc.Phase2a(
        pb.Phase2aRequest(
            txn_id="t1", ballot=pb.Ballot(round=0), proposals=[pb.Proposal(instance="rm-a", value=vote)]
        ),
        timeout=5,
    )
    before = await _snapshot(channels, cluster)
    leader = pb.Ballot(round=1, leader="lead")
    cases = [
        # A leader's ballot 0 (pitfall 2: leaders never use ballot 0).
        (
            acc.Phase1a(
                pb.Phase1aRequest(txn_id="t1", ballot=pb.Ballot(round=0), instances=["rm-a"]), timeout=5
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a leader ballot",
        ),
        (
            acc.Phase1a(
                pb.Phase1aRequest(txn_id="t1", ballot=pb.Ballot(round=0, leader="x"), instances=["rm-a"]),
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "round 0",
        ),
        (
            acc.Phase1a(pb.Phase1aRequest(txn_id="t1", instances=["rm-a"]), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs a ballot",
        ),
        (
            acc.Phase1a(pb.Phase1aRequest(txn_id="t1", ballot=leader, instances=[]), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no instance",
        ),
        (
            acc.Phase1a(pb.Phase1aRequest(txn_id="t1", ballot=leader, instances=["rm-a", "rm-a"]), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "twice",
        ),
        # Wrong value kinds, empty values, unspecified votes.
        (
            acc.Phase2a(
                pb.Phase2aRequest(
                    txn_id="t1",
                    ballot=pb.Ballot(round=0),
                    proposals=[pb.Proposal(instance="rm-b", value=pb.Value(rm_set=pb.RMSet(rm_ids=["a"])))],
                ),
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "takes a vote",
        ),
        (
            acc.Phase2a(
                pb.Phase2aRequest(
                    txn_id="t1",
                    ballot=pb.Ballot(round=0),
                    proposals=[pb.Proposal(instance="@registrar", value=vote)],
                ),
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "participant set",
        ),
        (
            acc.Phase2a(
                pb.Phase2aRequest(
                    txn_id="t1",
                    ballot=pb.Ballot(round=0),
                    proposals=[pb.Proposal(instance="rm-b", value=pb.Value())],
                ),
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "value is empty",
        ),
        (
            acc.Phase2a(
                pb.Phase2aRequest(
                    txn_id="t1",
                    ballot=pb.Ballot(round=0),
                    proposals=[pb.Proposal(instance="rm-b", value=pb.Value(vote=pb.VOTE_UNSPECIFIED))],
                ),
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VOTE_PREPARED",
        ),
        # A second, different value at an accepted ballot (an RM aborting after it prepared).
        (
            acc.Phase2a(
                pb.Phase2aRequest(
                    txn_id="t1",
                    ballot=pb.Ballot(round=0),
                    proposals=[pb.Proposal(instance="rm-a", value=pb.Value(vote=pb.VOTE_ABORTED))],
                ),
                timeout=5,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "already accepted",
        ),
        (
            acc.RecordOutcome(pb.RecordOutcomeRequest(txn_id="t1", outcome=pb.OUTCOME_PENDING), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "OUTCOME_COMMITTED",
        ),
    ]
    for bad in BAD_IDS:
        cases.append(
            (
                acc.Phase1a(pb.Phase1aRequest(txn_id=bad, ballot=leader, instances=["rm-a"]), timeout=5),
                grpc.StatusCode.INVALID_ARGUMENT,
                "malformed transaction id",
            )
        )
        if bad != "@registrar":
            cases.append(
                (
                    acc.Phase2a(
                        pb.Phase2aRequest(
                            txn_id="t1",
                            ballot=pb.Ballot(round=0),
                            proposals=[pb.Proposal(instance=bad, value=vote)],
                        ),
                        timeout=5,
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "malformed instance",
                )
            )
    for call, code, words in cases:
        got, details = await _status(call)
        assert got == code, (code, details)
        assert words in details, details
    # Oversized: refused by the transport before any handler runs.
    huge = pb.Phase1aRequest(
        txn_id="t1", ballot=leader, instances=["r" + str(i) * 100 for i in range(12_000)]
    )
    assert huge.ByteSize() > 1 << 20
    got, _ = await _status(acc.Phase1a(huge, timeout=10))
    assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _snapshot(channels, cluster) == before


async def test_coordinator_rejects_bad_requests_without_state_change(
    cluster: LocalCluster, channels: Channels
) -> None:
    coords = cluster.coordinator_addresses
    co = channels.coordinator(coords[0])
    before = await _snapshot(channels, cluster)
    unknown = "0123456789abcdef"
    for call, code, words in [
        (
            co.Commit(pb.CommitRequest(txn_id=unknown), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "unknown transaction",
        ),
        (
            co.Join(pb.JoinRequest(txn_id=unknown, rm_id="rm"), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "unknown",
        ),
        (co.Abort(pb.AbortRequest(txn_id=unknown), timeout=5), grpc.StatusCode.NOT_FOUND, "unknown"),
        (
            co.AwaitPrepare(pb.AwaitPrepareRequest(txn_id=unknown, rm_id="rm"), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "unknown",
        ),
        (
            co.GetOutcome(pb.GetOutcomeRequest(txn_id=unknown, wait_ms=100), timeout=5),
            grpc.StatusCode.NOT_FOUND,
            "unknown",
        ),
        (
            co.Commit(pb.CommitRequest(txn_id="bad id"), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "malformed",
        ),
        (
            co.GetOutcome(pb.GetOutcomeRequest(txn_id="x" * 200), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "malformed",
        ),
    ]:
        got, details = await _status(call)
        assert got == code, details
        assert words in details, details
    assert await _snapshot(channels, cluster) == before

    # Join after close fails and does not change the committed participant set.
    rm = ScriptedRM("member")
    p = Participant(rm, coords)
    async with Client(coords) as client:
        txn = await client.begin()
        await p.join(txn.context)
        for bad in ["", "@registrar", "y" * 129]:
            got, details = await _status(
                channels.coordinator(txn.context.coordinator).Join(
                    pb.JoinRequest(txn_id=txn.txn_id, rm_id=bad), timeout=5
                )
            )
            assert got == grpc.StatusCode.INVALID_ARGUMENT and "malformed rm id" in details
        got, details = await _status(
            channels.coordinator(txn.context.coordinator).AwaitPrepare(
                pb.AwaitPrepareRequest(txn_id=txn.txn_id, rm_id="stranger", wait_ms=10), timeout=5
            )
        )
        # Well formed, but the state does not allow it (issue 9): FAILED_PRECONDITION.
        assert got == grpc.StatusCode.FAILED_PRECONDITION and "has not joined" in details
        assert await txn.commit() is Outcome.COMMITTED
        got, details = await _status(
            channels.coordinator(txn.context.coordinator).Join(
                pb.JoinRequest(txn_id=txn.txn_id, rm_id="late"), timeout=5
            )
        )
        assert got == grpc.StatusCode.FAILED_PRECONDITION and "registration closed" in details
        # A second commit is idempotent: same outcome, nothing new.
        assert await txn.commit() is Outcome.COMMITTED
    await p.close()


def test_an_insecure_cluster_says_so_loudly(cluster: LocalCluster) -> None:
    """--insecure (what these protocol tests run, for speed) is a WARNING at start and a
    gauge in /metrics, on every process (issue 9)."""
    import urllib.request

    for p in [*cluster.acceptors, *cluster.coordinators]:
        assert "INSECURE" in p.log_file.read_text(), p.name
        text = urllib.request.urlopen(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).read().decode()
        assert "paxos_commit_insecure 1.0" in text, p.name
