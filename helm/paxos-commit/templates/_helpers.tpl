{{/*
Helpers of the paxos-commit chart. Every name starts with "paxos-commit." so that a parent
chart's helpers cannot collide with them.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "paxos-commit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: "<release>-<chart>", or the release name alone when it
already contains the chart name. Kept to 40 characters so that "-acceptor-headless" and a
pod ordinal still fit in 63.
*/}}
{{- define "paxos-commit.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "paxos-commit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "paxos-commit.acceptor.fullname" -}}
{{- printf "%s-acceptor" (include "paxos-commit.fullname" .) -}}
{{- end -}}

{{/* The acceptors' headless Service: it gives every acceptor pod a stable DNS name. */}}
{{- define "paxos-commit.acceptor.headlessServiceName" -}}
{{- printf "%s-acceptor-headless" (include "paxos-commit.fullname" .) -}}
{{- end -}}

{{- define "paxos-commit.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "paxos-commit.fullname" .) -}}
{{- end -}}

{{- define "paxos-commit.console.fullname" -}}
{{- printf "%s-console" (include "paxos-commit.fullname" .) -}}
{{- end -}}

{{- define "paxos-commit.console.selectorLabels" -}}
{{ include "paxos-commit.selectorLabels" . }}
app.kubernetes.io/component: console
{{- end -}}

{{- define "paxos-commit.console.labels" -}}
{{ include "paxos-commit.labels" . }}
app.kubernetes.io/component: console
{{- end -}}

{{- define "paxos-commit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "paxos-commit.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels every resource carries. */}}
{{- define "paxos-commit.labels" -}}
helm.sh/chart: {{ include "paxos-commit.chart" . }}
app.kubernetes.io/name: {{ include "paxos-commit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paxos-commit
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the release (both components). */}}
{{- define "paxos-commit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paxos-commit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "paxos-commit.acceptor.selectorLabels" -}}
{{ include "paxos-commit.selectorLabels" . }}
app.kubernetes.io/component: acceptor
{{- end -}}

{{- define "paxos-commit.coordinator.selectorLabels" -}}
{{ include "paxos-commit.selectorLabels" . }}
app.kubernetes.io/component: coordinator
{{- end -}}

{{- define "paxos-commit.acceptor.labels" -}}
{{ include "paxos-commit.labels" . }}
app.kubernetes.io/component: acceptor
{{- end -}}

{{- define "paxos-commit.coordinator.labels" -}}
{{ include "paxos-commit.labels" . }}
app.kubernetes.io/component: coordinator
{{- end -}}

{{/*
metadata.annotations (commonAnnotations merged with .extra), or nothing. Use as
  {{- with include "paxos-commit.annotations" (dict "context" . "extra" ...) }}
  {{- . | nindent 2 }}
  {{- end }}
*/}}
{{- define "paxos-commit.annotations" -}}
{{- $all := merge (dict) (.extra | default dict) (.context.Values.commonAnnotations | default dict) -}}
{{- if $all -}}
annotations:
  {{- toYaml $all | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "paxos-commit.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* F: the number of acceptors that may fail, from replicaCount = 2F+1. */}}
{{- define "paxos-commit.acceptor.f" -}}
{{- div (sub (int .Values.acceptor.replicaCount) 1) 2 -}}
{{- end -}}

{{/* The PDB's maxUnavailable for acceptors: acceptor.pdb.maxUnavailable, or F. */}}
{{- define "paxos-commit.acceptor.maxUnavailable" -}}
{{- if eq (toString .Values.acceptor.pdb.maxUnavailable) "" -}}
{{- include "paxos-commit.acceptor.f" . -}}
{{- else -}}
{{- int .Values.acceptor.pdb.maxUnavailable -}}
{{- end -}}
{{- end -}}

{{/* The stable DNS name of acceptor <index>: its pod under the headless Service. */}}
{{- define "paxos-commit.acceptor.host" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "paxos-commit.acceptor.fullname" .context) (int .index) (include "paxos-commit.acceptor.headlessServiceName" .context) .context.Release.Namespace .context.Values.clusterDomain -}}
{{- end -}}

{{/*
The coordinators' --acceptors list: every acceptor's address, in acceptor id order (pod
ordinal = acceptor id = position in this list).
*/}}
{{- define "paxos-commit.acceptor.addresses" -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.acceptor.replicaCount) -}}
{{- $hosts = append $hosts (printf "%s:%d" (include "paxos-commit.acceptor.host" (dict "context" $ "index" $i)) (int $.Values.acceptor.ports.grpc)) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{- define "paxos-commit.acceptor.postgresSecretName" -}}
{{- default (printf "%s-postgres" (include "paxos-commit.acceptor.fullname" .)) .Values.acceptor.postgres.existingSecret -}}
{{- end -}}

{{/*
A probe: .probe is the values block (type, timings), .port the container port, .service the
grpc.health.v1 service a "grpc" probe asks for. A "tcpSocket" probe only connects to the
port: the process is alive and listening, whatever its dependencies.
*/}}
{{- define "paxos-commit.probe" -}}
{{- if eq .probe.type "grpc" -}}
grpc:
  {{- /* With TLS on, the kubelet (which presents no certificate) asks the plain-text health port. */}}
  port: {{ int (.healthPort | default .port) }}
  service: {{ .service | quote }}
{{- else -}}
tcpSocket:
  port: {{ int .port }}
{{- end }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
successThreshold: {{ .probe.successThreshold }}
{{- end -}}

{{/*
Pod anti-affinity from a preset ("soft" or "hard"): spread a component's pods over nodes, so
that one node failure takes at most one acceptor.
*/}}
{{- define "paxos-commit.podAntiAffinity" -}}
{{- if eq .preset "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- .selector | nindent 10 }}
{{- else if eq .preset "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .selector | nindent 12 }}
{{- end }}
{{- end -}}

{{/*
validateValues: refuse value combinations that would break the protocol's guarantees.
Called by every component template, so `helm template` and `helm install` fail before
anything reaches a cluster.
*/}}
{{- define "paxos-commit.validateValues" -}}
{{- $messages := list -}}
{{- $messages = append $messages (include "paxos-commit.validateValues.acceptorCount" .) -}}
{{- $messages = append $messages (include "paxos-commit.validateValues.membership" .) -}}
{{- $messages = append $messages (include "paxos-commit.validateValues.storage" .) -}}
{{- $messages = append $messages (include "paxos-commit.validateValues.pdb" .) -}}
{{- $messages = append $messages (include "paxos-commit.validateValues.coordinator" .) -}}
{{- $messages = append $messages (include "paxos-commit.validateValues.ports" .) -}}
{{- $messages = append $messages (include "paxos-commit.validateValues.tls" .) -}}
{{- $messages = without $messages "" -}}
{{- if $messages -}}
{{- fail (printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages)) -}}
{{- end -}}
{{- end -}}

{{- define "paxos-commit.validateValues.acceptorCount" -}}
{{- $n := int .Values.acceptor.replicaCount -}}
{{- if lt $n 1 -}}
paxos-commit: acceptor.replicaCount
    There must be at least one acceptor (2F+1 with F >= 0), got {{ $n }}.
{{- else if eq (mod $n 2) 0 -}}
paxos-commit: acceptor.replicaCount
    The acceptor count must be odd (2F+1), got {{ $n }}: a commit needs a majority ({{ add (div $n 2) 1 }} of {{ $n }}), so {{ $n }} acceptors tolerate {{ div (sub $n 1) 2 }} failure(s), as many as {{ sub $n 1 }} do, with one more machine that can fail. Use {{ sub $n 1 }} or {{ add $n 1 }}.
{{- end -}}
{{- end -}}

{{/*
The acceptor set is fixed for the life of a release: on an upgrade, a different acceptor
count would change the majorities and could undo decided transactions. `lookup` sees the
installed StatefulSet (it returns nothing in `helm template` and lint, where there is none).
*/}}
{{- define "paxos-commit.validateValues.membership" -}}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "paxos-commit.acceptor.fullname" .) -}}
{{- if and $sts $sts.spec -}}
{{- $was := int $sts.spec.replicas -}}
{{- if ne $was (int .Values.acceptor.replicaCount) -}}
paxos-commit: acceptor.replicaCount
    This release runs {{ $was }} acceptors; changing the count to {{ .Values.acceptor.replicaCount }} would change the majorities and can undo decided transactions. Keep acceptor.replicaCount={{ $was }} (a different acceptor count needs a new release, after every transaction here is decided).
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "paxos-commit.validateValues.storage" -}}
{{- $type := .Values.acceptor.storage.type -}}
{{- if and (eq $type "sqlite") (not .Values.acceptor.persistence.enabled) -}}
paxos-commit: acceptor.persistence.enabled
    SQLite without persistent volumes is refused: an acceptor's state would vanish with its pod, and an acceptor that forgets what it promised or accepted breaks atomicity. Set acceptor.persistence.enabled=true, or acceptor.storage.type=postgres with one database per acceptor.
{{- else if eq $type "postgres" -}}
{{- if and (not .Values.acceptor.postgres.existingSecret) (ne (len .Values.acceptor.postgres.urls) (int .Values.acceptor.replicaCount)) -}}
paxos-commit: acceptor.postgres
    Postgres storage needs one database URL per acceptor: set acceptor.postgres.existingSecret (keys acceptor-0 ... acceptor-{{ sub (int .Values.acceptor.replicaCount) 1 }}) or exactly {{ .Values.acceptor.replicaCount }} acceptor.postgres.urls (got {{ len .Values.acceptor.postgres.urls }}).
{{- else if gt (len (uniq .Values.acceptor.postgres.urls)) 0 -}}
{{- if ne (len (uniq .Values.acceptor.postgres.urls)) (len .Values.acceptor.postgres.urls) -}}
paxos-commit: acceptor.postgres.urls
    Two acceptors share a database URL: each acceptor needs its own database, or one failure takes several acceptors' state.
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "paxos-commit.validateValues.pdb" -}}
{{- if and .Values.acceptor.pdb.create (ne (toString .Values.acceptor.pdb.maxUnavailable) "") -}}
{{- $f := int (include "paxos-commit.acceptor.f" .) -}}
{{- if gt (int .Values.acceptor.pdb.maxUnavailable) $f -}}
paxos-commit: acceptor.pdb.maxUnavailable
    A disruption budget of {{ .Values.acceptor.pdb.maxUnavailable }} acceptors would let voluntary evictions take the quorum: with {{ .Values.acceptor.replicaCount }} acceptors at most F={{ $f }} may be down. Leave it empty (F) or set it to at most {{ $f }}.
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "paxos-commit.validateValues.coordinator" -}}
{{- if and (not .Values.coordinator.autoscaling.enabled) (lt (int .Values.coordinator.replicaCount) 1) -}}
paxos-commit: coordinator.replicaCount
    At least one coordinator replica is needed, got {{ .Values.coordinator.replicaCount }}.
{{- else if and .Values.coordinator.autoscaling.enabled (gt (int .Values.coordinator.autoscaling.minReplicas) (int .Values.coordinator.autoscaling.maxReplicas)) -}}
paxos-commit: coordinator.autoscaling
    minReplicas ({{ .Values.coordinator.autoscaling.minReplicas }}) exceeds maxReplicas ({{ .Values.coordinator.autoscaling.maxReplicas }}).
{{- end -}}
{{- end -}}

{{- define "paxos-commit.validateValues.ports" -}}
{{- $bad := list -}}
{{- range $component := list "acceptor" "coordinator" -}}
{{- $ports := (index $.Values $component).ports -}}
{{- if or (eq (int $ports.grpc) (int $ports.metrics)) (eq (int $ports.grpc) (int $ports.health)) (eq (int $ports.metrics) (int $ports.health)) -}}
{{- $bad = append $bad $component -}}
{{- end -}}
{{- end -}}
{{- if $bad -}}
paxos-commit: {{ join ", " $bad }} ports
    The gRPC, metrics and health ports of a component must differ.
{{- end -}}
{{- end -}}

{{/*
NetworkPolicy "from" peers allowed to a component's gRPC port, as a list item body; empty
output means "from anywhere" (networkPolicy.allowExternal).
*/}}
{{- define "paxos-commit.networkPolicy.clientPeers" -}}
{{- if not .Values.networkPolicy.allowExternal -}}
- podSelector:
    matchLabels:
      {{ include "paxos-commit.fullname" . }}-client: "true"
{{- with .Values.networkPolicy.clients }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The metrics port's ingress rule. */}}
{{- define "paxos-commit.networkPolicy.metricsRule" -}}
- ports:
    - port: {{ .port }}
      protocol: TCP
  {{- with .context.Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
PromQL label matchers of each component's scraped series. The Prometheus Operator names a
ServiceMonitor target's job after its Service.
*/}}
{{- define "paxos-commit.metrics.coordinatorSelector" -}}
namespace="{{ .Release.Namespace }}", job="{{ include "paxos-commit.coordinator.fullname" . }}"
{{- end -}}

{{- define "paxos-commit.metrics.acceptorSelector" -}}
namespace="{{ .Release.Namespace }}", job="{{ include "paxos-commit.acceptor.headlessServiceName" . }}"
{{- end -}}

{{/* The Secret (tls.crt, tls.key, ca.crt) each component mounts when TLS is on. */}}
{{- define "paxos-commit.acceptor.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "paxos-commit.acceptor.fullname" .)) .Values.tls.acceptorSecret -}}
{{- end -}}

{{- define "paxos-commit.coordinator.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "paxos-commit.coordinator.fullname" .)) .Values.tls.coordinatorSecret -}}
{{- end -}}

{{- define "paxos-commit.console.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "paxos-commit.console.fullname" .)) .Values.tls.consoleSecret -}}
{{- end -}}

{{/* The cert-manager issuer of the release's certificates: the configured one, or the chart's own CA. */}}
{{- define "paxos-commit.tls.issuerName" -}}
{{- default (printf "%s-ca" (include "paxos-commit.fullname" .)) .Values.tls.certManager.issuerRef.name -}}
{{- end -}}

{{/* The services' security flags: --certs <mount> (mTLS; plain-text health port for probes) or --insecure. */}}
{{- define "paxos-commit.tls.args" -}}
{{- if .context.Values.tls.enabled -}}
- --certs
- {{ .context.Values.tls.mountPath }}
- --health-port
- {{ .health | quote }}
{{- else -}}
- --insecure
{{- end -}}
{{- end -}}

{{- define "paxos-commit.validateValues.tls" -}}
{{- if and .Values.tls.enabled (not .Values.tls.certManager.enabled) (or (not .Values.tls.acceptorSecret) (not .Values.tls.coordinatorSecret)) -}}
paxos-commit: tls
    TLS is on (tls.enabled) but nothing provides the certificates: set tls.certManager.enabled=true (cert-manager issues them), or both tls.acceptorSecret and tls.coordinatorSecret (existing Secrets with tls.crt, tls.key, ca.crt). tls.enabled=false runs without TLS and without authentication: anyone who reaches a pod can forge votes, ballots and outcomes.
{{- else if and .Values.tls.enabled .Values.console.enabled (not .Values.tls.certManager.enabled) (not .Values.tls.consoleSecret) -}}
paxos-commit: tls
    TLS is on and the console is enabled, but nothing provides the console's admin certificate: set tls.consoleSecret (an existing Secret with tls.crt, tls.key, ca.crt naming spiffe://paxos-commit/admin/<name>) or tls.certManager.enabled=true.
{{- end -}}
{{- end -}}
