"""``paxos-commit txn``'s pure parts: where the cluster comes from, durations, and the
text of ``txn show`` / ``txn list`` for hand-made views."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from paxos_commit.admin import Filters, Owned, TxnView, parse_duration
from paxos_commit.txn_cli import UsageError, admin_tls, cluster_addresses, format_list, format_show
from rm_sdk.protocol import REGISTRAR, RM_BALLOT, Ballot, InstanceState, Outcome, RMSet, Vote


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"acceptors": None, "coordinators": None, "attach": None, **kw})


def test_cluster_from_flags_and_from_an_up_data_dir(tmp_path: Path) -> None:
    assert cluster_addresses(_args(acceptors="a:1,b:2,c:3", coordinators="x:9")) == (
        ["a:1", "b:2", "c:3"],
        ["x:9"],
    )
    with pytest.raises(UsageError, match="odd count"):
        cluster_addresses(_args(acceptors="a:1,b:2"))
    run = tmp_path / "up" / "run"
    run.mkdir(parents=True)
    for name, port in [("acceptor-0", 1), ("acceptor-1", 2), ("acceptor-2", 3), ("coordinator-0", 9)]:
        (run / f"{name}.json").write_text(json.dumps({"address": f"127.0.0.1:{port}", "pid": 1}))
    acc, coord = cluster_addresses(_args(attach=str(tmp_path / "up")))
    assert acc == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"] and coord == ["127.0.0.1:9"]
    with pytest.raises(UsageError, match="no running cluster"):
        cluster_addresses(_args(attach=str(tmp_path / "nothing")))


def _tls_args(**kw: object) -> argparse.Namespace:
    base = {
        "tls_cert": None,
        "tls_key": None,
        "tls_ca": None,
        "certs": None,
        "admin": "local",
        "insecure": False,
    }
    return _args(**{**base, **kw})


def test_the_tools_certificate_from_flags_a_folder_or_the_attached_cluster(tmp_path: Path) -> None:
    """TLS is the default: the tools present an admin certificate, found without flags next
    to a running `up` (its data dir's admin-local.pem); --insecure only when asked for."""
    from paxos_commit.certs import local_certs
    from paxos_commit.cluster import LocalCluster

    certs = tmp_path / "certs"
    local_certs(certs, 1, [], extra=[("admin", "ops")])
    assert admin_tls(_tls_args(insecure=True)) is None
    with pytest.raises(UsageError, match="cannot be combined"):
        admin_tls(_tls_args(insecure=True, certs=str(certs)))
    with pytest.raises(UsageError, match="no certificates"):
        admin_tls(_tls_args())
    files = admin_tls(_tls_args(certs=str(certs)))
    assert files is not None and files.cert.name == "admin-local.pem" and files.identity().role == "admin"
    files = admin_tls(_tls_args(certs=str(certs), admin="ops"))
    assert files is not None and files.identity().name == "ops"
    with pytest.raises(UsageError, match="does not exist"):
        admin_tls(_tls_args(certs=str(certs), admin="nobody"))
    with pytest.raises(UsageError, match="go together"):
        admin_tls(_tls_args(tls_cert=str(files.cert)))
    explicit = admin_tls(_tls_args(tls_cert=str(files.cert), tls_key=str(files.key), tls_ca=str(files.ca)))
    assert explicit == files
    up = LocalCluster(tmp_path / "up")  # what attach finds: a TLS cluster, certs under its data dir
    local_certs(up.certs_dir, 1, [])
    found = admin_tls(_tls_args(), up)
    assert found is not None and found.cert == up.certs_dir / "admin-local.pem"
    assert admin_tls(_tls_args(), LocalCluster(tmp_path / "plain", tls=False)) is None


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("5m") == 300 and parse_duration("2h") == 7200
    assert parse_duration("250ms") == 0.25 and parse_duration("1d") == 86400 and parse_duration("7") == 7
    for bad in ("soon", "-1s", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


def _stuck() -> TxnView:
    s = RMSet.of(["a", "b"])
    ok = {
        REGISTRAR: InstanceState(RM_BALLOT, RM_BALLOT, s),
        "a": InstanceState(RM_BALLOT, RM_BALLOT, Vote.PREPARED),
    }
    v = TxnView("t1", 3, now=1000.0)
    v.states = {0: dict(ok), 1: dict(ok), 2: None}
    v.unreachable = {2: "UNAVAILABLE: down"}
    v.recorded = {0: Outcome.PENDING, 1: Outcome.PENDING}
    v.first_seen = {0: 990.0, 1: 991.0}
    v.owned = Owned("127.0.0.1:9", "coordinator-0.x", "deciding", 10.0, ["a", "b"], ["a", "b"], ["b"])
    return v


def test_show_and_list_of_a_stuck_transaction() -> None:
    v = _stuck()
    assert v.in_doubt and v.outcome is Outcome.PENDING and v.age_s == 10.0
    assert v.waits_for() == ["b has not voted", "acceptor 2 unreachable (UNAVAILABLE: down)"]
    text = format_show(v)
    assert "coordinator-0.x at 127.0.0.1:9 (deciding)" in text
    assert "{a,b} (chosen)" in text and "PENDING (in doubt)" in text
    assert "acceptor 2: unreachable" in text and "(unreachable)" in text
    line = format_list([v]).splitlines()[1]
    assert line.startswith("t1") and "IN-DOUBT" in line and "a,b" in line and "b has not voted" in line
    assert Filters(in_doubt=True).keep(v) and Filters(rm_id="b").keep(v) and not Filters(rm_id="c").keep(v)
    assert not Filters(older_than=60).keep(v) and not Filters(outcome=Outcome.COMMITTED).keep(v)


def test_an_operator_settled_transaction() -> None:
    v = _stuck()
    admin = Ballot(1, "admin.abc")
    for i in (0, 1):
        st = v.states[i]
        assert st is not None
        st["b"] = InstanceState(admin, admin, Vote.ABORTED)
    assert v.outcome is Outcome.ABORTED and not v.in_doubt and v.waits_for() == []
    assert v.cause() == "operator" and v.operator_ballots() == ["admin.abc"]
    assert "ABORTED (operator, settled by an operator (admin.abc)" in format_show(v)
    assert v.to_json()["instances"]["b"]["0"] == {
        "mbal": "1/admin.abc",
        "bal": "1/admin.abc",
        "val": "aborted",
    }
