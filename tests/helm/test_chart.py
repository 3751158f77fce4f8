"""The Helm chart (helm/paxos-commit), checked without a cluster.

- It renders with the real Helm engine (helm-python-sdk: Helm v4's Go code, no helm binary)
  for 3 and 5 acceptors, and validateValues refuses 2 (and every other unsafe combination
  it knows); helm lint --strict is clean.
- Every rendered manifest passes `kubernetes-validate --strict` against the oldest and the
  newest Kubernetes version it bundles; the Prometheus Operator resources (CRDs, which it
  has no schema for) and the Grafana dashboard are checked here, down to the metric names.
- The rendered pod specs run: their exact command, arguments and environment start as local
  processes (tests/helm/pods.py says what is mapped and how), their probes answer, their
  /metrics serve every metric the alerts and the dashboard use, and a transaction commits
  through them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import helm_python as helm
except Exception as exc:  # the wheel's libhelm_c is built for x86_64 only
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"helm_python cannot load on {platform.machine()}: {exc}", allow_module_level=True)
    raise

from tests.helm.pods import LOCAL_IP, Cluster, can_set_hostname, expand, unlocalize

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "paxos-commit"
RELEASE, NAMESPACE = "pc", "txn"
FULLNAME = f"{RELEASE}-paxos-commit"
ACCEPTORS, COORDINATORS = f"{FULLNAME}-acceptor", f"{FULLNAME}-coordinator"
HEADLESS = f"{FULLNAME}-acceptor-headless"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}
PG_DSN = os.environ.get("PAXOS_COMMIT_TEST_PG", "")

#: The services' metric names (the contract the alerts and the dashboard are written against).
METRICS = {
    "paxos_commit_transactions_begun_total",
    "paxos_commit_transactions_committed_total",
    "paxos_commit_transactions_aborted_total",
    "paxos_commit_commit_latency_seconds",
    "paxos_commit_transactions_in_flight",
    "paxos_commit_transactions_in_doubt",
    "paxos_commit_oldest_in_doubt_age_seconds",
    "paxos_commit_recovery_ballots_total",
    "paxos_commit_acceptor_write_seconds",
    "paxos_commit_acceptor_batch_size",
    "paxos_commit_grpc_requests_total",
    "paxos_commit_acceptor_peers_reachable",
    "paxos_commit_acceptor_transactions_collectable",
    "paxos_commit_acceptor_oldest_unacknowledged_age_seconds",
    "paxos_commit_acceptor_collect_batch_seconds",
    "paxos_commit_acceptor_transactions_live",
    "paxos_commit_acceptor_outcome_records",
    "paxos_commit_acceptor_database_bytes",
    "paxos_commit_acceptor_transactions_collected_total",
    "paxos_commit_acceptor_instance_rows",
    "paxos_commit_acceptor_storage_queue_steps",
    "paxos_commit_acceptor_link_requests",
    "paxos_commit_stream_requests_open",
    "paxos_commit_stream_replies_unsent",
    "paxos_commit_streams_open",
}
ALL_FEATURES: dict[str, Any] = {
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    },
    "coordinator": {"autoscaling": {"enabled": True}},
    "console": {"enabled": True},
    "networkPolicy": {
        "allowExternal": False,
        "clients": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
    },
}
PG_URLS = [f"postgresql+psycopg://paxos:secret@acceptor-{i}.db.example:5432/paxos" for i in range(5)]
#: Value sets every static check runs on.
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "five-everything": {**ALL_FEATURES, "acceptor": {"replicaCount": 5}},
    "one-acceptor": {"acceptor": {"replicaCount": 1}, **ALL_FEATURES},
    "postgres": {"acceptor": {"storage": {"type": "postgres"}, "postgres": {"urls": PG_URLS[:3]}}},
    "insecure": {"tls": {"enabled": False}},
    "tls-existing-secrets": {
        "tls": {
            "certManager": {"enabled": False},
            "acceptorSecret": "acc-tls",
            "coordinatorSecret": "coord-tls",
            "consoleSecret": "console-tls",
        }
    },
    "postgres-existing-secret": {
        "acceptor": {"storage": {"type": "postgres"}, "postgres": {"existingSecret": "acceptor-dbs"}},
        "serviceAccount": {"create": False},
        "networkPolicy": {"enabled": False},
        "coordinator": {"pdb": {"create": False}},
    },
}


# ---------------------------------------------------------------- rendering


class Rendered:
    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.notes = files.pop("paxos-commit/templates/NOTES.txt", "")
        self.manifests: list[dict[str, Any]] = [
            doc for text in files.values() for doc in yaml.safe_load_all(text) if doc
        ]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [m for m in self.all(kind) if name is None or m["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}"
        return found[0]


def render(values: dict[str, Any] | None = None) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        return Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE))


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def arg_after(c: dict[str, Any], flag: str) -> str:
    args = c["args"]
    return str(args[args.index(flag) + 1])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- renders and refusals


@pytest.mark.parametrize("n", [3, 5])
def test_renders_for_an_odd_acceptor_count(n: int) -> None:
    r = render({"acceptor": {"replicaCount": n}})
    f = (n - 1) // 2
    sts = r.one("StatefulSet", ACCEPTORS)
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert sts["spec"]["replicas"] == n
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == HEADLESS
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert selects(sts["spec"]["selector"]["matchLabels"], labels)

    headless = r.one("Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert selects(headless["spec"]["selector"], labels)

    # Pod ordinal = acceptor id: the pod's host name gives the id, its volume the state.
    acc = container(sts)
    assert acc["command"] == ["paxos-commit"]
    assert arg_after(acc, "--id") == "auto"
    assert "--init-if-empty" in acc["args"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mount = next(m for m in acc["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert arg_after(acc, "--data-dir").startswith(mount["mountPath"] + "/")
    assert "lifecycle" not in acc, "membership is never changed from a termination hook"

    # The coordinators' acceptor list: position i is pod <statefulset>-i, at its gRPC port.
    dep = r.one("Deployment", COORDINATORS)
    grpc_port = next(p["containerPort"] for p in acc["ports"] if p["name"] == "grpc")
    assert arg_after(container(dep), "--acceptors").split(",") == [
        f"{ACCEPTORS}-{i}.{HEADLESS}.{NAMESPACE}.svc.cluster.local:{grpc_port}" for i in range(n)
    ]
    assert arg_after(container(dep), "--advertise-host") == "$(POD_IP)"

    # Voluntary disruptions never take more than F acceptors.
    pdb = r.one("PodDisruptionBudget", ACCEPTORS)
    assert pdb["spec"]["maxUnavailable"] == f
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert not [
        h for h in r.all("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    ]

    # checksum/config is the rendered ConfigMap's: a settings change rolls the pods.
    for workload, cm in ((sts, "acceptor"), (dep, "coordinator")):
        text = r.files[f"paxos-commit/templates/{cm}/configmap.yaml"]
        digest = hashlib.sha256(text.encode()).hexdigest()
        assert workload["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == digest
        c = container(workload)
        assert {"configMapRef": {"name": workload["metadata"]["name"]}} in c["envFrom"]

    for workload in (sts, dep):
        spec, c = workload["spec"]["template"]["spec"], container(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
        assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        # TLS on by default: the kubelet asks the plain-text health-only port.
        assert c["readinessProbe"]["grpc"]["port"] == ports["health"]
        assert arg_after(c, "--health-port") == str(ports["health"])
        assert c["readinessProbe"]["grpc"]["service"].startswith("paxoscommit.v1.")
        assert c["livenessProbe"]["tcpSocket"]["port"] == ports["grpc"]
        assert arg_after(c, "--metrics-port") == str(ports["metrics"])
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]

    assert f"acceptors: {n} (F={f}:" in r.notes
    assert "operators' console" not in r.notes


def test_console_renders_only_when_enabled() -> None:
    assert not [m for m in render().manifests if m["metadata"]["name"] == f"{FULLNAME}-console"]
    r = render({"console": {"enabled": True, "refreshSeconds": 0}})
    dep, svc = r.one("Deployment", f"{FULLNAME}-console"), r.one("Service", f"{FULLNAME}-console")
    c = container(dep)
    assert c["command"] == ["paxos-commit"] and c["args"][c["args"].index("console") + 1 :] == [
        "--listen", "0.0.0.0:8080", "--refresh", "0",
    ]  # fmt: skip
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["PAXOS_COMMIT_ACCEPTORS"] == arg_after(
        container(r.one("Deployment", COORDINATORS)), "--acceptors"
    )
    assert env["PAXOS_COMMIT_COORDINATORS"] == f"{COORDINATORS}:7800"
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["spec"]["template"]["metadata"]["labels"][f"{FULLNAME}-client"] == "true"
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert f"port-forward svc/{FULLNAME}-console 8080" in r.notes
    # TLS (the default): the console is an admin, with a client certificate of its own
    # mounted where PAXOS_COMMIT_CERTS points (txn commands in the pod use it too).
    cert = r.one("Certificate", f"{FULLNAME}-console")
    assert cert["spec"]["uris"] == [f"spiffe://paxos-commit/admin/{FULLNAME}-console"]
    assert cert["spec"]["secretName"] == f"{FULLNAME}-console-tls"
    assert "client auth" in cert["spec"]["usages"]
    (m,) = [v for v in c["volumeMounts"] if v["mountPath"] == env["PAXOS_COMMIT_CERTS"]]
    (vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == m["name"]]
    assert vol["secret"]["secretName"] == f"{FULLNAME}-console-tls"
    # An existing Secret instead; without TLS, plain text and no certificate.
    r = render({"console": {"enabled": True}, **CONFIGS["tls-existing-secrets"]})
    assert not r.all("Certificate")
    vols = r.one("Deployment", f"{FULLNAME}-console")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "console-tls", "defaultMode": 0o440}} in vols
    r = render({"console": {"enabled": True}, **CONFIGS["insecure"]})
    c = container(r.one("Deployment", f"{FULLNAME}-console"))
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env.get("PAXOS_COMMIT_INSECURE") == "1" and "PAXOS_COMMIT_CERTS" not in env
    assert not r.all("Certificate")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"acceptor": {"replicaCount": 2}}, "The acceptor count must be odd (2F+1), got 2"),
        ({"acceptor": {"replicaCount": 4}}, "The acceptor count must be odd (2F+1), got 4"),
        ({"acceptor": {"replicaCount": 0}}, "There must be at least one acceptor"),
        ({"acceptor": {"persistence": {"enabled": False}}}, "SQLite without persistent volumes is refused"),
        ({"acceptor": {"pdb": {"maxUnavailable": 2}}}, "at most F=1 may be down"),
        ({"acceptor": {"storage": {"type": "postgres"}}}, "Postgres storage needs one database URL per acceptor"),
        (
            {"acceptor": {"storage": {"type": "postgres"}, "postgres": {"urls": PG_URLS[:1] * 3}}},
            "Two acceptors share a database URL",
        ),
        ({"coordinator": {"replicaCount": 0}}, "At least one coordinator replica"),
        ({"acceptor": {"ports": {"grpc": 9090}}}, "gRPC, metrics and health ports of a component must differ"),
        ({"tls": {"certManager": {"enabled": False}}}, "nothing provides the certificates"),
        (
            {"console": {"enabled": True},
             "tls": {"certManager": {"enabled": False}, "acceptorSecret": "a", "coordinatorSecret": "c"}},
            "nothing provides the console's admin certificate",
        ),
    ],
    ids=["2-acceptors", "4-acceptors", "0-acceptors", "sqlite-no-pv", "pdb-above-f", "pg-no-urls", "pg-shared",
         "no-coordinator", "port-clash", "tls-without-certificates", "console-without-certificate"],
)  # fmt: skip
def test_validate_values_refuses(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as refused:
        render(values)
    assert "VALUES VALIDATION:" in str(refused.value)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "values",
    [
        {"acceptor": {"replicas": 3}},  # a misspelt key is refused, not ignored
        {"acceptor": {"autoscaling": {"enabled": True}}},  # acceptors are never autoscaled
        {"acceptor": {"lifecycleHooks": {"preStop": {}}}},  # nor given termination hooks
        {"acceptor": {"replicaCount": "3"}},
        {"acceptor": {"storage": {"type": "mysql"}}},
        {"acceptor": {"initMode": "always"}},
    ],
)
def test_schema_refuses(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_lint_strict(config: str) -> None:
    for kube_version in (None, f"v{oldest_kubernetes()}"):
        report = helm.lint(
            CHART, CONFIGS[config], strict=True, namespace=NAMESPACE, kube_version=kube_version
        )
        assert report["errors"] == [], report
        # Severity 1 is information ("icon is recommended"); 2 warnings, 3 errors.
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


# ---------------------------------------------------------------- schemas


def kubernetes_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions

    return sorted(set(all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))


def oldest_kubernetes() -> str:
    return kubernetes_versions()[0]


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_manifests_validate_strict(which: str, tmp_path: Path) -> None:
    version = kubernetes_versions()[0 if which == "oldest" else -1]
    files: list[Path] = []
    for config, values in CONFIGS.items():
        for m in render(values).manifests:
            if m["kind"] in CRD_KINDS:
                continue  # no schema bundled: test_prometheus_operator_resources checks them
            f = tmp_path / f"{config}--{m['kind']}--{m['metadata']['name']}.yaml"
            f.write_text(yaml.safe_dump(m))
            files.append(f)
    # A control: strict validation refuses a field Kubernetes does not know.
    sts = yaml.safe_load((tmp_path / f"defaults--StatefulSet--{ACCEPTORS}.yaml").read_text())
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    control = tmp_path / "control.yaml"
    control.write_text(yaml.safe_dump(sts))

    cli = Path(sys.executable).parent / "kubernetes-validate"
    r = subprocess.run(
        [str(cli), "--strict", "-k", version, *map(str, files), str(control)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = r.stdout.splitlines()
    passed = {line.split()[1] for line in lines if line.startswith("INFO ") and " passed " in line}
    assert passed == {str(f) for f in files}, r.stdout + r.stderr
    assert not [line for line in lines if line.startswith(("WARN", "FATAL"))], r.stdout
    (error,) = [line for line in lines if line.startswith("ERROR")]
    assert str(control) in error and "livenesProbe" in error
    assert r.returncode == 1  # the control, and only it


def metric_names(text: str) -> set[str]:
    """paxos_commit_* names in PromQL, histogram series mapped to the histogram's name."""
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\bpaxos_commit_[a-z_]+", text)}


def balanced(expr: str) -> bool:
    depth: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', "", expr):
        if ch in "([{":
            depth.append(ch)
        elif ch in pairs and (not depth or depth.pop() != pairs[ch]):
            return False
    return not depth


@pytest.mark.parametrize("n", [1, 3, 5])
def test_prometheus_operator_resources(n: int) -> None:
    r = render({**ALL_FEATURES, "acceptor": {"replicaCount": n}})
    f = (n - 1) // 2

    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selected = [
        s
        for s in r.all("Service")
        if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        and all(
            s["metadata"]["labels"].get(e["key"]) in e["values"]
            for e in sm["spec"]["selector"]["matchExpressions"]
        )
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == [HEADLESS, COORDINATORS]
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
        assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint["interval"])
        for s in selected:
            (port,) = [p for p in s["spec"]["ports"] if p["name"] == endpoint["port"]]
            workload = r.one(
                *(("StatefulSet",) if s["metadata"]["name"] == HEADLESS else ("Deployment", COORDINATORS))
            )
            names = {p["name"] for p in container(workload)["ports"]}
            assert port["targetPort"] in names

    rule = r.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    alerts = {a["alert"]: a for a in group["rules"]}
    expected = {
        "PaxosCommitInDoubtTransactionTooOld",
        "PaxosCommitAcceptorQuorumLost",
        "PaxosCommitNoCoordinator",
        "PaxosCommitTargetDown",
        "PaxosCommitHighAbortRate",
        "PaxosCommitCollectionBehind",
        "PaxosCommitOutcomeUnacknowledged",
    } | ({"PaxosCommitAcceptorQuorumAtRisk"} if f >= 1 else set())
    assert set(alerts) == expected
    for a in alerts.values():
        assert set(a) == {"alert", "expr", "for", "labels", "annotations"}
        assert re.fullmatch(r"\d+[smh]", a["for"])
        assert a["labels"]["severity"] in ("warning", "critical")
        assert a["annotations"]["summary"] and a["annotations"]["description"]
        assert balanced(a["expr"]), a["expr"]
        assert metric_names(a["expr"]) <= METRICS, a["expr"]
        for job in re.findall(r'job="([^"]+)"', a["expr"]):
            assert job in (HEADLESS, COORDINATORS)  # the Operator names a target's job after its Service
        assert f'namespace="{NAMESPACE}"' in a["expr"]
    assert alerts["PaxosCommitAcceptorQuorumLost"]["expr"].endswith(f") < {f + 1}")
    if f >= 1:
        assert alerts["PaxosCommitAcceptorQuorumAtRisk"]["expr"].endswith(f") <= {f + 1}")
    assert alerts["PaxosCommitInDoubtTransactionTooOld"]["expr"].endswith("> 300")
    assert "paxos_commit_transactions_aborted_total" in alerts["PaxosCommitHighAbortRate"]["expr"]
    assert alerts["PaxosCommitCollectionBehind"]["expr"].endswith("> 10000")
    assert alerts["PaxosCommitOutcomeUnacknowledged"]["expr"].endswith("> 3600")


def dashboard(r: Rendered) -> dict[str, Any]:
    cm = r.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    return json.loads(cm["data"]["paxos-commit.json"])  # type: ignore[no-any-return]


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard() -> None:
    d = dashboard(render(ALL_FEATURES))
    assert d["uid"] == "paxos-commit" and d["schemaVersion"] >= 30
    variables = {v["name"] for v in d["templating"]["list"]}
    exprs = dashboard_exprs(d)
    assert len(exprs) >= 10
    for e in exprs:
        assert balanced(e), e
        assert set(re.findall(r"\$(\w+)", e)) - {"__rate_interval"} <= variables, e
    used = set().union(*map(metric_names, exprs))
    assert used == METRICS, METRICS - used  # every metric is on the dashboard
    for p in d["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_dockerfile_matches_the_pod_specs() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"(?m)^FROM\s+(\S+)", text)
    assert stages and set(stages) == {"python:3.11-slim"}
    final = re.split(r"(?m)^FROM\s", text)[-1]
    assert json.loads(re.search(r"(?m)^ENTRYPOINT\s+(.+)$", final).group(1)) == ["paxos-commit"]  # type: ignore[union-attr]
    assert "'.[server,otel]'" in text  # the services' dependencies, and tracing (off unless configured)
    user = re.search(r"(?m)^USER\s+(\d+)(?::(\d+))?$", final)
    assert user, "the image runs as a numeric non-root user"
    r = render()
    for workload in (r.one("StatefulSet"), r.one("Deployment")):
        assert container(workload)["command"] == ["paxos-commit"]  # = the image's entrypoint
        assert container(workload)["securityContext"]["runAsUser"] == int(user.group(1)) != 0
        for p in container(workload)["ports"]:
            assert re.search(rf"(?m)^EXPOSE\s.*\b{p['containerPort']}\b", final)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "helm"} <= set(ignored)


# ---------------------------------------------------------------- the pods, run


class NoteRM:
    """A resource manager that prepares everything and notes the outcomes."""

    def __init__(self, rm_id: str) -> None:
        self.rm_id = rm_id
        self.committed: list[str] = []
        self.aborted: list[str] = []

    async def prepare(self, txn_id: str) -> Any:
        from rm_sdk import Vote

        return Vote.PREPARED

    async def commit(self, txn_id: str) -> None:
        self.committed.append(txn_id)

    async def abort(self, txn_id: str) -> None:
        self.aborted.append(txn_id)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_values(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The release's values: acceptors on volumes (SQLite), or one Postgres database each."""
    if request.param == "sqlite":
        yield {}
        return
    if not PG_DSN:
        pytest.skip("set PAXOS_COMMIT_TEST_PG to a Postgres DSN to run the chart's acceptors on Postgres")
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    names = [f"pc_helm_{uuid.uuid4().hex[:10]}_{i}" for i in range(3)]
    info = conninfo_to_dict(PG_DSN)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        host, port, user = info.get("host", "127.0.0.1"), info.get("port", 5432), info.get("user", "postgres")
        urls = [f"postgresql+psycopg://{user}@{host}:{port}/{name}" for name in names]
        yield {"acceptor": {"storage": {"type": "postgres"}, "postgres": {"urls": urls}}}
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def health(address: str, service: str) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def probe(cluster: Cluster, pod_name: str, spec: dict[str, Any]) -> bool:
    """Run one probe of a pod spec against the local process, as the kubelet would."""
    from grpc_health.v1 import health_pb2

    pod = cluster.pod(pod_name)
    if "grpc" in spec:
        address = f"{LOCAL_IP}:{cluster.local(pod, int(spec['grpc']['port']))}"
        try:
            return (
                await health(address, spec["grpc"].get("service", ""))
                == health_pb2.HealthCheckResponse.SERVING
            )
        except Exception:
            return False
    (kind,) = set(spec) & {"tcpSocket", "httpGet", "exec"}
    if kind == "httpGet":
        url = f"http://{LOCAL_IP}:{cluster.local(pod, spec['httpGet']['port'])}{spec['httpGet'].get('path', '/')}"
        return await asyncio.to_thread(http_ok, url)
    assert kind == "tcpSocket", f"{pod_name}: {kind} probe not emulated"
    try:
        with socket.create_connection((LOCAL_IP, cluster.local(pod, spec["tcpSocket"]["port"])), timeout=2):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """A kubelet's httpGet probe: any status from 200 to 399 passes."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return 200 <= reply.status < 400
    except OSError:
        return False


async def wait_probes(cluster: Cluster, kinds: tuple[str, ...], limit: float = 45.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    pending = {(p.name, k) for p in cluster.pods for k in kinds if k in p.container}
    while pending:
        for pod_name, kind in sorted(pending):
            cluster.check_alive(pod_name)
            if await probe(cluster, pod_name, cluster.pod(pod_name).container[kind]):
                pending.discard((pod_name, kind))
        if pending and loop.time() > deadline:
            raise AssertionError(f"probes not passing after {limit}s: {sorted(pending)}")
        if pending:
            await asyncio.sleep(0.2)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOCAL_IP}:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def exposed(text: str) -> set[str]:
    """Metric names a /metrics page exposes, from its TYPE lines (a labelled counter with no
    series yet has one too)."""
    return set(re.findall(r"(?m)^# TYPE (\w+) ", text))


def sample(text: str, name: str) -> float:
    values = [float(v) for v in re.findall(rf"(?m)^{name}(?:{{[^}}]*}})? (\S+)$", text)]
    assert values, f"{name} not in /metrics"
    return sum(values)


@pytest.fixture(scope="module")
def in_pod_hostname() -> None:
    why = can_set_hostname()
    if why is not None:
        pytest.fail(f"cannot give a process its pod's host name (needed by --id auto): {why}")


async def test_pods_run_as_rendered(
    storage_values: dict[str, Any], tmp_path: Path, in_pod_hostname: None
) -> None:
    from rm_sdk import Client, Outcome, Participant
    from rm_sdk.tls import credentials_from_dir

    # With TLS, as by default; the Secrets cert-manager would make are made here.
    values = {**ALL_FEATURES, **storage_values, "tls": CONFIGS["tls-existing-secrets"]["tls"]}
    r = render(values)
    secrets, certs = tls_secrets(tmp_path)
    cluster = Cluster([*r.manifests, *secrets], NAMESPACE, tmp_path)
    acceptors = [p for p in cluster.pods if p.owner["kind"] == "StatefulSet"]
    coordinators = [p for p in cluster.pods if p.labels.get("app.kubernetes.io/component") == "coordinator"]
    (console,) = [p for p in cluster.pods if p.labels.get("app.kubernetes.io/component") == "console"]
    assert [p.name for p in acceptors] == [f"{ACCEPTORS}-{i}" for i in range(3)]
    assert len(coordinators) == 2  # autoscaling: minReplicas

    try:
        # Acceptors first, as `podManagementPolicy: Parallel` starts them (all at once);
        # coordinators in parallel with them would do too, only slower to become ready.
        subs = cluster.start(acceptors)
        subs |= cluster.start(coordinators)
        subs |= cluster.start([console])
        print("\nport mapping (pod, container port) -> local port:")
        for (pod_name, port), local in sorted(cluster.ports.items()):
            print(f"  {pod_name}:{port} -> {LOCAL_IP}:{local}")

        # The mapping is exactly the spec's, port for port.
        for pod in [*acceptors, *coordinators]:
            kinds = {s.kind for s in subs[pod.name]}
            assert kinds <= {"pod-ip", "pod-dns", "port", "path", "PATH", "workdir"}, kinds
            listen = [s for s in subs[pod.name] if s.kind == "pod-ip"]
            grpc = pod.container_ports["grpc"]
            assert [(s.spec, s.local) for s in listen] == [
                (f"0.0.0.0:{grpc}", f"{LOCAL_IP}:{cluster.local(pod, grpc)}")
            ]
            ports = [s for s in subs[pod.name] if s.kind == "port"]
            assert sorted(s.local.split()[-1].split("=")[-1] for s in ports) == sorted(
                [str(cluster.local(pod, "metrics")), str(cluster.local(pod, "health"))]
            )
        for pod in coordinators:
            spec_list = arg_after(pod.container, "--acceptors")
            dns = [s for s in subs[pod.name] if s.kind == "pod-dns"]
            assert [s.spec for s in dns] == spec_list.split(",")
            assert [s.local for s in dns] == [f"{LOCAL_IP}:{cluster.local(a, 'grpc')}" for a in acceptors]
            assert unlocalize(",".join(s.local for s in dns), dns) == spec_list

        # The console reaches every acceptor by its pod name and the coordinators through
        # their Service (locally: the first coordinator pod).
        csubs = subs[console.name]
        assert {s.kind for s in csubs} <= {"pod-ip", "pod-dns", "service", "path", "PATH", "workdir"}
        assert [s.local for s in csubs if s.kind == "pod-dns"] == [
            f"{LOCAL_IP}:{cluster.local(a, 'grpc')}" for a in acceptors
        ]
        assert [(s.spec, s.local) for s in csubs if s.kind == "service"] == [
            (f"{COORDINATORS}:7800", f"{LOCAL_IP}:{cluster.local(coordinators[0], 'grpc')}")
        ]

        # Every probe of every pod passes: startup first, then liveness and readiness.
        await wait_probes(cluster, ("startupProbe",))
        await wait_probes(cluster, ("livenessProbe", "readinessProbe"))
        for pod in [*acceptors, *coordinators]:
            assert pod.container["readinessProbe"]["grpc"]["service"] in (
                "paxoscommit.v1.Acceptor",
                "paxoscommit.v1.Coordinator",
            )
            status = await health(f"{LOCAL_IP}:{cluster.local(pod, 'health')}", "")
            assert status == 1  # SERVING
            # The gRPC port itself speaks TLS only: a plain-text client gets nothing.
            with pytest.raises(Exception):  # noqa: B017
                await health(f"{LOCAL_IP}:{cluster.local(pod, 'grpc')}", "")

        # Pod ordinal = acceptor id: acceptor-i took id i from its host name.
        for i, pod in enumerate(acceptors):
            ids = re.findall(rf"acceptor (\d+) serving on {re.escape(LOCAL_IP)}:(\d+)", cluster.log(pod.name))
            assert ids and set(ids) == {(str(i), str(cluster.local(pod, "grpc")))}, cluster.log(pod.name)
            if not storage_values:
                data_dir = expand(arg_after(pod.container, "--data-dir"), {})
                local_dir = cluster.volume_dir(pod, "data") / Path(data_dir).relative_to(
                    "/var/lib/paxos-commit"
                )
                assert (local_dir / f"acceptor-{i}.db").exists()

        # One transaction through the coordinators (what their Service balances over).
        addresses = [f"{LOCAL_IP}:{cluster.local(p, 'grpc')}" for p in coordinators]
        rm = NoteRM("rm-chart")
        participant = Participant(rm, addresses, credentials=credentials_from_dir(certs, "rm", "rm-chart"))
        try:
            async with Client(addresses, credentials=credentials_from_dir(certs, "app", "chart")) as client:
                txn = await client.begin()
                # The owner advertises its pod IP and listens on its container port.
                assert txn.context.coordinator in addresses
                await participant.join(txn.context)
                assert await txn.commit() is Outcome.COMMITTED
            await asyncio.wait_for(participant.wait(txn.txn_id), 20)
        finally:
            await participant.close()
        assert rm.committed == [txn.txn_id] and rm.aborted == []

        # The operators' commands and the console see it, against the rendered release.
        await check_operations(cluster, acceptors, coordinators, console, txn.txn_id, certs)

        # /metrics on every metrics port; what the alerts and the dashboard use is there.
        pages = {
            p.name: await asyncio.to_thread(scrape, cluster.local(p, "metrics"))
            for p in [*acceptors, *coordinators]
        }
        names = set().union(*(exposed(t) for t in pages.values()))
        rule = r.one("PrometheusRule")["spec"]["groups"][0]["rules"]
        used = set().union(
            *(metric_names(a["expr"]) for a in rule), *map(metric_names, dashboard_exprs(dashboard(r)))
        )
        assert used <= names, used - names
        assert (
            sum(sample(pages[p.name], "paxos_commit_transactions_committed_total") for p in coordinators) >= 1
        )
        for p in coordinators:  # each replica checks the acceptors every 2 s
            for _ in range(50):
                page = await asyncio.to_thread(scrape, cluster.local(p, "metrics"))
                if sample(page, "paxos_commit_acceptor_peers_reachable") == len(acceptors):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"{p.name} does not see {len(acceptors)} acceptors:\n{page}")
        # A decision needs a majority of acceptors to have written.
        wrote = [
            p for p in acceptors if sample(pages[p.name], "paxos_commit_acceptor_write_seconds_count") >= 1
        ]
        assert len(wrote) >= 2, [p.name for p in wrote]
    finally:
        cluster.stop()
    for pod in cluster.pods:
        assert cluster.procs[pod.name].returncode == 0, cluster.log(pod.name)[-3000:]


# ---------------------------------------------------------------- TLS


def test_tls_is_on_by_default_from_cert_manager() -> None:
    """Issue 9: every service serves mTLS by default, its certificate from a cert-manager
    Certificate naming its role (the chart bootstraps a CA when no issuer is given)."""
    r = render()
    certs = {c["metadata"]["name"]: c for c in r.all("Certificate")}
    issuers = {i["metadata"]["name"] for i in r.all("Issuer")}
    assert issuers == {f"{FULLNAME}-selfsigned", f"{FULLNAME}-ca"}
    assert certs[f"{FULLNAME}-ca"]["spec"]["isCA"] is True
    for workload, role in (
        (r.one("StatefulSet", ACCEPTORS), "acceptor"),
        (r.one("Deployment", COORDINATORS), "coordinator"),
    ):
        c = container(workload)
        assert "--insecure" not in c["args"]
        mount = arg_after(c, "--certs")
        (m,) = [v for v in c["volumeMounts"] if v["mountPath"] == mount]
        (vol,) = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == m["name"]]
        cert = next(x for x in certs.values() if x["spec"]["secretName"] == vol["secret"]["secretName"])
        assert cert["spec"]["uris"] == [f"spiffe://paxos-commit/{role}/{workload['metadata']['name']}"]
        assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
        assert cert["spec"]["issuerRef"]["name"] == f"{FULLNAME}-ca"
    acc_cert = certs[ACCEPTORS]
    assert f"*.{HEADLESS}.{NAMESPACE}.svc.cluster.local" in acc_cert["spec"]["dnsNames"]
    assert f"{COORDINATORS}.{NAMESPACE}.svc.cluster.local" in certs[COORDINATORS]["spec"]["dnsNames"]
    # Client certificates on request; existing Secrets instead of cert-manager; off says so.
    r = render({"tls": {"certManager": {"clients": [{"role": "rm", "name": "bank-a"}]}}})
    client = r.one("Certificate", f"{FULLNAME}-rm-bank-a")
    assert client["spec"]["uris"] == ["spiffe://paxos-commit/rm/bank-a"]
    assert client["spec"]["secretName"] == f"{FULLNAME}-rm-bank-a-tls"
    r = render(CONFIGS["tls-existing-secrets"])
    assert not r.all("Certificate") and not r.all("Issuer")
    vols = r.one("StatefulSet", ACCEPTORS)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "acc-tls", "defaultMode": 0o440}} in vols
    r = render(CONFIGS["insecure"])
    assert "--insecure" in container(r.one("StatefulSet", ACCEPTORS))["args"]
    assert "--insecure" in container(r.one("Deployment", COORDINATORS))["args"]
    assert not r.all("Certificate")


def tls_secrets(tmp_path: Path) -> tuple[list[dict[str, Any]], Path]:
    """What cert-manager would have made: the acceptors', coordinators' and console's
    Secrets (our CA; host names are the local ones every pod maps to), and a folder with
    client certificates (admin-local.pem for the txn commands among them)."""
    from paxos_commit.certs import ensure_cert, local_certs

    d = tmp_path / "certs"
    local_certs(d, 0, [], extra=[("rm", "rm-chart"), ("app", "chart")])
    out = []
    for role, name, secret in (
        ("acceptor", ACCEPTORS, "acc-tls"),
        ("coordinator", COORDINATORS, "coord-tls"),
        ("admin", f"{FULLNAME}-console", "console-tls"),
    ):
        files = ensure_cert(d, role, name)
        data = {
            "tls.crt": files.cert.read_bytes(),
            "tls.key": files.key.read_bytes(),
            "ca.crt": files.ca.read_bytes(),
        }
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": secret, "namespace": NAMESPACE},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
        )
    return out, d


async def check_operations(
    cluster: Cluster, acceptors: list[Any], coordinators: list[Any], console: Any, txn_id: str, certs: Path
) -> None:
    """``paxos-commit txn show|list|resolve|retry`` against the pods (over mTLS, as an
    admin), and the console pod's API (its own admin certificate), on a committed transaction."""
    where = [
        "--acceptors", ",".join(f"{LOCAL_IP}:{cluster.local(a, 'grpc')}" for a in acceptors),
        "--coordinators", ",".join(f"{LOCAL_IP}:{cluster.local(c, 'grpc')}" for c in coordinators),
        "--certs", str(certs),
    ]  # fmt: skip

    async def cli(*args: str) -> str:
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "paxos_commit", "--log-level", "WARNING", "txn", *args, *where],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    shown = json.loads(await cli("show", txn_id, "--json"))
    assert shown["outcome"] == "committed"
    if shown["collection"].startswith("collected at acceptors"):
        # The RM acknowledged and every acceptor collected it: only the outcome is left.
        assert shown["instances"] == {}
    else:  # (collection may follow at any moment, acceptor by acceptor: the RM acknowledged)
        assert set(shown["instances"]) in ({"@registrar", "rm-chart"}, set()), shown
    # Listed whether collected or not (a collected one by its compact outcome record).
    listed = json.loads(await cli("list", "--outcome", "committed", "--json"))
    assert [d["txn_id"] for d in listed] == [txn_id], (shown, listed)
    resolved = json.loads(await cli("resolve", txn_id, "--abort", "--json"))
    assert resolved["outcome"] == "committed" and resolved["changed"] is False
    assert "already decided" in await cli("retry", txn_id)

    base = f"http://{LOCAL_IP}:{cluster.local(console, 'http')}"

    def get(path: str) -> Any:
        with urllib.request.urlopen(base + path, timeout=10) as reply:
            return json.loads(reply.read())

    page = await asyncio.to_thread(get, f"/api/txn/{txn_id}")
    assert page["outcome"] == "committed"
    overview = await asyncio.to_thread(get, "/api/overview")
    assert all(h["status"] == "SERVING" for h in overview["health"]), overview["health"]


# ---------------------------------------------------------------- documentation


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    params = re.findall(r"(?m)^\s*## @param (\S+) \S", text)
    assert len(params) == len(set(params))
    for key in leaf_keys(values):
        assert any(key == p or key.startswith(p + ".") for p in params), f"{key} has no ## @param line"
    schema = json.loads((CHART / "values.schema.json").read_text())
    docs = (REPO / "docs" / "helm.md").read_text()
    documented = re.findall(r"(?m)^\| `([\w.]+)` \|", docs.split("## Values", 1)[1].split("\n## ", 1)[0])
    assert documented == params  # docs/helm.md lists every value, in values.yaml's order
    for p in params:
        node, props = values, schema
        for part in p.split("."):
            node = node[part]
            props = props["properties"][part]
        assert props.get("description"), f"{p}: no description in values.schema.json"
