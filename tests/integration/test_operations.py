"""Operators' commands against real processes: ``txn show``, ``txn list``, ``txn resolve
--abort`` (which never turns a chosen commit into an abort), ``txn retry``, and the bad
input of their RPCs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from paxos_commit.admin import Admin, Filters, TxnNotFound
from paxos_commit.cluster import LocalCluster
from paxos_commit.console import Console
from rm_sdk import Client, Outcome, Participant, RMState, TransactionAborted
from rm_sdk._channels import Channels
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk.protocol import REGISTRAR, Vote
from rm_sdk.wire import pb
from tests.integration.helpers import ScriptedRM, acceptor_states, wait_until


@pytest.fixture
def slow_cluster(tmp_path: Path, storage_urls: list[str] | None) -> Iterator[LocalCluster]:
    """A cluster that recovers nothing on its own during a test: whatever settles a
    stuck transaction here is the operator. It collects nothing either (one collection
    pass at start, the next an hour later): the tests compare acceptor states before and
    after. Plain text, as the protocol tests run (the tools over mTLS:
    test_operators_tools_over_tls)."""
    c = LocalCluster(
        tmp_path / "cluster",
        acceptor_urls=storage_urls,
        vote_timeout=60.0,
        recovery_timeout=60.0,
        recovery_interval=0.5,
        tls=False,
        acceptor_args=["--collect-interval", "3600"],
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
async def admin(slow_cluster: LocalCluster) -> AsyncIterator[Admin]:
    async with Admin(slow_cluster.acceptor_addresses, slow_cluster.coordinator_addresses) as a:
        yield a


async def _stuck(
    cluster: LocalCluster, channels: Channels
) -> tuple[str, asyncio.Task[Outcome], Participant, ScriptedRM]:
    """A transaction in doubt: "fast" prepared, "silent" joined and never votes."""
    coords = cluster.coordinator_addresses
    rm = ScriptedRM("fast")
    p = Participant(rm, coords, recovery_timeout=120.0)
    client = Client(coords)
    txn = await client.begin()
    await p.join(txn.context)
    await channels.coordinator(txn.context.coordinator).Join(
        pb.JoinRequest(txn_id=txn.txn_id, rm_id="silent"), timeout=5
    )
    commit = asyncio.create_task(txn.commit())

    async def fast_voted() -> bool:
        states = [await acceptor_states(channels, a, txn.txn_id) for a in cluster.acceptor_addresses]
        return sum(1 for s in states if "fast" in s and s["fast"].val is Vote.PREPARED) >= 2

    await wait_until(fast_voted, what="fast's vote at a majority")
    return txn.txn_id, commit, p, rm


async def test_show_list_and_resolve_a_stuck_transaction(
    slow_cluster: LocalCluster, admin: Admin, channels: Channels
) -> None:
    txn_id, commit, p, rm = await _stuck(slow_cluster, channels)

    v = await admin.show(txn_id)
    assert v.in_doubt and v.outcome is Outcome.PENDING
    assert v.owned is not None and v.owned.phase == "deciding"
    assert v.owned.coordinator in slow_cluster.coordinator_addresses
    assert "silent" in v.owned.waiting_for  # as far as the owner has heard
    assert "{fast,silent} (chosen)" in v.registrar()
    assert "silent has not voted" in v.waits_for()
    doc = v.to_json()
    assert doc["instances"]["fast"]["0"]["val"] in ("prepared", "absent")
    assert set(doc["instances"]) == {REGISTRAR, "fast", "silent"}

    listed = await admin.list_transactions(Filters(in_doubt=True))
    assert [x.txn_id for x in listed] == [txn_id]
    assert [x.txn_id for x in await admin.list_transactions(Filters(rm_id="silent"))] == [txn_id]
    assert await admin.list_transactions(Filters(rm_id="nobody")) == []
    assert await admin.list_transactions(Filters(older_than=3600)) == []
    assert await admin.list_transactions(Filters(outcome=Outcome.COMMITTED)) == []

    # The CLI prints the same (one real process).
    out = await _cli(slow_cluster, "txn", "list", "--in-doubt", "--older-than", "0s", "--json")
    assert [d["txn_id"] for d in json.loads(out)] == [txn_id]

    r = await admin.resolve_abort(txn_id)
    assert r.outcome is Outcome.ABORTED and r.changed and r.ballots >= 1
    assert r.leader_id.startswith("admin.")
    with pytest.raises(TransactionAborted) as info:
        await commit
    assert "settled by an operator" in info.value.reason and "silent" in info.value.reason
    assert await p.wait(txn_id) is RMState.ABORTED
    assert rm.aborted == [txn_id] and rm.committed == []
    after = await admin.show(txn_id)
    assert after.outcome is Outcome.ABORTED and not after.in_doubt
    assert after.cause() == "operator" and after.operator_ballots() == [r.leader_id]
    # A second resolve finds it decided and changes nothing.
    again = await admin.resolve_abort(txn_id)
    assert again.outcome is Outcome.ABORTED and not again.changed
    await p.close()


async def test_resolve_never_aborts_a_chosen_commit(
    slow_cluster: LocalCluster, admin: Admin, channels: Channels
) -> None:
    coords = slow_cluster.coordinator_addresses
    a, b = ScriptedRM("a"), ScriptedRM("b")
    pa, pb_ = Participant(a, coords), Participant(b, coords)
    async with Client(coords) as client:
        txn = await client.begin()
        await pa.join(txn.context)
        await pb_.join(txn.context)
        assert await txn.commit() is Outcome.COMMITTED
    await pa.wait(txn.txn_id)
    await pb_.wait(txn.txn_id)
    before = [await acceptor_states(channels, x, txn.txn_id) for x in slow_cluster.acceptor_addresses]

    r = await admin.resolve_abort(txn.txn_id)
    assert r.outcome is Outcome.COMMITTED and not r.changed
    assert "nothing changed" in r.detail
    after = [await acceptor_states(channels, x, txn.txn_id) for x in slow_cluster.acceptor_addresses]
    assert after == before
    assert a.committed == [txn.txn_id] and b.committed == [txn.txn_id]

    out = await _cli(slow_cluster, "txn", "resolve", txn.txn_id, "--abort", "--json")
    assert json.loads(out)["outcome"] == "committed" and json.loads(out)["changed"] is False
    shown = await _cli(slow_cluster, "txn", "show", txn.txn_id)
    assert "COMMITTED" in shown and "@registrar" in shown
    await pa.close()
    await pb_.close()


async def test_retry_runs_recovery_now(slow_cluster: LocalCluster, admin: Admin, channels: Channels) -> None:
    txn_id, commit, p, _rm = await _stuck(slow_cluster, channels)
    # An acceptor down is named in what the transaction waits for; a majority still decides.
    await asyncio.to_thread(slow_cluster.acceptors[2].stop)
    v = await admin.show(txn_id)
    assert any(w.startswith("acceptor 2 unreachable") for w in v.waits_for()), v.waits_for()
    assert v.to_json()["instances"]["fast"]["2"] is None
    done = await admin.retry(txn_id)
    assert len(done) == 2 and any("recovery ballots started by the owner" in a for _, a in done), done
    with pytest.raises(TransactionAborted) as info:
        await commit
    assert "silent" in info.value.reason
    assert await p.wait(txn_id) is RMState.ABORTED
    v = await admin.show(txn_id)
    assert v.outcome is Outcome.ABORTED
    # The owner's cause comes from its recent outcomes (acceptors record no causes).
    assert v.cause() == "vote_timeout"
    recent = await admin.list_transactions(Filters(outcome=Outcome.ABORTED))
    assert [x.txn_id for x in recent] == [txn_id]
    assert recent[0].cause() == "vote_timeout"
    await p.close()


async def test_unknown_and_malformed(slow_cluster: LocalCluster, admin: Admin) -> None:
    with pytest.raises(TxnNotFound):
        await admin.show("never-began")
    proc = await _run("txn", "show", "never-began", *_where(slow_cluster))
    assert proc.returncode == 1 and "no acceptor or coordinator knows" in proc.stderr

    async with grpc.aio.insecure_channel(slow_cluster.acceptor_addresses[0]) as ch:
        stub = pb_grpc.AcceptorStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e1:
            await stub.InspectTransaction(pb.InspectTransactionRequest(txn_id="bad id!"), timeout=5)
        assert e1.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "transaction id" in (
            e1.value.details() or ""
        )
        with pytest.raises(grpc.aio.AioRpcError) as e2:
            await stub.ListTransactions(pb.ListTransactionsRequest(rm_id="@registrar"), timeout=5)
        assert e2.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "rm id" in (e2.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as e3:
            await stub.ListTransactions(pb.ListTransactionsRequest(outcome=42), timeout=5)  # type: ignore[arg-type]
        assert e3.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "outcome" in (e3.value.details() or "")
        r = await stub.InspectTransaction(pb.InspectTransactionRequest(txn_id="never-began"), timeout=5)
        assert not r.record.known
    async with grpc.aio.insecure_channel(slow_cluster.coordinator_addresses[0]) as ch:
        cstub = pb_grpc.CoordinatorStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e4:
            await cstub.Retry(pb.RetryRequest(txn_id=""), timeout=5)
        assert e4.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as e5:
            await cstub.ListOwned(pb.ListOwnedRequest(txn_id="x" * 200), timeout=5)
        assert e5.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = await _run("txn", "list", "--older-than", "soon", *_where(slow_cluster))
    assert bad.returncode == 2 and "not a duration" in bad.stderr

    # The console's API answers bad input with clear HTTP statuses.
    console = await asyncio.to_thread(
        Console, slow_cluster.acceptor_addresses, slow_cluster.coordinator_addresses, ("127.0.0.1", 0)
    )
    console.start()
    try:
        base = console.address
        assert await asyncio.to_thread(_http, base + "/healthz") == (200, "ok\n")
        status, body = await asyncio.to_thread(_http, base + "/api/txn/bad%20id")
        assert status == 400 and "transaction id" in json.loads(body)["error"]
        status, body = await asyncio.to_thread(_http, base + "/api/txn/never-began")
        assert status == 404 and "no acceptor or coordinator knows" in json.loads(body)["error"]
        status, body = await asyncio.to_thread(_http, base + "/api/transactions?older_than=soon")
        assert status == 400 and "not a duration" in json.loads(body)["error"]
        status, body = await asyncio.to_thread(_http, base + "/api/transactions?outcome=maybe")
        assert status == 400 and json.loads(body)["error"].startswith("outcome: 'maybe'; one of ")
        for limit, error in (
            ("abc", "limit: 'abc' is not a whole number"),
            ("0", "limit: 0; give a whole number >= 1"),
        ):
            status, body = await asyncio.to_thread(_http, base + f"/api/transactions?limit={limit}")
            assert (status, json.loads(body)["error"]) == (400, error)
        status, _ = await asyncio.to_thread(_http, base + "/api/txn/x/resolve", b"{}", "text/plain")
        assert status == 415
        status, body = await asyncio.to_thread(_http, base + "/txn/x/resolve", b"token=forged")
        assert status == 403 and "token" in body
        status, body = await asyncio.to_thread(_http, base + "/api/txn/never-began/resolve", b"{}")
        assert status == 404
        status, body = await asyncio.to_thread(_http, base + "/txn/never-began")
        assert status == 404 and "<h1>404</h1>" in body
        status, body = await asyncio.to_thread(_http, base + "/")
        assert status == 200 and "SERVING" in body
        status, body = await asyncio.to_thread(_http, base + "/metrics")
        assert status == 200 and "paxos_commit_operator_actions" in body
    finally:
        await asyncio.to_thread(console.close)


def _http(url: str, data: bytes | None = None, ctype: str = "application/json") -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _where(cluster: LocalCluster) -> list[str]:
    return [
        "--acceptors",
        ",".join(cluster.acceptor_addresses),
        "--coordinators",
        ",".join(cluster.coordinator_addresses),
        *(["--certs", str(cluster.certs_dir)] if cluster.tls else ["--insecure"]),
    ]


async def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "paxos_commit", "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _cli(cluster: LocalCluster, *args: str) -> str:
    proc = await _run(*args, *_where(cluster))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_operators_tools_over_tls(tmp_path: Path) -> None:
    """The default cluster (mTLS, certificates under its data dir): ``txn list/show/
    resolve/retry`` and the console find the cluster and its admin certificate from the
    data dir alone (``--attach``), and resolve's admin leader ballots settle a stuck
    transaction. Non-admins are refused the operators' calls, naming the rule, counted."""
    from paxos_commit.certs import ensure_cert

    c = LocalCluster(tmp_path / "cluster", vote_timeout=60.0, recovery_timeout=60.0, recovery_interval=0.5)
    assert c.tls
    with c:
        coords = c.coordinator_addresses
        rm = ScriptedRM("fast")
        p = Participant(rm, coords, recovery_timeout=120.0, credentials=c.credentials("rm", "fast"))
        client = Client(coords, credentials=c.credentials("app", "shop"))
        silent = Channels(c.credentials("rm", "silent"))
        admin_channels = Channels(c.credentials("admin", "local"))
        try:
            txn = await client.begin()
            await p.join(txn.context)
            await silent.coordinator(txn.context.coordinator).Join(
                pb.JoinRequest(txn_id=txn.txn_id, rm_id="silent"), timeout=5
            )
            commit = asyncio.create_task(txn.commit())

            async def fast_voted() -> bool:
                states = [await acceptor_states(admin_channels, a, txn.txn_id) for a in c.acceptor_addresses]
                return sum(1 for s in states if "fast" in s and s["fast"].val is Vote.PREPARED) >= 2

            await wait_until(fast_voted, what="fast's vote at a majority")
            attach = ["--attach", str(c.data_dir)]

            listed = await _run("txn", "list", "--in-doubt", "--json", *attach)
            assert listed.returncode == 0, listed.stderr
            assert [d["txn_id"] for d in json.loads(listed.stdout)] == [txn.txn_id]
            shown = await _run("txn", "show", txn.txn_id, *attach)
            assert shown.returncode == 0 and "PENDING (in doubt)" in shown.stdout, shown.stderr

            # A resource manager's certificate may not resolve: refused before any ballot.
            rm_files = ensure_cert(c.certs_dir, "rm", "fast")
            as_rm = [
                "--tls-cert",
                str(rm_files.cert),
                "--tls-key",
                str(rm_files.key),
                "--tls-ca",
                str(rm_files.ca),
            ]
            refused = await _run("txn", "resolve", txn.txn_id, "--abort", *as_rm, *attach)
            assert refused.returncode == 2 and "operator-resolve" in refused.stderr, refused.stderr
            # Nor read or retry at the services themselves (PERMISSION_DENIED, the rule named).
            app = Channels(c.credentials("app", "shop"))
            try:
                with pytest.raises(grpc.aio.AioRpcError) as e1:
                    await pb_grpc.AcceptorStub(app.channel(c.acceptor_addresses[0])).InspectTransaction(
                        pb.InspectTransactionRequest(txn_id=txn.txn_id), timeout=5
                    )
                assert e1.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "operator-inspect" in (e1.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as e2:
                    await pb_grpc.CoordinatorStub(app.channel(coords[0])).Retry(
                        pb.RetryRequest(txn_id=txn.txn_id), timeout=5
                    )
                assert e2.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "operator-retry" in (e2.value.details() or "")
            finally:
                await app.close()
            page = await asyncio.to_thread(_http, f"http://127.0.0.1:{c.acceptors[0].metrics_port}/metrics")
            assert 'paxos_commit_authz_refusals_total{role="app",rule="operator-inspect"} 1.0' in page[1] or (
                'paxos_commit_authz_refusals_total{rule="operator-inspect",role="app"} 1.0' in page[1]
            ), page[1]

            # The console, as the cluster's admin.
            console = await asyncio.to_thread(
                Console, c.acceptor_addresses, coords, ("127.0.0.1", 0), tls=c.admin_tls()
            )
            console.start()
            try:
                status, body = await asyncio.to_thread(_http, console.address + "/api/overview")
                assert status == 200, body
                assert all(h["status"] == "SERVING" for h in json.loads(body)["health"]), body
                status, body = await asyncio.to_thread(_http, console.address + f"/api/txn/{txn.txn_id}")
                assert status == 200 and json.loads(body)["in_doubt"], body
            finally:
                await asyncio.to_thread(console.close)

            # resolve: the admin leader's ballots, accepted by the acceptors over mTLS.
            resolved = await _run("txn", "resolve", txn.txn_id, "--abort", "--json", *attach)
            assert resolved.returncode == 0, resolved.stderr
            doc = json.loads(resolved.stdout)
            assert doc["outcome"] == "aborted" and doc["changed"] and doc["leader_id"].startswith("admin.")
            with pytest.raises(TransactionAborted):
                await commit
            assert await p.wait(txn.txn_id) is RMState.ABORTED
            retried = await _run("txn", "retry", txn.txn_id, *attach)
            assert retried.returncode == 0, retried.stderr
        finally:
            await client.close()
            await p.close()
            await silent.close()
            await admin_channels.close()
