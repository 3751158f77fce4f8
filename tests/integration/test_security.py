"""Issue 9, "Nobody can forge a decision": every attack found from outside, as a regression
test against a cluster with mTLS on every hop, sent with a wrong identity (refused, no state
change) and, where the request is legitimate, with the right one (the right answer).

One TLS cluster (SQLite) serves the whole module: handshakes and process starts cost."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Outcome, Participant
from rm_sdk._channels import Channels
from rm_sdk.protocol import MAX_ROUND
from rm_sdk.wire import pb
from tests.integration.conftest import make_cluster
from tests.integration.helpers import ScriptedRM

VOTE_P = pb.Value(vote=pb.VOTE_PREPARED)
VOTE_A = pb.Value(vote=pb.VOTE_ABORTED)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = make_cluster(tmp_path_factory.mktemp("tls"), None, tls=True)
    c.start()
    try:
        yield c
    finally:
        c.stop()


class Peers:
    """Channels per identity to the module's cluster (made lazily, closed at the end)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self._by: dict[tuple[str, str], Channels] = {}

    def __call__(self, role: str, name: str) -> Channels:
        key = (role, name)
        if key not in self._by:
            self._by[key] = Channels(self.cluster.credentials(role, name))
        return self._by[key]

    def acceptor(self, role: str, name: str, i: int = 0) -> object:
        return self(role, name).acceptor(self.cluster.acceptor_addresses[i])

    async def close(self) -> None:
        for ch in self._by.values():
            await ch.close()


@pytest.fixture
async def peers(tls_cluster: LocalCluster) -> AsyncIterator[Peers]:
    p = Peers(tls_cluster)
    yield p
    await p.close()


async def _status(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


async def _states(peers: Peers, txn_id: str) -> list[bytes]:
    """What every acceptor holds of a transaction (read as an admin)."""
    out = []
    for i in range(len(peers.cluster.acceptor_addresses)):
        b = await peers.acceptor("admin", "test", i).AwaitPhase2b(  # type: ignore[attr-defined]
            pb.AwaitPhase2bRequest(txn_id=txn_id, wait_ms=0), timeout=5
        )
        b.ClearField("age_ms")
        out.append(b.SerializeToString(deterministic=True))
    return out


def _metrics(port: int | None) -> str:
    assert port
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rpartition(" ")[2])
    return total


# ------------------------------------------------------------------ no authentication


async def test_plain_text_and_foreign_certificates_get_nothing(
    tls_cluster: LocalCluster, tmp_path: Path
) -> None:
    from paxos_commit.certs import issue, make_ca

    acc = tls_cluster.acceptor_addresses[0]
    req = pb.ListUndecidedRequest(older_than_ms=0)
    plain = Channels()  # no credentials: the TLS port does not speak plain text
    code, _ = await _status(plain.acceptor(acc).ListUndecided(req, timeout=3))
    assert code == grpc.StatusCode.UNAVAILABLE
    await plain.close()
    # A certificate from another CA, naming a coordinator: the handshake fails.
    make_ca(tmp_path / "evil")
    issue(tmp_path / "evil", "coordinator", "c0")
    from rm_sdk.tls import credentials_from_dir

    evil = Channels(credentials_from_dir(tmp_path / "evil", "coordinator", "c0"))
    code, _ = await _status(evil.acceptor(acc).ListUndecided(req, timeout=3))
    assert code == grpc.StatusCode.UNAVAILABLE
    await evil.close()


async def test_a_certificate_of_our_ca_without_an_identity_is_unauthenticated(
    tls_cluster: LocalCluster, tmp_path: Path
) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    certs = tls_cluster.certs_dir
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca-key.pem").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coordinator/c0")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    creds = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )
    ch = Channels(creds)
    before = _metrics(tls_cluster.acceptors[0].metrics_port)
    code, details = await _status(
        ch.acceptor(tls_cluster.acceptor_addresses[0]).RecordOutcome(
            pb.RecordOutcomeRequest(txn_id="nocert", outcome=pb.OUTCOME_COMMITTED), timeout=5
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "(authenticated)" in details
    # The stream too: refused once, at its start.
    code, _ = await _status(
        ch.coordinator(tls_cluster.coordinator_addresses[0]).Begin(pb.BeginRequest(), timeout=5)
    )
    assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE)
    after = _metrics(tls_cluster.acceptors[0].metrics_port)
    name = "paxos_commit_authz_refusals_total"
    assert _counter(after, name, rule="authenticated") == _counter(before, name, rule="authenticated") + 1
    await ch.close()


def test_metrics_bind_the_host_of_listen_and_say_whether_tls_is_on(tls_cluster: LocalCluster) -> None:
    for p in [*tls_cluster.acceptors, *tls_cluster.coordinators]:
        port = p.metrics_port
        assert port
        listening = {
            line.split()[1]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[3] == "0A"  # LISTEN
        }
        assert f"0100007F:{port:04X}" in listening, p.name  # 127.0.0.1, as --listen says
        assert f"00000000:{port:04X}" not in listening, p.name  # not every interface
        assert "paxos_commit_insecure 0.0" in _metrics(port)


# ------------------------------------------------------------------ forged decisions


async def test_a_forged_outcome_record_is_refused_and_decides_nothing(peers: Peers) -> None:
    cluster = peers.cluster
    txn = "forged-record"
    before = await _states(peers, txn)
    for role, name in (("app", "mallory"), ("rm", "bank-a"), ("acceptor", "1")):
        code, details = await _status(
            peers.acceptor(role, name).RecordOutcome(  # type: ignore[attr-defined]
                pb.RecordOutcomeRequest(txn_id=txn, outcome=pb.OUTCOME_COMMITTED), timeout=5
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert re.search(r"\((outcome-record|no-calls)\)", details), details
    assert await _states(peers, txn) == before
    # Nobody began it: unknown, whatever the wait (issue 9: wait_ms=0 answered PENDING).
    co = peers("app", "shop").coordinator(cluster.coordinator_addresses[1])
    for wait in (0, 200):
        code, _ = await _status(co.GetOutcome(pb.GetOutcomeRequest(txn_id=txn, wait_ms=wait), timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND, wait


async def test_an_aborted_vote_stays_aborted_whatever_an_rm_or_app_records(peers: Peers) -> None:
    """Begin, Join, the RM's aborted vote, a forged record, then Commit: ABORTED."""
    cluster = peers.cluster
    coords = cluster.coordinator_addresses
    rm = ScriptedRM("victim")
    from rm_sdk import Vote

    rm.vote = Vote.ABORTED
    p = Participant(rm, coords, credentials=cluster.credentials("rm", "victim"))
    async with Client(coords, credentials=cluster.credentials("app", "shop")) as client:
        txn = await client.begin()
        await p.join(txn.context)
        code, _ = await _status(
            peers.acceptor("rm", "victim").RecordOutcome(  # type: ignore[attr-defined]
                pb.RecordOutcomeRequest(txn_id=txn.txn_id, outcome=pb.OUTCOME_COMMITTED), timeout=5
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        from rm_sdk import TransactionAborted

        with pytest.raises(TransactionAborted):
            await txn.commit()
    await p.close()


async def test_a_foreign_registrar_value_is_refused_and_the_votes_decide(peers: Peers) -> None:
    """After Begin and Join, an empty set sent as the registrar's ballot-0 2a made Commit
    return COMMITTED without the joined RM's vote. Now the RM identity is refused, and the
    commit waits for (and gets) the RM's own vote."""
    cluster = peers.cluster
    coords = cluster.coordinator_addresses
    rm = ScriptedRM("member")
    p = Participant(rm, coords, credentials=cluster.credentials("rm", "member"))
    async with Client(coords, credentials=cluster.credentials("app", "shop")) as client:
        txn = await client.begin()
        await p.join(txn.context)
        forged = pb.Phase2aRequest(
            txn_id=txn.txn_id,
            ballot=pb.Ballot(round=0),
            proposals=[pb.Proposal(instance="@registrar", value=pb.Value(rm_set=pb.RMSet()))],
        )
        for i in range(3):
            for role, name in (("rm", "member"), ("app", "shop")):
                code, details = await _status(
                    peers.acceptor(role, name, i).Phase2a(forged, timeout=5)  # type: ignore[attr-defined]
                )
                assert code == grpc.StatusCode.PERMISSION_DENIED and "(registrar)" in details, details
        assert await txn.commit() is Outcome.COMMITTED
        await p.wait(txn.txn_id)
        assert rm.committed == [txn.txn_id] and rm.prepared == [txn.txn_id]
    await p.close()


async def test_leader_ballots_come_only_from_leaders(peers: Peers) -> None:
    """A leader 2a with no phase 1 (round 9) overwrote a chosen value when anyone sent it."""
    txn = "leader-2a"
    vote = pb.Phase2aRequest(
        txn_id=txn, ballot=pb.Ballot(round=0), proposals=[pb.Proposal(instance="rm-a", value=VOTE_P)]
    )
    # The RM's own vote: its right identity is admitted.
    for i in range(3):
        await peers.acceptor("rm", "rm-a", i).Phase2a(vote, timeout=5)  # type: ignore[attr-defined]
    # A wrong identity voting for it is refused.
    code, details = await _status(peers.acceptor("rm", "rm-b").Phase2a(vote, timeout=5))  # type: ignore[attr-defined]
    assert code == grpc.StatusCode.PERMISSION_DENIED and "(own-vote)" in details
    before = await _states(peers, txn)
    overwrite = pb.Phase2aRequest(
        txn_id=txn,
        ballot=pb.Ballot(round=9, leader="mallory.0123456789ab"),
        proposals=[pb.Proposal(instance="rm-a", value=VOTE_A)],
    )
    for role, name in (("app", "mallory"), ("rm", "rm-b"), ("rm", "rm-a")):
        code, details = await _status(peers.acceptor(role, name).Phase2a(overwrite, timeout=5))  # type: ignore[attr-defined]
        assert code == grpc.StatusCode.PERMISSION_DENIED, (role, details)
        assert re.search(r"\((leader-ballot|rm-leader-id)\)", details), details
    one_a = pb.Phase1aRequest(txn_id=txn, ballot=pb.Ballot(round=9, leader="mallory.1"), instances=["rm-a"])
    code, _ = await _status(peers.acceptor("app", "mallory").Phase1a(one_a, timeout=5))  # type: ignore[attr-defined]
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert await _states(peers, txn) == before
    # A coordinator (the right identity) may lead: its 1a is promised.
    r = await peers.acceptor("coordinator", "coordinator-0").Phase1a(one_a, timeout=5)  # type: ignore[attr-defined]
    assert r.states[0].mbal.round == 9


async def test_an_rm_recovers_only_transactions_in_which_it_voted(peers: Peers) -> None:
    txn = "rm-recovery"
    ballot = pb.Ballot(round=1, leader="rm-rm-c-0123abcd")
    one_a = pb.Phase1aRequest(txn_id=txn, ballot=ballot, instances=["rm-c", "@registrar"])
    code, details = await _status(peers.acceptor("rm", "rm-c").Phase1a(one_a, timeout=5))  # type: ignore[attr-defined]
    assert code == grpc.StatusCode.PERMISSION_DENIED and "(rm-voted)" in details
    assert all(not pb.Phase2bBundle.FromString(b).states for b in await _states(peers, txn))
    vote = pb.Phase2aRequest(
        txn_id=txn, ballot=pb.Ballot(round=0), proposals=[pb.Proposal(instance="rm-c", value=VOTE_P)]
    )
    await peers.acceptor("rm", "rm-c").Phase2a(vote, timeout=5)  # type: ignore[attr-defined]
    r = await peers.acceptor("rm", "rm-c").Phase1a(one_a, timeout=5)  # type: ignore[attr-defined]
    assert all(s.mbal.round == 1 for s in r.states)


async def test_a_promise_at_the_largest_round_cannot_wedge_a_transaction(peers: Peers) -> None:
    """Phase1a at round 2^62 (one request per acceptor, here from a coordinator
    identity, which may lead) was promised, and nothing could overtake it."""
    cluster = peers.cluster
    coords = cluster.coordinator_addresses
    rm = ScriptedRM("wedged")
    p = Participant(rm, coords, credentials=cluster.credentials("rm", "wedged"))
    async with Client(coords, credentials=cluster.credentials("app", "shop")) as client:
        txn = await client.begin()
        await p.join(txn.context)
        for i in range(3):
            for rnd in (2**62, MAX_ROUND + 1):
                code, details = await _status(
                    peers.acceptor("coordinator", "coordinator-1", i).Phase1a(  # type: ignore[attr-defined]
                        pb.Phase1aRequest(
                            txn_id=txn.txn_id,
                            ballot=pb.Ballot(round=rnd, leader="x.1"),
                            instances=["wedged", "@registrar"],
                        ),
                        timeout=5,
                    )
                )
                assert code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT), (
                    details
                )
        assert await txn.commit() is Outcome.COMMITTED
    await p.close()


# ------------------------------------------------------------------ wrong codes


async def test_identities_act_only_as_themselves_at_the_coordinator(peers: Peers) -> None:
    cluster = peers.cluster
    owner = cluster.coordinator_addresses[0]
    app = peers("app", "shop").coordinator(owner)
    begun = await app.Begin(pb.BeginRequest(), timeout=5)
    txn = begun.txn_id
    for role, name, call in [
        ("rm", "bank-a", lambda co: co.Begin(pb.BeginRequest(), timeout=5)),
        ("rm", "bank-a", lambda co: co.Commit(pb.CommitRequest(txn_id=txn), timeout=5)),
        ("app", "shop", lambda co: co.Join(pb.JoinRequest(txn_id=txn, rm_id="bank-a"), timeout=5)),
        ("rm", "bank-b", lambda co: co.Join(pb.JoinRequest(txn_id=txn, rm_id="bank-a"), timeout=5)),
        ("rm", "bank-b", lambda co: co.Abort(pb.AbortRequest(txn_id=txn, rm_id="bank-a"), timeout=5)),
        ("acceptor", "0", lambda co: co.GetOutcome(pb.GetOutcomeRequest(txn_id=txn), timeout=5)),
    ]:
        code, details = await _status(call(peers(role, name).coordinator(owner)))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (role, details)
    # The same over unary calls (not the SDK's stream): the same policy.
    stub = peers("rm", "bank-b").acceptor(owner)  # any stub on the channel
    del stub
    from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc

    unary = pb_grpc.CoordinatorStub(peers("rm", "bank-b").channel(owner))
    code, details = await _status(unary.Join(pb.JoinRequest(txn_id=txn, rm_id="bank-a"), timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "(own-rm)" in details
    # Right identity: joins. A well-formed AwaitPrepare for an RM that never joined is
    # FAILED_PRECONDITION (it was INVALID_ARGUMENT).
    await peers("rm", "bank-a").coordinator(owner).Join(pb.JoinRequest(txn_id=txn, rm_id="bank-a"), timeout=5)
    code, details = await _status(
        peers("rm", "stranger")
        .coordinator(owner)
        .AwaitPrepare(pb.AwaitPrepareRequest(txn_id=txn, rm_id="stranger", wait_ms=10), timeout=5)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "has not joined" in details
    await app.Abort(pb.AbortRequest(txn_id=txn), timeout=10)


async def test_undecodable_bytes_are_invalid_argument_counted_and_alone_in_a_batch(
    peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = peers.cluster
    acc_addr = cluster.acceptor_addresses[2]
    ch = peers("coordinator", "coordinator-0").channel(acc_addr)
    bad = bytes.fromhex("0a02fffe")  # field 1 (txn_id), invalid UTF-8
    before = _metrics(cluster.acceptors[2].metrics_port)
    for method in ("Phase1a", "Phase2a", "AwaitPhase2b", "RecordOutcome", "ListUndecided"):
        call = ch.unary_unary(f"/paxoscommit.v1.Acceptor/{method}")
        code, details = await _status(call(bad if method != "ListUndecided" else b"\x08\xff", timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, details)
    after = _metrics(cluster.acceptors[2].metrics_port)
    name = "paxos_commit_undecodable_requests_total"
    assert _counter(after, name) - _counter(before, name) >= 4
    assert _counter(after, "paxos_commit_grpc_requests_total", code="INVALID_ARGUMENT") > _counter(
        before, "paxos_commit_grpc_requests_total", code="INVALID_ARGUMENT"
    )
    # In a batch: the bad request (seq 7) is refused alone, the good one (seq 8) answered.
    good = pb.AcceptorRequest(seq=8, await_phase2b=pb.AwaitPhase2bRequest(txn_id="t-batch", wait_ms=0))
    bad_req = bytes.fromhex("0807") + bytes.fromhex("1204") + bad  # seq 7, phase1a{txn_id: ff fe}
    good_bytes = good.SerializeToString()

    def entry(b: bytes) -> bytes:
        return b"\x0a" + bytes([len(b)]) + b

    batch = entry(bad_req) + entry(good_bytes)
    stream = ch.stream_stream("/paxoscommit.v1.Acceptor/Stream")(timeout=10)
    await stream.write(batch)
    replies: dict[int, pb.AcceptorReply] = {}
    while len(replies) < 2:
        raw = await stream.read()
        assert raw is not grpc.aio.EOF
        for r in pb.AcceptorReplyBatch.FromString(raw).replies:
            replies[r.seq] = r
    assert replies[7].refused.code == "INVALID_ARGUMENT" and "undecodable" in replies[7].refused.detail
    assert replies[8].WhichOneof("msg") == "bundle"
    # Bytes that are not even a batch read as an empty one (answered empty); the stream
    # is still up: another request on it is answered.
    await stream.write(b"\xff\xff\xff")
    await stream.write(entry(pb.AcceptorRequest(seq=9, await_phase2b=good.await_phase2b).SerializeToString()))
    seen: list[int] = []
    while 9 not in seen:
        raw = await stream.read()
        assert raw is not grpc.aio.EOF
        seen += [r.seq for r in pb.AcceptorReplyBatch.FromString(raw).replies]
    assert seen == [9]
    stream.cancel()
    # One WARNING line each, never a traceback.
    await asyncio.sleep(0.2)
    log = (cluster.data_dir / "logs" / "acceptor-2.log").read_text()
    assert "undecodable request refused" in log
    assert "Traceback" not in log and "Exception deserializing" not in log


async def test_overflows_long_names_and_cancellations_get_the_right_codes(peers: Peers) -> None:
    cluster = peers.cluster
    acc = peers.acceptor("coordinator", "coordinator-0", 1)
    code, details = await _status(
        acc.ListUndecided(pb.ListUndecidedRequest(older_than_ms=2**64 - 1), timeout=5)  # type: ignore[attr-defined]
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "out of range" in details
    huge = "x" * 900_000
    for req in (
        pb.Phase1aRequest(txn_id="t-long", ballot=pb.Ballot(round=1, leader="c.1"), instances=[huge]),
        pb.Phase2aRequest(txn_id="t-long", ballot=pb.Ballot(round=0), proposals=[pb.Proposal(instance=huge)]),
    ):
        method = acc.Phase1a if isinstance(req, pb.Phase1aRequest) else acc.Phase2a  # type: ignore[attr-defined]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await method(req, timeout=10)
        assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
        assert len((info.value.details() or "").encode()) <= 1024
    # A cancelled call is CANCELLED in the metrics, not UNKNOWN.
    before = _metrics(cluster.acceptors[1].metrics_port)
    call = acc.AwaitPhase2b(pb.AwaitPhase2bRequest(txn_id="t-cancel", wait_ms=5000), timeout=10)  # type: ignore[attr-defined]
    await asyncio.sleep(0.3)
    call.cancel()
    await asyncio.sleep(0.5)
    after = _metrics(cluster.acceptors[1].metrics_port)
    name = "paxos_commit_grpc_requests_total"
    assert _counter(after, name, method="AwaitPhase2b", code="CANCELLED") == 1 + _counter(
        before, name, method="AwaitPhase2b", code="CANCELLED"
    )
    assert _counter(after, name, code="UNKNOWN") == 0


async def test_refusals_are_counted_by_rule(peers: Peers) -> None:
    cluster = peers.cluster
    before = _metrics(cluster.acceptors[0].metrics_port)
    await _status(
        peers.acceptor("app", "shop").ListUndecided(pb.ListUndecidedRequest(), timeout=5)  # type: ignore[attr-defined]
    )
    after = _metrics(cluster.acceptors[0].metrics_port)
    name = "paxos_commit_authz_refusals_total"
    assert _counter(after, name, rule="list-undecided", role="app") == 1 + _counter(
        before, name, rule="list-undecided", role="app"
    )


# ------------------------------------------------------------------ certificate rotation


async def test_certificates_are_reloaded_when_their_files_change(tmp_path: Path) -> None:
    """An acceptor whose certificate files are replaced (here: by ones of a new CA)
    serves the new ones on the next handshake, without a restart."""
    from acceptor.service import serve_acceptor
    from acceptor.storage import sqlite_url
    from paxos_commit.certs import TlsFiles, issue, local_certs, make_ca
    from rm_sdk.tls import credentials_from_dir

    old, new, live = tmp_path / "old", tmp_path / "new", tmp_path / "live"
    local_certs(old, 1, ["c"])
    make_ca(new)
    issue(new, "acceptor", "0")
    issue(new, "coordinator", "c")
    live.mkdir()
    files = TlsFiles.mounted(live)

    def install(src: Path) -> None:
        for name, dst in (
            ("acceptor-0.pem", files.cert),
            ("acceptor-0-key.pem", files.key),
            ("ca.pem", files.ca),
        ):
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.write_bytes((src / name).read_bytes())
            tmp.replace(dst)

    install(old)
    async with serve_acceptor(0, sqlite_url(tmp_path / "a.db"), init=True, tls=files) as handle:
        req = pb.ListUndecidedRequest()
        a = Channels(credentials_from_dir(old, "coordinator", "c"))
        await a.acceptor(handle.address).ListUndecided(req, timeout=5)
        await a.close()
        install(new)
        b = Channels(credentials_from_dir(new, "coordinator", "c"))
        await b.acceptor(handle.address).ListUndecided(req, timeout=5)
        await b.close()
        c = Channels(credentials_from_dir(old, "coordinator", "c"))
        code, _ = await _status(c.acceptor(handle.address).ListUndecided(req, timeout=3))
        assert code == grpc.StatusCode.UNAVAILABLE  # the old CA is no longer trusted
        await c.close()


async def test_a_coordinator_presents_rotated_certificates_to_the_acceptors(tmp_path: Path) -> None:
    """The client side of rotation: after the files change, a coordinator's new
    connections to the acceptors present the new certificate (here: of a new CA, which is
    all the rotated acceptor trusts)."""
    from acceptor.service import serve_acceptor
    from acceptor.storage import sqlite_url
    from coordinator.service import CoordinatorConfig, CoordinatorServicer
    from paxos_commit.certs import TlsFiles, issue, local_certs, make_ca

    old, new = tmp_path / "old", tmp_path / "new"
    local_certs(old, 1, ["c"])
    make_ca(new)
    issue(new, "acceptor", "0")
    issue(new, "coordinator", "c")
    acc_files, co_files = TlsFiles.mounted(tmp_path / "acc"), TlsFiles.mounted(tmp_path / "co")

    def install(src: Path, role: str, name: str, files: TlsFiles) -> None:
        files.cert.parent.mkdir(exist_ok=True)
        for f, dst in (
            (f"{role}-{name}.pem", files.cert),
            (f"{role}-{name}-key.pem", files.key),
            ("ca.pem", files.ca),
        ):
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.write_bytes((src / f).read_bytes())
            tmp.replace(dst)

    install(old, "acceptor", "0", acc_files)
    install(old, "coordinator", "c", co_files)
    async with serve_acceptor(0, sqlite_url(tmp_path / "a.db"), init=True, tls=acc_files) as handle:
        servicer = CoordinatorServicer(
            CoordinatorConfig(acceptors=[handle.address], name="c", recovery_interval=0, tls=co_files)
        )
        watcher = asyncio.create_task(servicer._watch_certificates(co_files, every=0.05))
        req = pb.ListUndecidedRequest()
        await servicer.acceptors.stubs[0].ListUndecided(req, timeout=5)
        before = servicer.acceptors.channels[0]
        install(new, "acceptor", "0", acc_files)
        install(new, "coordinator", "c", co_files)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if servicer.acceptors.channels[0] is not before:
                break
        else:
            raise AssertionError("the coordinator never reloaded its certificate")
        # A new channel, so a new handshake: it succeeds only with the new certificate.
        await servicer.acceptors.stubs[0].ListUndecided(req, timeout=5)
        watcher.cancel()
        await servicer.close()


async def test_an_rm_learns_through_the_acceptors_with_its_own_certificate(tmp_path: Path) -> None:
    """Its only coordinator SIGKILLed after the registrar's set and the votes are on the
    acceptors: each prepared RM learns the outcome from the acceptors itself, with its rm/
    certificate (the policy lets an RM read bundles and recover where it voted)."""
    from rm_sdk import RMState
    from rm_sdk.protocol import REGISTRAR
    from tests.integration.helpers import acceptor_states, wait_until

    cluster = make_cluster(tmp_path, None, tls=True)
    cluster.n_coordinators = 1
    cluster.start()
    try:
        coords = cluster.coordinator_addresses
        fast, slow = ScriptedRM("fast"), ScriptedRM("slow")
        slow.release.clear()
        pf = Participant(fast, coords, recovery_timeout=1.0, credentials=cluster.credentials("rm", "fast"))
        ps = Participant(slow, coords, recovery_timeout=1.0, credentials=cluster.credentials("rm", "slow"))
        admin = Channels(cluster.credentials("admin", "test"))
        async with Client(
            coords, outcome_timeout=5, credentials=cluster.credentials("app", "shop")
        ) as client:
            txn = await client.begin()
            await pf.join(txn.context)
            await ps.join(txn.context)
            commit = asyncio.create_task(txn.commit())
            await slow.preparing.wait()

            async def registrar_and_fast_on_a_majority() -> bool:
                states = [await acceptor_states(admin, a, txn.txn_id) for a in cluster.acceptor_addresses]
                return sum(REGISTRAR in s and "fast" in s for s in states) >= 2

            await wait_until(registrar_and_fast_on_a_majority, what="the registrar's set and fast's vote")
            cluster.coordinators[0].kill()
            slow.release.set()
            assert await asyncio.wait_for(pf.wait(txn.txn_id), 40) is RMState.COMMITTED
            assert await asyncio.wait_for(ps.wait(txn.txn_id), 40) is RMState.COMMITTED
            commit.cancel()
        await admin.close()
        await pf.close()
        await ps.close()
        for a in cluster.acceptors:  # nothing the RMs sent was refused
            assert _counter(_metrics(a.metrics_port), "paxos_commit_authz_refusals_total") == 0, a.name
    finally:
        cluster.stop()
