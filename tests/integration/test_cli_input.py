"""Bad command-line input ends a command at once with exit 2 and a message naming the
argument or the problem: no traceback, nothing started, nothing created. Numbers are
checked by the parser (typed or from PAXOS_COMMIT_* environment variables); settings
only a running system can judge (a database address, a tool) by the command's preflight."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paxos_commit.cli import build_parser, main

# (command line, the argument the error must name)
BAD_NUMBERS = [
    (["bench", "--levels", "abc"], "--levels"),
    (["bench", "--levels", "0"], "--levels"),
    (["bench", "--levels", "1,,-4"], "--levels"),
    (["bench", "--levels", ","], "--levels"),
    (["bench", "--transactions", "0"], "--transactions"),
    (["bench", "--transactions", "-5"], "--transactions"),
    (["bench", "--concurrency", "0"], "--concurrency"),
    (["bench", "--rms", "-1"], "--rms"),
    (["bench", "--runs", "0"], "--runs"),
    (["bench", "--pool-size", "1"], "--pool-size"),
    (["soak", "--transactions", "0"], "--transactions"),
    (["soak", "--retention", "-1"], "--retention"),
    (["soak", "--retention", "nan"], "--retention"),
    (["demo", "--concurrency", "0"], "--concurrency"),
    (["up", "--acceptors", "2"], "--acceptors"),
    (["up", "--acceptors", "0"], "--acceptors"),
    (["up", "--base-port", "70000"], "--base-port"),
    (["trace-check", "x", "--acceptors", "4"], "--acceptors"),
    (["coordinator", "--vote-timeout", "0"], "--vote-timeout"),
    (["coordinator", "--vote-timeout", "inf"], "--vote-timeout"),
    (["coordinator", "--ack-wait", "-1"], "--ack-wait"),
    (["acceptor", "--metrics-port", "-1"], "--metrics-port"),
    (["acceptor", "--collect-interval", "0"], "--collect-interval"),
    (["acceptor", "--cache-size", "0"], "--cache-size"),
    (["txns", "--limit", "0"], "--limit"),
    (["chaos", "--transactions", "0"], "--transactions"),
    (["chaos", "--scale", "0"], "--scale"),
    (["txn", "list", "--limit", "0"], "--limit"),
    (["txn", "resolve", "t1", "--abort", "--timeout", "0"], "--timeout"),
    (["console", "--refresh", "-1"], "--refresh"),
    (["coordinator", "--acceptors", "acceptor-0"], "--acceptors"),
    (["coordinator", "--acceptors", "a:1,b:2"], "--acceptors"),
    (["txn", "list", "--acceptors", "a:1,b:99999,c:3"], "--acceptors"),
    (["txn", "show", "t1", "--coordinators", "c:1,c"], "--coordinators"),
]


@pytest.mark.parametrize(("argv", "names"), BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_a_bad_number_stops_the_command_naming_its_argument(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {names}" in err, err
    assert "Traceback" not in err


def test_good_numbers_parse_to_their_values() -> None:
    """The same checks let every sensible value through (each bound is inclusive)."""
    p = build_parser()
    a = p.parse_args(
        ["bench", "--levels", "1, 16,64", "--rms", "0", "--transactions", "1", "--pool-size", "2"]
    )
    assert (a.levels, a.rms, a.transactions, a.pool_size) == ([1, 16, 64], 0, 1, 2)
    assert p.parse_args(["bench"]).levels is None  # the default levels are the command's
    a = p.parse_args(["up", "--acceptors", "1", "--base-port", "0"])
    assert (a.acceptors, a.base_port) == (1, 0)
    a = p.parse_args(["coordinator", "--ack-wait", "0", "--recovery-interval", "0", "--vote-timeout", "0.5"])
    assert (a.ack_wait, a.recovery_interval, a.vote_timeout) == (0.0, 0.0, 0.5)
    a = p.parse_args(["acceptor", "--metrics-port", "65535", "--collect-retention", "0"])
    assert (a.metrics_port, a.collect_retention) == (65535, 0.0)
    assert p.parse_args(["soak", "--retention", "0"]).retention == 0.0
    a = p.parse_args(["coordinator", "--acceptors", " 10.0.0.1:7700, a-0.acc:7700 ,[::1]:7700"])
    assert a.acceptors == "10.0.0.1:7700,a-0.acc:7700,[::1]:7700"


def test_an_environment_setting_is_checked_like_the_flag_it_stands_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad PAXOS_COMMIT_* value fails the command it configures, naming the flag; other
    commands and --help are untouched (it was converted while building the parser, so
    one bad variable made every command, --help included, crash)."""
    monkeypatch.setenv("PAXOS_COMMIT_VOTE_TIMEOUT", "abc")
    monkeypatch.setenv("PAXOS_COMMIT_CACHE_SIZE", "-3")
    monkeypatch.setenv("PAXOS_COMMIT_METRICS_PORT", "http")
    p = build_parser()
    assert p.parse_args(["bench"]).command == "bench"
    for argv, flag in (
        (["coordinator"], "--vote-timeout"),
        (["acceptor", "--metrics-port", "1"], "--cache-size"),
        (["acceptor", "--cache-size", "5"], "--metrics-port"),
    ):
        with pytest.raises(SystemExit) as exit_:
            p.parse_args(argv)
        assert exit_.value.code == 2
        assert f"argument {flag}" in capsys.readouterr().err
    monkeypatch.setenv("PAXOS_COMMIT_VOTE_TIMEOUT", "7.5")
    monkeypatch.setenv("PAXOS_COMMIT_METRICS_PORT", "9100")
    a = build_parser().parse_args(["coordinator"])
    assert (a.vote_timeout, a.metrics_port) == (7.5, 9100)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAXOS_COMMIT_")}
    return subprocess.run(
        [sys.executable, "-m", "paxos_commit", "--log-level", "WARNING", *argv],
        capture_output=True, text=True, timeout=60, cwd=cwd, env=env,
    )  # fmt: skip


def test_an_unusable_postgres_address_is_named_not_a_traceback(tmp_path: Path) -> None:
    for argv in (
        ["bench", "--postgres", "not a dsn", "--levels", "1"],
        ["soak", "--postgres", "not a dsn", "--transactions", "10"],
        ["demo", "--postgres", "not a dsn"],
        # Nothing listens on port 9 of loopback: refused at once.
        ["bench", "--postgres", "postgresql://postgres@127.0.0.1:9/x", "--levels", "1"],
    ):
        out = _run(argv, tmp_path)
        assert out.returncode == 2, (argv, out.stdout, out.stderr)
        assert f"paxos-commit {argv[0]}: cannot use the Postgres server at" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_chaos_refuses_unknown_fault_kinds_and_a_used_data_dir_before_it_starts(tmp_path: Path) -> None:
    out = _run(["chaos", "--kinds", "kill,meteor"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "paxos-commit chaos: unknown fault kinds ['meteor']" in out.stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("")
    out = _run(["chaos", "--data-dir", str(used)], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "is not empty" in out.stderr and "Traceback" not in out.stderr
    assert [p.name for p in used.iterdir()] == ["x"]
