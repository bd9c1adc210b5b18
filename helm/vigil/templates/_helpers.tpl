{{/* Names and labels shared by the platform's templates. */}}

{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "vigil.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "vigil.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vigil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vigil
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "control"). */}}
{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vigil.componentLabels" -}}
{{ include "vigil.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vigil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vigil.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vigil.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "vigil.masterKeySecret" -}}
{{- default (printf "%s-master-key" (include "vigil.fullname" .)) .Values.masterKey.existingSecret -}}
{{- end -}}

{{/* Environment every platform process shares: bus, store, keys, tokens, telemetry. */}}
{{- define "vigil.commonEnv" -}}
- name: VIGIL_DATA_DIR
  value: /var/lib/vigil
- name: VIGIL_BUS__URL
  value: {{ required "nats.url is required" .Values.nats.url | quote }}
- name: VIGIL_BUS__REPLICAS
  value: {{ .Values.nats.replicas | quote }}
{{- if .Values.nats.credentialsSecret }}
- name: VIGIL_BUS__CREDENTIALS_FILE
  value: /etc/vigil/nats/nats.creds
{{- end }}
- name: VIGIL_STORE__URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgres.urlSecret.name is required" .Values.postgres.urlSecret.name }}
      key: {{ .Values.postgres.urlSecret.key }}
- name: VIGIL_CONTROL__MASTER_KEY_FILE
  value: /etc/vigil/master/master.key
- name: VIGIL_CONTROL__TOKENS__ISSUER
  value: {{ .Values.tokens.issuer | quote }}
- name: VIGIL_CONTROL__TOKENS__AUDIENCE
  value: {{ .Values.tokens.audience | quote }}
- name: VIGIL_TELEMETRY__LOG_FORMAT
  value: json
- name: VIGIL_TELEMETRY__LOG_FILTER
  value: {{ .Values.logFilter | quote }}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{- define "vigil.commonVolumes" -}}
- name: data
  emptyDir:
    sizeLimit: 64Mi
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: master-key
  secret:
    secretName: {{ include "vigil.masterKeySecret" . }}
    defaultMode: 0400
{{- if .Values.nats.credentialsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.credentialsSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "vigil.commonMounts" -}}
- name: data
  mountPath: /var/lib/vigil
- name: tmp
  mountPath: /tmp
- name: master-key
  mountPath: /etc/vigil/master
  readOnly: true
{{- if .Values.nats.credentialsSecret }}
- name: nats-creds
  mountPath: /etc/vigil/nats
  readOnly: true
{{- end }}
{{- end -}}

{{- define "vigil.probes" -}}
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
