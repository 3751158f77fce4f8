"""Run a rendered chart's pods as local processes, the way a kubelet would, on one host.

What a kubelet does and we do too: one pod per StatefulSet ordinal (named
``<statefulset>-<ordinal>``, that name as its host name, in its own UTS namespace) and per
Deployment replica; the container's environment is the image's ``ENV`` (read from the
Dockerfile), then ``envFrom`` (the rendered ConfigMaps and Secrets), then ``env`` (values with
``$(VAR)`` expansion, and the downward API); ``$(VAR)`` is expanded in command and args;
Secret and ConfigMap volumes hold the rendered objects' files; a PersistentVolumeClaim or
emptyDir starts empty.

What cannot exist on one host, and only that, is replaced, each replacement recorded as a
:class:`Substitution` so a test can assert the whole mapping:

- ``pod-ip``: every pod's IP (``status.podIP``) is 127.0.0.1; ``0.0.0.0:<port>`` (listen
  on the pod IP) becomes ``127.0.0.1:<local port>``;
- ``pod-dns``: ``<pod>.<headless service>...:<port>`` becomes ``127.0.0.1:<local port>`` of
  that pod, and the port must be one of that pod's container ports;
- ``service``: ``<service>...:<port>`` (a cluster IP, which balances over the pods its
  selector picks) becomes the local port of the first of those pods, through the Service's
  ``targetPort``;
- ``port``: all pods share one host, so each (pod, container port) gets its own free local
  port, in ``--*-port N`` flags and ``*_PORT`` variables as well;
- ``path``: each volume mount path becomes a folder under the test's tmp_path;
- ``workdir``, ``PATH``: the image's working directory and executables are local ones.
"""

from __future__ import annotations

import base64
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LOCAL_IP = "127.0.0.1"


@dataclass(frozen=True)
class Substitution:
    kind: str
    spec: str
    local: str


@dataclass
class Pod:
    """One pod of a rendered workload."""

    name: str
    owner: dict[str, Any]
    ordinal: int
    subdomain: str | None
    namespace: str

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.owner["spec"]["template"]["spec"]
        return spec

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.owner["spec"]["template"]["metadata"].get("labels", {})
        return labels

    @property
    def container(self) -> dict[str, Any]:
        containers = self.spec["containers"]
        assert len(containers) == 1, f"{self.name}: one container expected"
        container: dict[str, Any] = containers[0]
        return container

    @property
    def container_ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.container.get("ports", [])}


def pods_of(manifests: list[dict[str, Any]], namespace: str) -> list[Pod]:
    """The pods a cluster would run for the rendered StatefulSets and Deployments."""
    pods: list[Pod] = []
    # A HorizontalPodAutoscaler starts its target at minReplicas.
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]: int(h["spec"].get("minReplicas", 1))
        for h in manifests
        if h["kind"] == "HorizontalPodAutoscaler"
    }
    for m in manifests:
        if m["kind"] == "StatefulSet":
            name = m["metadata"]["name"]
            pods += [
                Pod(f"{name}-{i}", m, i, m["spec"]["serviceName"], namespace)
                for i in range(int(m["spec"]["replicas"]))
            ]
        elif m["kind"] == "Deployment":
            name = m["metadata"]["name"]
            # Deployment pods are <deployment>-<template hash>-<random>: no stable name.
            pods += [
                Pod(f"{name}-7d9f8b6c4-local{i}", m, i, None, namespace)
                for i in range(scaled.get(name, int(m["spec"].get("replicas", 1))))
            ]
    return pods


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOCAL_IP, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is a literal ``$``; an undefined reference
    is left as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i):
            end = text.find(")", i + 2)
            name = text[i + 2 : end] if end != -1 else ""
            if end != -1 and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) and name in env:
                out.append(env[name])
                i = end + 1
            else:
                out.append("$(")
                i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def image_env(dockerfile: Path = REPO / "Dockerfile") -> tuple[dict[str, str], str | None]:
    """The final stage's ENV and WORKDIR of the Dockerfile (what the image adds to a container)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stage = re.split(r"(?m)^FROM\s", text)[-1]
    env: dict[str, str] = {}
    workdir = None
    for line in stage.splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0] == "ENV":
            for item in shlex.split(words[1]):
                key, _, value = item.partition("=")
                env[key] = value
        elif len(words) == 2 and words[0] == "WORKDIR":
            workdir = words[1].strip()
    return env, workdir


@dataclass
class Cluster:
    """The rendered release as local processes: ports, DNS and volumes mapped explicitly."""

    manifests: list[dict[str, Any]]
    namespace: str
    root: Path
    cluster_domain: str = "cluster.local"
    pods: list[Pod] = field(init=False)
    #: (pod name, container port) -> local port: the explicit port mapping.
    ports: dict[tuple[str, int], int] = field(init=False)
    #: DNS name -> pod name, for every pod under a headless Service.
    dns: dict[str, str] = field(init=False)
    #: DNS name -> Service manifest, for every Service with a cluster IP.
    services: dict[str, dict[str, Any]] = field(init=False)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pods = pods_of(self.manifests, self.namespace)
        keys = [(p.name, port) for p in self.pods for port in p.container_ports.values()]
        self.ports = dict(zip(keys, free_ports(len(keys)), strict=True))
        self.dns = {}
        for p in self.pods:
            if p.subdomain:
                base = f"{p.name}.{p.subdomain}"
                for suffix in ("", f".{self.namespace}", f".{self.namespace}.svc"):
                    self.dns[base + suffix] = p.name
                self.dns[f"{base}.{self.namespace}.svc.{self.cluster_domain}"] = p.name
        self.services = {}
        for m in self.manifests:
            if m["kind"] == "Service" and m["spec"].get("clusterIP") != "None":
                base = m["metadata"]["name"]
                for suffix in (
                    "",
                    f".{self.namespace}",
                    f".{self.namespace}.svc",
                    f".{self.namespace}.svc.{self.cluster_domain}",
                ):
                    self.services[base + suffix] = m

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)

    def local(self, pod: Pod | str, port: int | str) -> int:
        """The local port standing for a container port (given by number or name)."""
        p = self.pod(pod) if isinstance(pod, str) else pod
        number = p.container_ports[port] if isinstance(port, str) else port
        return self.ports[(p.name, number)]

    def find(self, kind: str, name: str) -> dict[str, Any]:
        found = [m for m in self.manifests if m["kind"] == kind and m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name} is not rendered"
        return found[0]

    def service_target(self, svc: dict[str, Any], port: int) -> tuple[Pod, int]:
        """Where a connection to a Service port lands: a cluster IP balances over the pods
        its selector picks; on one host it is the first of them (a recorded substitution)."""
        selector = svc["spec"].get("selector", {})
        chosen = [p for p in self.pods if all(p.labels.get(k) == v for k, v in selector.items())]
        assert chosen, f"Service {svc['metadata']['name']} selects no pod of the release"
        (spec_port,) = [sp for sp in svc["spec"]["ports"] if int(sp["port"]) == port] or [None]
        assert spec_port is not None, f"Service {svc['metadata']['name']} has no port {port}"
        target = spec_port.get("targetPort", port)
        pod = chosen[0]
        number = pod.container_ports[target] if isinstance(target, str) else int(target)
        assert number in pod.container_ports.values(), f"{pod.name}: {target} is not a container port"
        return pod, number

    # ------------------------------------------------------------ the container's view

    def volume_dir(self, pod: Pod, volume: str) -> Path:
        return self.root / pod.name / "volumes" / volume

    def spec_env(self, pod: Pod) -> dict[str, str]:
        """The variables the pod spec defines (envFrom, then env), as a kubelet resolves them;
        ``$(VAR)`` in values and in command and args sees only these."""
        c = pod.container
        env: dict[str, str] = {}
        for src in c.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = self.find("ConfigMap", src["configMapRef"]["name"]).get("data", {})
            else:
                secret = self.find("Secret", src["secretRef"]["name"])
                data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            env.update({prefix + k: str(v) for k, v in data.items()})
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
                continue
            src = e["valueFrom"]
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                fields = {
                    "metadata.name": pod.name,
                    "metadata.namespace": pod.namespace,
                    "status.podIP": LOCAL_IP,  # every pod's IP, on one host
                }
                assert path in fields, f"{pod.name}: downward API field {path} not emulated"
                env[e["name"]] = fields[path]
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                data = self.find("Secret", ref["name"])["data"]
                env[e["name"]] = base64.b64decode(data[ref["key"]]).decode()
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                env[e["name"]] = self.find("ConfigMap", ref["name"])["data"][ref["key"]]
            else:
                raise AssertionError(f"{pod.name}: env source {src} not emulated")
        return env

    def spec_argv(self, pod: Pod, env: dict[str, str]) -> list[str]:
        c = pod.container
        assert "command" in c, f"{pod.name}: the chart sets command explicitly"
        return [expand(str(a), env) for a in [*c["command"], *c.get("args", [])]]

    # ------------------------------------------------------------ the local mapping

    def localize(self, pod: Pod, text: str, *, port_value: bool = False) -> tuple[str, list[Substitution]]:
        """Replace what cannot exist on one host in one argument or variable value."""
        subs: list[Substitution] = []
        mounts = sorted(pod.container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"].rstrip("/")))

        def address(m: re.Match[str]) -> str:
            host, port = m.group(1), int(m.group(2))
            if host == "0.0.0.0":
                assert port in pod.container_ports.values(), (
                    f"{pod.name} listens on {port}, not a container port"
                )
                new = f"{LOCAL_IP}:{self.ports[(pod.name, port)]}"
                subs.append(Substitution("pod-ip", m.group(0), new))
                return new
            if host in self.dns:
                target = self.pod(self.dns[host])
                assert port in target.container_ports.values(), (
                    f"{host}:{port} is no container port of {target.name}"
                )
                new = f"{LOCAL_IP}:{self.ports[(target.name, port)]}"
                subs.append(Substitution("pod-dns", m.group(0), new))
                return new
            if host in self.services:
                target, number = self.service_target(self.services[host], port)
                new = f"{LOCAL_IP}:{self.ports[(target.name, number)]}"
                subs.append(Substitution("service", m.group(0), new))
                return new
            assert not host.endswith(f".svc.{self.cluster_domain}"), (
                f"{m.group(0)}: no such pod in the release"
            )
            return m.group(0)

        def flag_port(m: re.Match[str]) -> str:
            port = int(m.group(3))
            assert port in pod.container_ports.values(), f"{pod.name}: {m.group(0)} is not a container port"
            new = f"{m.group(1)}{m.group(2)}{self.ports[(pod.name, port)]}"
            subs.append(Substitution("port", m.group(0), new))
            return new

        out = re.sub(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})(?![\d])", address, text)
        out = re.sub(r"(--[a-z-]*port)([ =])(\d{1,5})\b", flag_port, out)
        if port_value and re.fullmatch(r"\d{1,5}", out):
            port = int(out)
            assert port in pod.container_ports.values(), f"{pod.name}: port {port} is not a container port"
            new = str(self.ports[(pod.name, port)])
            subs.append(Substitution("port", out, new))
            out = new
        if mounts:
            # One pass over all mount paths, so a replacement is never replaced again.
            local_of = {m["mountPath"].rstrip("/"): str(self.volume_dir(pod, m["name"])) for m in mounts}
            pattern = "|".join(re.escape(path) for path in local_of)

            def path(m: re.Match[str]) -> str:
                subs.append(Substitution("path", m.group(1), local_of[m.group(1)]))
                return local_of[m.group(1)]

            out = re.sub(rf"(?<![\w.-])({pattern})(?=/|$|[\"'\s])", path, out)
        return out, subs

    def local_process(self, pod: Pod) -> tuple[list[str], dict[str, str], Path, list[Substitution]]:
        """argv, environment and working directory of the pod's container, localized."""
        defined = self.spec_env(pod)
        argv = self.spec_argv(pod, defined)
        # The container runtime adds the image's ENV and HOSTNAME; the pod spec's win.
        image, image_workdir = image_env()
        env = {**image, "HOSTNAME": pod.name, **defined}
        subs: list[Substitution] = []
        local_argv = []
        for i, arg in enumerate(argv):
            port_value = i > 0 and re.fullmatch(r"--[a-z-]*port", argv[i - 1]) is not None
            new, s = self.localize(pod, arg, port_value=port_value)
            local_argv.append(new)
            subs += s
        local_env = {}
        for k, v in env.items():
            new, s = self.localize(pod, v, port_value=k.endswith("_PORT"))
            local_env[k] = new
            subs += s
        bindir = str(Path(sys.executable).parent)
        local_env["PATH"] = f"{bindir}:/usr/bin:/bin"
        subs.append(Substitution("PATH", env.get("PATH", "<image PATH>"), local_env["PATH"]))
        workdir = self.root / pod.name / "workdir"
        workdir.mkdir(parents=True, exist_ok=True)
        subs.append(Substitution("workdir", image_workdir or "/", str(workdir)))
        # Everything that differs is explained by the recorded substitutions.
        assert [unlocalize(a, subs) for a in local_argv] == argv, (argv, local_argv)
        assert {k: unlocalize(v, subs) for k, v in local_env.items() if k != "PATH"} == {
            k: v for k, v in env.items() if k != "PATH"
        }
        return local_argv, local_env, workdir, subs

    def prepare_volumes(self, pod: Pod) -> None:
        for v in pod.spec.get("volumes", []):
            d = self.volume_dir(pod, v["name"])
            d.mkdir(parents=True, exist_ok=True)
            if "secret" in v:
                data = self.find("Secret", v["secret"]["secretName"]).get("data", {})
                for k, b64 in data.items():
                    (d / k).write_bytes(base64.b64decode(b64))
            elif "configMap" in v:
                for k, text in self.find("ConfigMap", v["configMap"]["name"]).get("data", {}).items():
                    (d / k).write_text(text)
            else:
                assert "emptyDir" in v, f"{pod.name}: volume {v} not emulated"
        for t in pod.owner["spec"].get("volumeClaimTemplates", []):
            self.volume_dir(pod, t["metadata"]["name"]).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ processes

    def start(self, pods: Iterable[Pod]) -> dict[str, list[Substitution]]:
        """Start the pods' containers; returns each pod's substitutions."""
        applied = {}
        for pod in pods:
            self.prepare_volumes(pod)
            argv, env, workdir, subs = self.local_process(pod)
            log = (self.root / pod.name / "log").open("wb")
            self.procs[pod.name] = subprocess.Popen(
                [sys.executable, "-c", _IN_POD_UTS, pod.name, *argv],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            applied[pod.name] = subs
        return applied

    def log(self, pod: str) -> str:
        return (self.root / pod / "log").read_text(errors="replace")

    def check_alive(self, pod: str) -> None:
        proc = self.procs[pod]
        if proc.poll() is not None:
            raise AssertionError(f"{pod} exited with {proc.returncode}:\n{self.log(pod)[-3000:]}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def unlocalize(text: str, subs: list[Substitution]) -> str:
    """Undo substitutions in one pass (longest local text first) to get the spec's text back."""
    spec_of: dict[str, str] = {}
    for s in subs:
        if s.kind in ("PATH", "workdir"):
            continue
        assert spec_of.setdefault(s.local, s.spec) == s.spec, f"{s.local} stands for two things"
    if not spec_of:
        return text
    pattern = "|".join(re.escape(local) for local in sorted(spec_of, key=len, reverse=True))
    return re.sub(pattern, lambda m: spec_of[m.group(0)], text)


# Started as `python -c _IN_POD_UTS HOSTNAME ARGV...`: a new UTS namespace whose host name
# is the pod's (as in a pod, where `--id auto` reads it), then exec of the container's
# command. As root, a UTS namespace alone; otherwise inside a user namespace that maps only
# our own uid and gid, so files stay ours.
_IN_POD_UTS = r"""
import ctypes, os, socket, sys
hostname, argv = sys.argv[1], sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUTS, CLONE_NEWUSER = 0x04000000, 0x10000000
if libc.unshare(CLONE_NEWUTS) != 0:
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWUTS) != 0:
        sys.exit("cannot make a UTS namespace for host name %s: errno %d" % (hostname, ctypes.get_errno()))
    for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
socket.sethostname(hostname)
os.execvpe(argv[0], argv, os.environ)
"""


def can_set_hostname() -> str | None:
    """None if _IN_POD_UTS works here, else why not."""
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _IN_POD_UTS,
            "probe-0",
            sys.executable,
            "-c",
            "import socket; print(socket.gethostname())",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if r.returncode == 0 and r.stdout.strip() == "probe-0":
        return None
    return (r.stderr or r.stdout).strip() or f"exit {r.returncode}"


__all__ = [
    "LOCAL_IP",
    "Cluster",
    "Pod",
    "Substitution",
    "can_set_hostname",
    "expand",
    "pods_of",
    "unlocalize",
]
