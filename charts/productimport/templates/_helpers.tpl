{{/* The chart's name. */}}
{{- define "productimport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: RELEASE-productimport (or RELEASE when it contains the chart name). */}}
{{- define "productimport.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Cluster-scoped objects (ClusterRoles and their bindings) carry the release's
namespace too: two releases of the same name in different namespaces must not collide. */}}
{{- define "productimport.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "productimport.fullname" .) | trunc 200 | trimSuffix "-" }}
{{- end }}

{{- define "productimport.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "productimport.labels" -}}
helm.sh/chart: {{ include "productimport.chart" . }}
{{ include "productimport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: productimport
{{- end }}

{{- define "productimport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "productimport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image of all three roles. */}}
{{- define "productimport.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "productimport.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "productimport.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "productimport.api.serviceAccountName" -}}
{{- if .Values.api.serviceAccount.create }}
{{- default (printf "%s-api" (include "productimport.fullname" .)) .Values.api.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.api.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The loader's ServiceAccount name for the operator's Jobs, or "" for each
namespace's default one (see operator.loader.serviceAccount in values.yaml). */}}
{{- define "productimport.loader.serviceAccountName" -}}
{{- $sa := .Values.operator.loader.serviceAccount }}
{{- if and $sa.create .Values.operator.watchNamespaces }}
{{- default (printf "%s-loader" (include "productimport.fullname" .)) $sa.name }}
{{- else if not $sa.create }}
{{- $sa.name }}
{{- end }}
{{- end }}

{{- define "productimport.minio.secretName" -}}
{{- default (printf "%s-minio" (include "productimport.fullname" .)) .Values.minio.existingSecret }}
{{- end }}

{{- define "productimport.webhook.secretName" -}}
{{- default (printf "%s-webhook" (include "productimport.fullname" .)) .Values.operator.webhook.existingSecret }}
{{- end }}

{{- define "productimport.api.tokensSecretName" -}}
{{- default (printf "%s-api-tokens" (include "productimport.fullname" .)) .Values.api.auth.static.existingSecret }}
{{- end }}

{{/* The MinIO connection, as the API, the operator and the loader all read it. */}}
{{- define "productimport.minio.env" -}}
- name: MINIO_ENDPOINT
  value: {{ .Values.minio.endpoint | quote }}
- name: MINIO_SECURE
  value: {{ ternary "true" "false" .Values.minio.secure | quote }}
{{- with .Values.minio.region }}
- name: MINIO_REGION
  value: {{ . | quote }}
{{- end }}
- name: MINIO_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "productimport.minio.secretName" . }}
      key: {{ ternary .Values.minio.existingSecretKeys.accessKey "MINIO_ACCESS_KEY" (ne .Values.minio.existingSecret "") }}
- name: MINIO_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "productimport.minio.secretName" . }}
      key: {{ ternary .Values.minio.existingSecretKeys.secretKey "MINIO_SECRET_KEY" (ne .Values.minio.existingSecret "") }}
{{- end }}

{{/* The Pod-level settings both Deployments share. */}}
{{- define "productimport.podSpecCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .root.Values.tmpVolume.sizeLimit }}
{{- with .extraVolumes }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The egress policy's rules (productimport/egress.py): the operator applies them to
webhooks and its loaders to URL sources; the API checks a webhook URL given at upload
against the same rules.
*/}}
{{- define "productimport.egressPolicyEnv" -}}
- name: PRODUCTIMPORT_EGRESS_ALLOW
  value: {{ .Values.egress.allow | toJson | quote }}
- name: PRODUCTIMPORT_EGRESS_ALLOW_HTTP
  value: {{ .Values.egress.allowHttp | quote }}
{{- end }}
