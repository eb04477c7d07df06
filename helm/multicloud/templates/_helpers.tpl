{{/* Names, labels and the pieces every Ray container shares. */}}

{{- define "multicloud.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name stays short: KubeRay derives pod and Service names from it. */}}
{{- define "multicloud.fullname" -}}
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

{{- define "multicloud.selectorLabels" -}}
app.kubernetes.io/name: {{ include "multicloud.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "multicloud.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "multicloud.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "multicloud.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "multicloud.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "multicloud.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "multicloud.tokenSecretName" -}}
{{- default (printf "%s-ray-token" (include "multicloud.fullname" .)) .Values.rayAuth.existingSecret -}}
{{- end -}}

{{- define "multicloud.storeClaimName" -}}
{{- default (printf "%s-store" (include "multicloud.fullname" .)) .Values.store.sqlite.existingClaim -}}
{{- end -}}

{{- define "multicloud.rbacNamespace" -}}
{{- default .Release.Namespace .Values.rbac.namespace -}}
{{- end -}}

{{/* Where the store, the saved service config and the simulated clouds' journals live. */}}
{{- define "multicloud.dataDir" -}}/var/lib/multicloud{{- end -}}

{{/*
Checks the schema cannot express (it sees one value at a time); each fails the render with
a message that says what to change.
*/}}
{{- define "multicloud.validate" -}}
{{- $v := .Values -}}
{{- if and (eq $v.store.type "sqlite") (gt (int $v.scheduler.replicas) 1) -}}
{{- fail (printf "scheduler.replicas=%d with store.type=sqlite: a SQLite file on a ReadWriteOnce volume serves one scheduler only; set scheduler.replicas=1 (or use store.type=postgresql)" (int $v.scheduler.replicas)) -}}
{{- end -}}
{{- if and (eq $v.store.type "postgresql") (not $v.store.postgresql.existingSecret) -}}
{{- fail "store.type=postgresql needs store.postgresql.existingSecret: the name of a Secret holding the URL (kubectl create secret generic NAME --from-literal=url=postgresql://USER@HOST:5432/DB)" -}}
{{- end -}}
{{- if and (eq $v.store.type "sqlite") $v.workerGroups -}}
{{- fail "workerGroups with store.type=sqlite: the SQLite file lives on the head pod's volume, but Ray may restart the scheduler actor on a worker where that file is absent; use store.type=postgresql to add worker groups" -}}
{{- end -}}
{{- range $i, $g := $v.workerGroups -}}
{{- if and (hasKey $g "minReplicas") (hasKey $g "maxReplicas") (gt (int $g.minReplicas) (int $g.maxReplicas)) -}}
{{- fail (printf "workerGroups[%d] (%s): minReplicas %d > maxReplicas %d" $i $g.name (int $g.minReplicas) (int $g.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- $rayPorts := list (int $v.ray.ports.gcs) (int $v.ray.ports.dashboard) (int $v.ray.ports.client) (int $v.ray.ports.metrics) -}}
{{- if has (int $v.metrics.port) $rayPorts -}}
{{- fail (printf "metrics.port=%d collides with a Ray port (ray.ports); pick another" (int $v.metrics.port)) -}}
{{- end -}}
{{- if ne (len (uniq $rayPorts)) 4 -}}
{{- fail "ray.ports: gcs, dashboard, client and metrics must be four different ports" -}}
{{- end -}}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled=true" -}}
{{- end -}}
{{- range $i, $e := $v.extraEnv -}}
{{- if and (hasKey $e "value") (hasKey $e "valueFrom") -}}
{{- fail (printf "extraEnv[%d] (%s): give value or valueFrom, not both" $i $e.name) -}}
{{- end -}}
{{- if regexMatch "(?i)(secret|password|passwd|token|credential|private|key)" $e.name -}}
{{- if or (hasKey $e "value") (not (hasKey (default (dict) $e.valueFrom) "secretKeyRef")) -}}
{{- fail (printf "extraEnv[%d] (%s) looks like a credential: pass it with valueFrom.secretKeyRef, never as a plain value or from a ConfigMap" $i $e.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod labels: ours, plus the one Azure Workload Identity's webhook looks for. */}}
{{- define "multicloud.podLabels" -}}
{{ include "multicloud.selectorLabels" . }}
{{- if .Values.serviceAccount.workloadIdentity.azure.clientId }}
azure.workload.identity/use: "true"
{{- end }}
{{- end -}}

{{- define "multicloud.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "multicloud.securityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
Env of every container: Ray token auth (the token only ever by secretKeyRef), the store,
static cloud keys by Secret reference, and extraEnv.
*/}}
{{- define "multicloud.env" -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "multicloud.tokenSecretName" . }}
      key: {{ .Values.rayAuth.key }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: MULTICLOUD_HOME
  value: {{ include "multicloud.dataDir" . }}
- name: HOME
  value: /home/multicloud
{{- if eq .Values.store.type "postgresql" }}
- name: MULTICLOUD_STORE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.postgresql.existingSecret }}
      key: {{ .Values.store.postgresql.urlKey }}
{{- if .Values.store.postgresql.passwordKey }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.postgresql.existingSecret }}
      key: {{ .Values.store.postgresql.passwordKey }}
{{- end }}
{{- else }}
- name: MULTICLOUD_STORE_URL
  value: {{ printf "sqlite:///%s/multicloud.db" (include "multicloud.dataDir" .) }}
{{- end }}
{{- if .Values.credentials.gcp.existingSecret }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ printf "/var/run/secrets/multicloud/gcp/%s" .Values.credentials.gcp.key }}
{{- end }}
{{- if .Values.credentials.coreweave.existingSecret }}
- name: KUBECONFIG
  value: {{ printf "/var/run/secrets/multicloud/coreweave/%s" .Values.credentials.coreweave.key }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "multicloud.envFrom" -}}
{{- with .Values.credentials.aws.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- with .Values.credentials.azure.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{/* Writable places under a read-only root: /tmp (Ray's session dir), HOME, the data dir. */}}
{{- define "multicloud.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/multicloud
- name: data
  mountPath: {{ include "multicloud.dataDir" . }}
{{- if .Values.credentials.gcp.existingSecret }}
- name: gcp-credentials
  mountPath: /var/run/secrets/multicloud/gcp
  readOnly: true
{{- end }}
{{- if .Values.credentials.coreweave.existingSecret }}
- name: coreweave-credentials
  mountPath: /var/run/secrets/multicloud/coreweave
  readOnly: true
{{- end }}
{{- end -}}

{{/* The volumes behind those mounts; dataVolume is the head's store or a worker's scratch. */}}
{{- define "multicloud.volumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- if .head }}
{{- if eq .root.Values.store.type "sqlite" }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "multicloud.storeClaimName" .root }}
{{- else }}
- name: data
  emptyDir: {}
{{- end }}
{{- else }}
- name: data
  emptyDir: {}
{{- end }}
{{- with .root.Values.credentials.gcp.existingSecret }}
- name: gcp-credentials
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.root.Values.credentials.gcp.key }}
        path: {{ $.root.Values.credentials.gcp.key }}
{{- end }}
{{- with .root.Values.credentials.coreweave.existingSecret }}
- name: coreweave-credentials
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.root.Values.credentials.coreweave.key }}
        path: {{ $.root.Values.credentials.coreweave.key }}
{{- end }}
{{- end -}}

{{- define "multicloud.containerPorts" -}}
- name: gcs-server
  containerPort: {{ .Values.ray.ports.gcs }}
- name: dashboard
  containerPort: {{ .Values.ray.ports.dashboard }}
- name: client
  containerPort: {{ .Values.ray.ports.client }}
- name: metrics
  containerPort: {{ .Values.ray.ports.metrics }}
{{- if .Values.metrics.enabled }}
- name: mc-metrics
  containerPort: {{ .Values.metrics.port }}
{{- end }}
{{- end -}}
