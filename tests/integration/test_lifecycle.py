"""Lifecycle: a SIGTERM lets in-flight commits finish; logs can be JSON with txn ids;
health and reflection answer."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Outcome, Participant, RMState
from tests.integration.helpers import ScriptedRM


async def test_sigterm_finishes_in_flight_commit_then_exits_cleanly(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path / "c",
        n_coordinators=2,
        vote_timeout=30,
        recovery_timeout=30,
        # The owner's commit line is at debug level (recovery would log no such line).
        extra_env={"PAXOS_COMMIT_LOG_FORMAT": "json", "PAXOS_COMMIT_LOG_LEVEL": "DEBUG"},
        tls=False,
    )
    with cluster:
        coords = cluster.coordinator_addresses
        fast, slow = ScriptedRM("fast"), ScriptedRM("slow")
        slow.release.clear()
        parts = [Participant(fast, coords), Participant(slow, coords)]
        async with Client(coords) as client:
            txn = await client.begin()
            for p in parts:
                await p.join(txn.context)
            commit = asyncio.create_task(txn.commit())
            await slow.preparing.wait()
            owner = next(p for p in cluster.coordinators if p.address == txn.context.coordinator)
            assert owner.popen is not None
            owner.popen.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            slow.release.set()
            # Decided by the owner during its grace period, not by recovery (30 s away).
            assert await asyncio.wait_for(commit, 10) is Outcome.COMMITTED
            assert await asyncio.wait_for(asyncio.to_thread(owner.popen.wait, 20), 25) == 0
            for p in parts:
                assert await asyncio.wait_for(p.wait(txn.txn_id), 20) is RMState.COMMITTED
                await p.close()
        lines = [json.loads(x) for x in owner.log_file.read_text().splitlines() if x.startswith("{")]
        assert any(x.get("txn_id") == txn.txn_id and "committed" in x["msg"] for x in lines), lines[-5:]


async def test_health_and_reflection_answer(cluster: LocalCluster) -> None:
    for address, service in [
        (cluster.acceptor_addresses[0], "paxoscommit.v1.Acceptor"),
        (cluster.coordinator_addresses[0], "paxoscommit.v1.Coordinator"),
    ]:
        async with grpc.aio.insecure_channel(address) as ch:
            for name in ("", service):
                r = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=name), timeout=5
                )
                assert r.status == health_pb2.HealthCheckResponse.SERVING
            stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            async for reply in stream:
                names = {s.name for s in reply.list_services_response.service}
                assert service in names and "grpc.health.v1.Health" in names
                break
