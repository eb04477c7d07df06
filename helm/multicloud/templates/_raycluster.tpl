{{- /*
One RayCluster whose head runs the scheduler: the chart renders it once, or twice with
scheduler.replicas=2 (PostgreSQL only), the second named NAME-standby. With two, both start
the scheduler with --standby: whichever holds the store's lease runs the cycle, the other
waits and takes over when the lease expires (docs/architecture.md, "One scheduler per store").
Arguments: dict "root" (the chart's context) "name" (the RayCluster's name) "standby" (bool).
*/ -}}
{{- define "multicloud.raycluster" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $standby := .standby -}}
{{- with $root -}}
{{- $fullname := include "multicloud.fullname" . -}}
{{- $ports := .Values.ray.ports -}}
{{- /* Ports and host are the chart's: the Services, NetworkPolicy and NOTES depend on them. */ -}}
{{- $managed := dict "dashboard-host" "0.0.0.0" "port" (toString $ports.gcs) "dashboard-port" (toString $ports.dashboard) "ray-client-server-port" (toString $ports.client) "metrics-export-port" (toString $ports.metrics) -}}
apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: {{ $name }}
  labels:
    {{- include "multicloud.labels" . | nindent 4 }}
spec:
  rayVersion: {{ .Values.ray.version | quote }}
  headGroupSpec:
    # KubeRay makes the head Service; ClusterIP keeps the GCS, dashboard and client ports
    # inside the cluster (reach them with kubectl port-forward or from allowed namespaces).
    serviceType: ClusterIP
    enableIngress: false
    rayStartParams:
      {{- toYaml (merge (deepCopy $managed) .Values.head.rayStartParams) | nindent 6 }}
    template:
      metadata:
        labels:
          {{- include "multicloud.podLabels" . | nindent 10 }}
        annotations:
          # Restart the head (and so re-run `multicloud start`) when the fleet changes.
          checksum/fleet: {{ toYaml .Values.fleet | sha256sum }}
      spec:
        serviceAccountName: {{ include "multicloud.serviceAccountName" . }}
        {{- with .Values.imagePullSecrets }}
        imagePullSecrets:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        securityContext:
          {{- include "multicloud.podSecurityContext" . | nindent 10 }}
        containers:
          # KubeRay treats the first container as the Ray node and writes its `ray start`
          # command; the scheduler runs here as a detached actor.
          - name: ray-head
            image: {{ include "multicloud.image" . }}
            imagePullPolicy: {{ .Values.image.pullPolicy }}
            env:
              {{- include "multicloud.env" . | nindent 14 }}
            {{- with (include "multicloud.envFrom" .) }}
            envFrom:
              {{- . | nindent 14 }}
            {{- end }}
            ports:
              {{- include "multicloud.containerPorts" . | nindent 14 }}
            resources:
              {{- toYaml .Values.head.resources | nindent 14 }}
            securityContext:
              {{- include "multicloud.securityContext" . | nindent 14 }}
            volumeMounts:
              {{- include "multicloud.volumeMounts" . | nindent 14 }}
          # Starts the scheduler on this head with the same `multicloud start` as on a laptop,
          # then re-runs it every recheckSeconds: a no-op while the actor lives, and it brings
          # the actor back (from the store) after the head's Ray restarted. It shares /tmp with
          # ray-head so that its short-lived Ray driver finds the local raylet.
          - name: scheduler
            image: {{ include "multicloud.image" . }}
            imagePullPolicy: {{ .Values.image.pullPolicy }}
            command: ["/bin/sh", "-c"]
            args:
              - |
                ready=/tmp/multicloud-scheduler-ready
                while true; do
                  if multicloud start --address "${POD_IP}:{{ $ports.gcs }}" \
                      --namespace {{ .Values.scheduler.namespace | quote }} \
                      --fleet /etc/multicloud/fleet.yaml \
                      {{- if $standby }}
                      --standby \
                      {{- end }}
                      {{- if .Values.metrics.enabled }}
                      --metrics-port {{ .Values.metrics.port }} --metrics-host 0.0.0.0 \
                      {{- end }}
                      --store "${MULTICLOUD_STORE_URL}"; then
                    touch "$ready"
                    sleep {{ .Values.scheduler.recheckSeconds }}
                  else
                    rm -f "$ready"
                    echo "multicloud start failed; retrying in 10 s" >&2
                    sleep 10
                  fi
                done
            env:
              - name: POD_IP
                valueFrom:
                  fieldRef:
                    fieldPath: status.podIP
              {{- include "multicloud.env" . | nindent 14 }}
            {{- with (include "multicloud.envFrom" .) }}
            envFrom:
              {{- . | nindent 14 }}
            {{- end }}
            readinessProbe:
              exec:
                command: ["test", "-f", "/tmp/multicloud-scheduler-ready"]
              periodSeconds: 10
            resources:
              {{- toYaml .Values.scheduler.resources | nindent 14 }}
            securityContext:
              {{- include "multicloud.securityContext" . | nindent 14 }}
            volumeMounts:
              {{- include "multicloud.volumeMounts" . | nindent 14 }}
              - name: fleet
                mountPath: /etc/multicloud
                readOnly: true
        volumes:
          {{- include "multicloud.volumes" (dict "root" . "head" true) | nindent 10 }}
          - name: fleet
            configMap:
              name: {{ $fullname }}-fleet
        {{- with .Values.head.nodeSelector }}
        nodeSelector:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with .Values.head.tolerations }}
        tolerations:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with .Values.head.affinity }}
        affinity:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  {{- if .Values.workerGroups }}
  workerGroupSpecs:
    {{- range $g := .Values.workerGroups }}
    - groupName: {{ $g.name }}
      replicas: {{ $g.replicas }}
      minReplicas: {{ hasKey $g "minReplicas" | ternary $g.minReplicas $g.replicas }}
      maxReplicas: {{ hasKey $g "maxReplicas" | ternary $g.maxReplicas $g.replicas }}
      rayStartParams:
        {{- toYaml (default (dict) $g.rayStartParams) | nindent 8 }}
      template:
        metadata:
          labels:
            {{- include "multicloud.podLabels" $root | nindent 12 }}
        spec:
          serviceAccountName: {{ include "multicloud.serviceAccountName" $root }}
          {{- with $root.Values.imagePullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- include "multicloud.podSecurityContext" $root | nindent 12 }}
          containers:
            - name: ray-worker
              image: {{ include "multicloud.image" $root }}
              imagePullPolicy: {{ $root.Values.image.pullPolicy }}
              env:
                {{- include "multicloud.env" $root | nindent 16 }}
              {{- with (include "multicloud.envFrom" $root) }}
              envFrom:
                {{- . | nindent 16 }}
              {{- end }}
              resources:
                {{- toYaml $g.resources | nindent 16 }}
              securityContext:
                {{- include "multicloud.securityContext" $root | nindent 16 }}
              volumeMounts:
                {{- include "multicloud.volumeMounts" $root | nindent 16 }}
          volumes:
            {{- include "multicloud.volumes" (dict "root" $root "head" false) | nindent 12 }}
          {{- with $g.nodeSelector }}
          nodeSelector:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $g.tolerations }}
          tolerations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
    {{- end }}
  {{- end }}
{{- end -}}
{{- end -}}
