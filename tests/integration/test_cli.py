"""The command line: `up` starts, stops on SIGTERM, and carries on from its data dir;
F=0 (one acceptor, classic 2PC) commits like F=1."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Outcome, Participant
from rm_sdk.tls import credentials_from_dir
from tests.integration.helpers import ScriptedRM


def _up(data_dir: Path, coordinators: int = 1) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "paxos_commit", "up", "--data-dir", str(data_dir), "--base-port", "0",
         "--acceptors", "3", "--coordinators", str(coordinators)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("".join(lines))


async def test_up_stops_on_sigterm_and_carries_on_from_its_data_dir(tmp_path: Path) -> None:
    proc, lines = _up(tmp_path / "pc")
    coordinator = re.search(r"coordinator-0\s+(\S+)", "".join(lines))
    assert coordinator, lines
    assert "mTLS on" in "".join(lines)
    # up runs mTLS by default, certificates under its data dir; clients need their own.
    from paxos_commit.cli import main

    assert main(["certs", str(tmp_path / "pc" / "certs"), "--issue", "rm:rm-1", "--issue", "app:test"]) == 0
    app = credentials_from_dir(tmp_path / "pc" / "certs", "app", "test")
    rm = ScriptedRM("rm-1")
    p = Participant(
        rm, [coordinator.group(1)], credentials=credentials_from_dir(tmp_path / "pc" / "certs", "rm", "rm-1")
    )
    async with Client([coordinator.group(1)], credentials=app) as client:
        txn = await client.begin()
        await p.join(txn.context)
        assert await txn.commit() is Outcome.COMMITTED
    await p.close()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out

    # Same data dir: the acceptors find their state (no --init) and serve the old outcome.
    proc, lines = _up(tmp_path / "pc")
    coordinator = re.search(r"coordinator-0\s+(\S+)", "".join(lines))
    assert coordinator
    async with Client([coordinator.group(1)], credentials=app) as client:
        assert (await client.outcome(txn.txn_id, wait=5))[0] is Outcome.COMMITTED
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


async def test_f0_single_acceptor_is_classic_2pc(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "f0", n_acceptors=1, n_coordinators=1) as cluster:
        coords = cluster.coordinator_addresses
        rms = [ScriptedRM("r1"), ScriptedRM("r2")]
        parts = [Participant(r, coords, credentials=cluster.credentials("rm", r.rm_id)) for r in rms]
        async with Client(coords, credentials=cluster.credentials("app", "test")) as client:
            txn = await client.begin()
            for p in parts:
                await p.join(txn.context)
            assert await txn.commit() is Outcome.COMMITTED
        for p in parts:
            await p.wait(txn.txn_id)
            await p.close()
        assert all(r.committed == [txn.txn_id] for r in rms)


def test_acceptor_refuses_to_start_without_its_state(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "paxos_commit", "acceptor", "--id", "0", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path), "--insecure"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert "refusing to start blank" in r.stderr


def test_services_refuse_to_start_without_certificates_unless_insecure(tmp_path: Path) -> None:
    """TLS is not optional by accident: no certificates and no --insecure is a usage error."""
    for argv in (["acceptor", "--id", "0", "--data-dir", str(tmp_path), "--init"],
                 ["coordinator", "--acceptors", "127.0.0.1:1"]):  # fmt: skip
        r = subprocess.run(
            [sys.executable, "-m", "paxos_commit", *argv, "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert "no certificates" in r.stderr and "--insecure" in r.stderr


def _scrape(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _scrape_when_up(port: int, limit: float = 30.0) -> dict[str, float]:
    deadline = time.monotonic() + limit
    while True:
        try:
            return _scrape(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_up_serves_metrics_that_move_during_the_demo(tmp_path: Path) -> None:
    """The demo run against `up` (--attach): its transactions show in the metrics of the
    coordinators and acceptors, and up restarts the coordinator the demo kills."""
    proc, lines = _up(tmp_path / "pc", coordinators=2)
    try:
        ports = {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"(\S+)\s+\S+\s+metrics http://127.0.0.1:(\d+)/", "".join(lines))
        }
        assert set(ports) == {"acceptor-0", "acceptor-1", "acceptor-2", "coordinator-0", "coordinator-1"}
        before = {name: _scrape(port) for name, port in ports.items()}
        assert all(
            b["paxos_commit_transactions_begun_total"] == 0
            for n, b in before.items()
            if n.startswith("coord")
        )
        demo = subprocess.run(
            [sys.executable, "-m", "paxos_commit", "demo", "--attach", str(tmp_path / "pc"), "--transfers", "12",
             "--data-dir", str(tmp_path / "demo")],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr
        # Its closing `txn show` read the cluster over mTLS, as up's admin.
        assert "(could not read it:" not in demo.stdout, demo.stdout
        # The coordinator the demo killed is back once up has restarted it.
        after = {name: _scrape_when_up(port) for name, port in ports.items()}
        begun = sum(
            after[c]["paxos_commit_transactions_begun_total"] for c in ("coordinator-0", "coordinator-1")
        )
        decided = sum(
            v for c in ("coordinator-0", "coordinator-1") for k, v in after[c].items()
            if k.startswith(("paxos_commit_transactions_committed_total", "paxos_commit_transactions_aborted_total"))
        )  # fmt: skip
        assert begun >= 1 and decided >= 1
        for a in ("acceptor-0", "acceptor-1"):
            assert (
                after[a]["paxos_commit_acceptor_batch_size_count"]
                > before[a]["paxos_commit_acceptor_batch_size_count"]
            )
        assert any(
            k.startswith('paxos_commit_stream_messages_total{code="OK",kind="phase2a"}')
            for k in after["acceptor-0"]
        )

        # The operators' commands find up's cluster from its data dir.
        listed = subprocess.run(
            [sys.executable, "-m", "paxos_commit", "txn", "list", "--attach", str(tmp_path / "pc"), "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        views = json.loads(listed.stdout)
        assert any(v["outcome"] == "committed" for v in views), views[:3]
        shown = subprocess.run(
            [sys.executable, "-m", "paxos_commit", "txn", "show", views[0]["txn_id"], "--attach", str(tmp_path / "pc")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        # Its instances, or (once every RM acknowledged) the line saying where it was
        # collected: at every acceptor, or at some while the others' records are in flight.
        assert shown.returncode == 0, shown.stderr
        assert "@registrar" in shown.stdout or "collected at" in shown.stdout, shown.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "exited; restarting it" in out, out
    assert proc.returncode == 0, out


def test_bench_reports_messages_batches_and_writes_per_transaction(tmp_path: Path) -> None:
    """``paxos-commit bench`` (a handful of transactions: figures come from the command
    itself, not from a test) reports, per configuration, messages, batches and stream
    writes per transaction and CPU per process; writes count both directions, so they
    are at least the incoming batches."""
    out = subprocess.run(
        [sys.executable, "-m", "paxos_commit", "--log-level", "WARNING", "bench",
         "--concurrency", "2", "--transactions", "60", "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    # What the figures were measured on: durable writes cannot be faster than the disk.
    assert doc["machine"]["cpus"] >= 1 and doc["machine"]["fdatasync_us_p50"] > 0
    (level,) = doc["levels"]
    for key, procs in (("f0", 2), ("f1", 4)):
        r = level[key]
        assert r["failures"] == 0 and r["commits_per_s"] > 0
        assert r["stream_messages_per_txn"] > 0 and r["stream_messages_per_batch"] >= 1
        incoming = r["stream_messages_per_txn"] / r["stream_messages_per_batch"]
        assert r["stream_writes_per_txn"] > incoming
        assert len(r["cpu_ms_per_txn"]) == procs + 1  # every service process and this one
        # The machine's CPU covers at least what the processes used (within tick rounding).
        assert 0 < r["machine_busy"] <= 1
        assert r["machine_cpu_ms_per_txn"] >= 0.5 * sum(r["cpu_ms_per_txn"].values())
        # Every acceptor stored something (at F=1 the third one only the outcome records),
        # in storage transactions of at least one step.
        assert len(r["storage_batches_per_txn"]) == len(r["storage_steps_per_batch"]) == 2 * r["f"] + 1
        assert all(b > 0 for b in r["storage_batches_per_txn"].values())
        assert all(s is not None and s >= 1 for s in r["storage_steps_per_batch"].values())
        per = r["stream_batches_per_txn"]
        assert len(per) == procs  # every service process
        # rounded per service: within a few hundredths of the total
        assert abs(sum(b["in"] + b["out"] for b in per.values()) - r["stream_writes_per_txn"]) <= 0.05


def test_every_command_prints_its_help() -> None:
    """`--help` formats every help string (a bare `%` in one made the top-level help crash)."""
    import argparse
    import contextlib
    import io

    import pytest

    from paxos_commit.cli import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        found = [prefix]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found += commands(child, [*prefix, name])
        return found

    parser = build_parser()
    every = commands(parser, [])
    assert len(every) > 10
    for command in every:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            parser.parse_args([*command, "--help"])
        assert exit_.value.code == 0, command
        assert "usage: paxos-commit" in out.getvalue(), command
