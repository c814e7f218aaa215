{{/*
Names, labels and small shared pieces. Every object carries the app.kubernetes.io/* labels; selectors use
only name, instance and component (they are immutable on Deployments, so they never change across upgrades).
*/}}

{{- define "phantomgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "phantomgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <fullname>-<suffix>, cut so the result stays a valid 63-character name. */}}
{{- define "phantomgate.componentName" -}}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "phantomgate.fullname" (index . 0) | trunc (int (sub 62 (len $suffix)))) $suffix | trimSuffix "-" }}
{{- end }}

{{- define "phantomgate.operator.fullname" -}}{{ include "phantomgate.componentName" (list . "operator") }}{{- end }}
{{- define "phantomgate.gateway.fullname" -}}{{ include "phantomgate.componentName" (list . "gateway") }}{{- end }}
{{- define "phantomgate.gatewayAdmin.fullname" -}}{{ include "phantomgate.componentName" (list . "gateway-admin") }}{{- end }}
{{- define "phantomgate.webhook.fullname" -}}{{ include "phantomgate.componentName" (list . "webhook") }}{{- end }}

{{- define "phantomgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "phantomgate.labels" -}}
helm.sh/chart: {{ include "phantomgate.chart" . }}
app.kubernetes.io/name: {{ include "phantomgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "phantomgate.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: phantomgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: pass (list $ "operator"). */}}
{{- define "phantomgate.componentLabels" -}}
{{ include "phantomgate.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Selector of one component: pass (list $ "gateway"). */}}
{{- define "phantomgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "phantomgate.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "phantomgate.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "phantomgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "phantomgate.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "phantomgate.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "phantomgate.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "phantomgate.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "phantomgate.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the ValidatingWebhookConfiguration: cluster-scoped, so it carries the namespace. */}}
{{- define "phantomgate.webhookConfigurationName" -}}
{{- printf "%s-%s" (include "phantomgate.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret holding the webhook's serving certificate (self: the operator writes it). */}}
{{- define "phantomgate.webhookCertSecretName" -}}
{{- if eq .Values.operator.webhook.certificate.mode "secret" }}
{{- required "operator.webhook.certificate.secretName is required when operator.webhook.certificate.mode is secret" .Values.operator.webhook.certificate.secretName }}
{{- else }}
{{- default (include "phantomgate.componentName" (list . "webhook-cert")) .Values.operator.webhook.certificate.secretName }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) are named after release and namespace. A name over 63
characters is cut and given a hash of the whole, so two of them cut to the same prefix still differ.
*/}}
{{- define "phantomgate.clusterScopedName" -}}
{{- $name := printf "%s-%s-%s" (include "phantomgate.fullname" (index . 0)) (index . 0).Release.Namespace (index . 1) }}
{{- if le (len $name) 63 }}
{{- $name }}
{{- else }}
{{- printf "%s-%s" ($name | trunc 54 | trimSuffix "-") ($name | sha256sum | trunc 8) }}
{{- end }}
{{- end }}

{{/* The restricted Pod Security container securityContext, shared by both programs. */}}
{{- define "phantomgate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The Pod-level securityContext of both programs. */}}
{{- define "phantomgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}
