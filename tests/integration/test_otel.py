"""OpenTelemetry across real processes: one committed transaction makes one trace, with
spans from the application and its resource managers (this process, the SDK's in-memory
exporter), the owning coordinator and the acceptors (separate processes, each writing
its finished spans to a file through ``PAXOS_COMMIT_OTEL_SPAN_DIR``); an abort's cause is
an attribute. Off, the hooks make nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra (pip install 'paxos-commit[otel]')")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paxos_commit.chaos.rm_process import work_stub
from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Outcome, Participant, TransactionAborted, Vote, otel
from tests.integration.helpers import ScriptedRM, wait_until


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=otel.id_generator())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.use(provider)
    try:
        yield exporter
    finally:
        otel.use(None)
        provider.shutdown()


def _file_spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            doc = json.loads(line)
            doc["_file"] = f.name
            spans.append(doc)
    return spans


def _start_rm(
    tmp_path: Path, port_file: Path, coords: list[str], acceptors: list[str], folder: Path
) -> subprocess.Popen[bytes]:
    with (tmp_path / "rm-c.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable, "-m", "paxos_commit.chaos.rm_process", "--id", "bank-far",
                "--db", str(tmp_path / "rm-c.db"), "--listen", "127.0.0.1:0", "--port-file", str(port_file),
                "--coordinators", ",".join(coords), "--acceptors", ",".join(acceptors),
            ],
            env={**os.environ, "PAXOS_COMMIT_OTEL_SPAN_DIR": str(folder)},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_off_makes_nothing() -> None:
    assert otel.on is False
    assert otel.start("paxos.x", "t1") is None
    assert otel.start_root("t1") is None
    otel.end(None)


async def test_one_trace_across_processes(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    folder = tmp_path / "spans"
    cluster = LocalCluster(
        tmp_path / "cluster",
        vote_timeout=5.0,
        recovery_timeout=30.0,
        extra_env={"PAXOS_COMMIT_OTEL_SPAN_DIR": str(folder)},
        tls=False,  # spans do not depend on the transport; the chaos RM process is plain text
    )
    cluster.start()
    try:
        coords = cluster.coordinator_addresses
        a, b = ScriptedRM("bank-a"), ScriptedRM("bank-b", vote=Vote.PREPARED)
        pa, pb_ = Participant(a, coords), Participant(b, coords)
        # A third resource manager in a process of its own, tracing to the span folder.
        port_file = tmp_path / "rm-c.json"
        rm_proc = _start_rm(tmp_path, port_file, coords, cluster.acceptor_addresses, folder)
        try:
            await wait_until(port_file.exists, what="the RM process to serve")
            address = json.loads(port_file.read_text())["address"]
            async with Client(coords) as client, grpc.aio.insecure_channel(address) as ch:
                txn = await client.begin()
                await pa.join(txn.context)
                await pb_.join(txn.context)
                await work_stub(ch)(
                    json.dumps({"token": txn.context.token(), "refuse": False}).encode(), timeout=10
                )
                assert await txn.commit() is Outcome.COMMITTED
                await pa.applied(txn.txn_id)
                await pb_.applied(txn.txn_id)
        finally:
            await asyncio.to_thread(_stop, rm_proc)

        async with Client(coords) as client:
            refused = ScriptedRM("bank-c", vote=Vote.ABORTED)
            pc = Participant(refused, coords)
            bad = await client.begin()
            await pc.join(bad.context)
            with pytest.raises(TransactionAborted):
                await bad.commit()
            await pc.wait(bad.txn_id)

        trace_id, root_id = otel.trace_ids(txn.txn_id)
        want_trace = f"0x{trace_id:032x}"

        def acceptors_recorded() -> bool:
            got = [s for s in _file_spans(folder) if s["context"]["trace_id"] == want_trace]
            return sum(1 for s in got if s["name"] == "paxos.acceptor.record_outcome") >= 3

        await wait_until(acceptors_recorded, what="record_outcome spans of the 3 acceptors")
        await pa.close()
        await pb_.close()
        await pc.close()
    finally:
        cluster.stop()

    here = [s for s in memory.get_finished_spans() if s.context.trace_id == trace_id]
    there = [s for s in _file_spans(folder) if s["context"]["trace_id"] == want_trace]
    names_here = {s.name for s in here}
    assert {"paxos.transaction", "paxos.begin", "paxos.join", "paxos.prepare", "paxos.vote"} <= names_here
    assert {"paxos.commit", "paxos.outcome"} <= names_here
    root = next(s for s in here if s.name == "paxos.transaction")
    assert root.context.span_id == root_id and root.parent is None
    assert root.attributes is not None and root.attributes["paxos.txn_id"] == txn.txn_id
    assert root.attributes["paxos.outcome"] == "committed"
    assert all(s.parent is not None and s.parent.span_id == root_id for s in here if s is not root)
    assert all(s["parent_id"] == f"0x{root_id:016x}" for s in there)
    assert all(s["attributes"]["paxos.txn_id"] == txn.txn_id for s in there)

    processes = {s["_file"] for s in there}
    services = {s["resource"]["attributes"]["service.name"] for s in there}
    # This process (application and two RMs), the RM process, the owner, the acceptors.
    assert len(processes) + 1 >= 5, processes
    assert any(n.startswith("paxos-commit-coordinator-") for n in services), services
    assert sum(n.startswith("paxos-commit-acceptor-") for n in services) >= 2, services
    far = {
        s["name"] for s in there if s["resource"]["attributes"]["service.name"] == "paxos-commit-rm-bank-far"
    }
    assert {"paxos.join", "paxos.prepare", "paxos.vote", "paxos.outcome"} <= far, far
    names_there = {s["name"] for s in there}
    assert {"paxos.coordinator.begin", "paxos.coordinator.join", "paxos.coordinator.commit"} <= names_there
    assert {"paxos.decide", "paxos.acceptor.phase2b", "paxos.acceptor.record_outcome"} <= names_there

    # The abort's trace names its cause.
    bad_trace = f"0x{otel.trace_ids(bad.txn_id)[0]:032x}"
    decide = [
        s
        for s in _file_spans(folder)
        if s["context"]["trace_id"] == bad_trace and s["name"] == "paxos.decide"
    ]
    assert decide and decide[0]["attributes"]["paxos.abort_cause"] == "rm_refused"
    assert decide[0]["attributes"]["paxos.rm_id"] == "bank-c"
    bad_root = next(
        s
        for s in memory.get_finished_spans()
        if s.name == "paxos.transaction" and s.attributes and s.attributes["paxos.txn_id"] == bad.txn_id
    )
    assert bad_root.attributes is not None and bad_root.attributes["paxos.abort_cause"] == "rm_refused"


async def test_otlp_export_configured_by_the_standard_variables(tmp_path: Path) -> None:
    """The services export over OTLP/gRPC to whatever OTEL_EXPORTER_OTLP_ENDPOINT names
    (here a collector stand-in in this process): nothing but the standard variables."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    got: list[Any] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request: Any, context: Any) -> Any:
            got.extend(request.resource_spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cluster = LocalCluster(
        tmp_path / "cluster",
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        },
        tls=False,
    )
    await asyncio.to_thread(cluster.start)
    try:
        coords = cluster.coordinator_addresses
        rm = ScriptedRM("bank-a")
        p = Participant(rm, coords)
        async with Client(coords) as client:
            txn = await client.begin()
            await p.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED
        await p.applied(txn.txn_id)
        await p.close()
        trace_id = otel.trace_ids(txn.txn_id)[0].to_bytes(16, "big")

        def services() -> set[str]:
            names = set()
            for rs in got:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                assert attrs.get("deployment.environment") == "test"
                if any(s.trace_id == trace_id for ss in rs.scope_spans for s in ss.spans):
                    names.add(attrs["service.name"])
            return names

        await wait_until(lambda: len(services()) >= 3, what="spans of 3 services at the collector")
        assert any(n.startswith("paxos-commit-coordinator-") for n in services())
        assert any(n.startswith("paxos-commit-acceptor-") for n in services())
    finally:
        await asyncio.to_thread(cluster.stop)
        await server.stop(None)
