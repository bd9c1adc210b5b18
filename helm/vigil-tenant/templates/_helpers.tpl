{{/* Names and labels shared by the tenant chart's templates. */}}

{{- define "tenant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tenant.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "tenant.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tenant.id" -}}
{{- $id := default .Release.Name .Values.tenant.id -}}
{{- if not (regexMatch "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$" $id) -}}
{{- fail (printf "tenant.id %q is not a tenant id: at most 40 lowercase letters, digits and hyphens, starting with a letter (set tenant.id when the release name is not one)" $id) -}}
{{- end -}}
{{- $id -}}
{{- end -}}

{{- define "tenant.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tenant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vigil
vigil.io/tenant: {{ include "tenant.id" . }}
{{- end -}}

{{- define "tenant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tenant.componentLabels" -}}
{{ include "tenant.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tenant.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* The Secret the operator writes: ingest token, NATS user. */}}
{{- define "tenant.credentialsSecret" -}}
{{- printf "%s-credentials" (include "tenant.fullname" .) -}}
{{- end -}}

{{- define "tenant.env" -}}
- name: VIGIL_DATA_DIR
  value: /var/lib/vigil
- name: VIGIL_BUS__URL
  value: {{ required "nats.url is required" .Values.nats.url | quote }}
# Streams belong to the platform; a tenant's user may not manage them.
- name: VIGIL_BUS__MANAGE_STREAMS
  value: "false"
{{- if .Values.nats.perTenantUser }}
- name: VIGIL_BUS__CREDENTIALS_FILE
  value: /etc/vigil/nats/nats.creds
- name: VIGIL_BUS__INBOX_PREFIX
  valueFrom:
    secretKeyRef:
      name: {{ include "tenant.credentialsSecret" . }}
      key: nats-inbox-prefix
{{- else if .Values.nats.platformCredentialsSecret }}
- name: VIGIL_BUS__CREDENTIALS_FILE
  value: /etc/vigil/nats/nats.creds
{{- end }}
- name: VIGIL_STORE__URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgres.urlSecret.name is required" .Values.postgres.urlSecret.name }}
      key: {{ .Values.postgres.urlSecret.key }}
- name: VIGIL_TELEMETRY__LOG_FORMAT
  value: json
- name: VIGIL_TELEMETRY__LOG_FILTER
  value: {{ .Values.logFilter | quote }}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{- define "tenant.volumes" -}}
- name: data
  emptyDir:
    sizeLimit: 64Mi
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.nats.perTenantUser }}
# Written by the operator; pods wait for it.
- name: nats-creds
  secret:
    secretName: {{ include "tenant.credentialsSecret" . }}
    defaultMode: 0400
    items:
      - key: nats.creds
        path: nats.creds
{{- else if .Values.nats.platformCredentialsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.platformCredentialsSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "tenant.mounts" -}}
- name: data
  mountPath: /var/lib/vigil
- name: tmp
  mountPath: /tmp
{{- if or .Values.nats.perTenantUser .Values.nats.platformCredentialsSecret }}
- name: nats-creds
  mountPath: /etc/vigil/nats
  readOnly: true
{{- end }}
{{- end -}}

{{- define "tenant.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 6
{{- end -}}

{{/* PodDisruptionBudget and HorizontalPodAutoscaler of one component. */}}
{{- define "tenant.scaling" -}}
{{- $values := index .root.Values .component -}}
{{- $name := printf "%s-%s" (include "tenant.fullname" .root) .component -}}
{{- if $values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "tenant.componentLabels" . | nindent 4 }}
spec:
  minAvailable: {{ $values.podDisruptionBudget.minAvailable }}
  selector:
    matchLabels:
      {{- include "tenant.selectorLabels" . | nindent 6 }}
{{- end }}
{{- if $values.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "tenant.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $values.autoscaling.minReplicas }}
  maxReplicas: {{ $values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}
