{{- define "agyn-admission.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agyn-admission.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agyn-admission.labels" -}}
{{ include "agyn-admission.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "agyn-admission.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/*
Namespaces no webhook of this chart may ever judge: kube-system, the
release's own namespace (the webhook must be able to restart while it is
down), and the excluded list.
*/}}
{{- define "agyn-admission.neverJudged" -}}
{{- $never := list "kube-system" .Release.Namespace -}}
{{- range .Values.webhook.excludedNamespaces }}{{ $never = append $never . }}{{ end -}}
{{- toJson (uniq $never) -}}
{{- end -}}

{{/*
The two webhooks of a configuration: one for the platform's namespaces
(failurePolicy Fail by default), one for every other namespace. Both
exclude the never-judged namespaces and those labelled to opt out.
Arguments: the root context, the webhook name's prefix, the path, the
rules, and extra fields (reinvocationPolicy).
*/}}
{{- define "agyn-admission.webhooks" -}}
{{- $root := .root -}}
{{- $never := include "agyn-admission.neverJudged" $root | fromJsonArray -}}
{{- $platform := list -}}
{{- range $root.Values.webhook.platformNamespaces }}{{ if not (has . $never) }}{{ $platform = append $platform . }}{{ end }}{{ end -}}
{{- $platformPolicy := $root.Values.webhook.platformFailurePolicy -}}
{{- $otherPolicy := $root.Values.webhook.otherNamespaces.failurePolicy -}}
{{- /* With the fallback, the API server's own policies fail closed. */ -}}
{{- if $root.Values.fallback.enabled -}}
{{- $platformPolicy = $root.Values.fallback.webhookFailurePolicy -}}
{{- $otherPolicy = $root.Values.fallback.webhookFailurePolicy -}}
{{- end -}}
{{- $scopes := list (dict "suffix" "platform" "operator" "In" "values" $platform "failurePolicy" $platformPolicy) -}}
{{- if $root.Values.webhook.otherNamespaces.enabled -}}
{{- $scopes = append $scopes (dict "suffix" "cluster" "operator" "NotIn" "values" $platform "failurePolicy" $otherPolicy) -}}
{{- end -}}
{{- range $scopes }}
{{- if or (eq .operator "NotIn") .values }}
  - name: {{ $.prefix }}-{{ .suffix }}.agyn.io
    admissionReviewVersions: [v1]
    sideEffects: None
    matchPolicy: Equivalent
    timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
    failurePolicy: {{ .failurePolicy }}
    {{- with $.extra }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    clientConfig:
      service:
        name: {{ include "agyn-admission.fullname" $root }}
        namespace: {{ $root.Release.Namespace }}
        path: {{ $.path }}
        port: 443
      {{- if not $root.Values.tls.certManager.enabled }}
      caBundle: {{ $.caBundle }}
      {{- end }}
    namespaceSelector:
      matchExpressions:
        - key: kubernetes.io/metadata.name
          operator: NotIn
          values: {{ toJson $never }}
        {{- if .values }}
        - key: kubernetes.io/metadata.name
          operator: {{ .operator }}
          values: {{ toJson .values }}
        {{- end }}
        - key: {{ $root.Values.webhook.optOutLabel }}
          operator: NotIn
          values: [disabled]
    rules:
      {{- toYaml $.rules | nindent 6 }}
{{- end }}
{{- end }}
{{- end -}}
