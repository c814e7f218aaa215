{{/*
Command-line flags of the two programs. A test (test/k8s/helm-template.test.ts) renders the chart and parses
these with the programs' own flag parsers, so a renamed or removed flag fails there, not in a cluster.
*/}}

{{- define "phantomgate.controlPlaneUrl" -}}
{{- printf "%s://%s.%s.svc:%v" (ternary "https" "http" .Values.operator.snapshotTls) (include "phantomgate.operator.fullname" .) .Release.Namespace .Values.operator.ports.snapshot }}
{{- end }}

{{- define "phantomgate.gateway.args" -}}
{{- $g := .Values.gateway -}}
- --control-plane={{ include "phantomgate.controlPlaneUrl" . }}
- --control-plane-token-file=/var/run/secrets/phantomgate/token
{{- if .Values.operator.snapshotTls }}
- --control-plane-ca-file=/etc/phantomgate/control-plane-ca/ca.crt
{{- end }}
- --gateway-name=$(POD_NAME)
{{- /* A directory of the gateway's own (0700) inside the volume: the emptyDir itself is open to every user. */}}
- --state-dir=/var/lib/phantomgate/gateway
- --host=0.0.0.0
- --port={{ $g.ports.http }}
- --admin-host=0.0.0.0
- --admin-port={{ $g.ports.admin }}
- --shutdown-grace-ms={{ $g.shutdownGraceMs }}
- {{ printf "--audit-log=%s" $g.auditLog | quote }}
- --log-level={{ .Values.logLevel }}
- {{ printf "--mint-issuer=%s" $g.mintIssuer | quote }}
{{- if $g.mintKey.existingSecret }}
- --mint-key-file=/etc/phantomgate/mint-key/{{ $g.mintKey.key }}
{{- end }}
{{- if $g.trustForwarded }}
- --trust-forwarded
{{- end }}
{{- if not (kindIs "invalid" $g.maxNewTokensPerClient) }}
- --max-new-tokens-per-client={{ int64 $g.maxNewTokensPerClient }}
{{- else if not (or $g.trustForwarded (and (has $g.service.type (list "NodePort" "LoadBalancer")) (eq $g.service.externalTrafficPolicy "Local"))) }}
{{- /* Behind a proxy or SNAT the peer address is not the client's: a per-address bound would cover everyone. */}}
- --max-new-tokens-per-client=0
{{- end }}
{{- end }}

{{- /* POD_NAME and POD_NAMESPACE (downward API) give the operator's --identity and --pod-namespace. */}}
{{- define "phantomgate.operator.args" -}}
{{- $o := .Values.operator -}}
- --snapshot-port={{ $o.ports.snapshot }}
{{- with $o.watchNamespaces }}
- --namespaces={{ join "," . }}
{{- end }}
{{- if $o.snapshotTls }}
- --snapshot-tls
{{- else }}
- --no-snapshot-tls
{{- end }}
{{- if not $o.webhook.enabled }}
{{- /* The serving certificate is still managed for the TLS snapshot stream; only the webhook server is off. */}}
- --no-webhook
{{- end }}
- --webhook-port={{ $o.ports.webhook }}
- --webhook-service-name={{ include "phantomgate.operator.fullname" . }}
- --webhook-configuration-name={{ include "phantomgate.webhookConfigurationName" . }}
- --webhook-secret-name={{ include "phantomgate.webhookCertSecretName" . }}
- --webhook-certificate={{ $o.webhook.certificate.mode }}
- --webhook-failure-policy={{ $o.webhook.failurePolicy }}
- --metrics-port={{ $o.ports.metrics }}
- --lease-name={{ include "phantomgate.operator.fullname" . }}
- --lease-duration-ms={{ $o.leaderElection.leaseDurationMs }}
- --lease-renew-interval-ms={{ $o.leaderElection.renewIntervalMs }}
- --gateway-audience={{ .Values.gateway.controlPlaneToken.audience }}
- --gateway-service-accounts={{ join "," (prepend $o.extraGatewayServiceAccounts (printf "%s:%s" .Release.Namespace (include "phantomgate.gateway.serviceAccountName" .))) }}
{{- with $o.secretLabelSelector }}
- {{ printf "--secret-label-selector=%s" . | quote }}
{{- end }}
- --log-level={{ .Values.logLevel }}
{{- end }}
