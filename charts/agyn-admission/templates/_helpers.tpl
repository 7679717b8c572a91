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
The rules of the mutating webhooks, as JSON: every workload kind on CREATE
and UPDATE (a Pod on CREATE only: its spec is immutable). `agyn-admission
rules` prints these rules for the built-in set; the chart's tests compare
them.
*/}}
{{- define "agyn-admission.mutatedRules" -}}
{{- toJson (list
  (dict "apiGroups" (list "") "apiVersions" (list "v1") "resources" (list "pods") "operations" (list "CREATE") "scope" "Namespaced")
  (dict "apiGroups" (list "") "apiVersions" (list "v1") "resources" (list "replicationcontrollers") "operations" (list "CREATE" "UPDATE") "scope" "Namespaced")
  (dict "apiGroups" (list "apps") "apiVersions" (list "v1") "resources" (list "deployments" "statefulsets" "daemonsets" "replicasets") "operations" (list "CREATE" "UPDATE") "scope" "Namespaced")
  (dict "apiGroups" (list "batch") "apiVersions" (list "v1") "resources" (list "jobs" "cronjobs") "operations" (list "CREATE" "UPDATE") "scope" "Namespaced")
) -}}
{{- end -}}

{{/*
The rules of the validating webhooks, as JSON. A Pod's UPDATE (an image set
on a running pod) and its ephemeral containers (added by UPDATE of a
subresource) are judged, never mutated: a pod's spec is immutable. The
audit's ClusterRole reads what these rules name (audit.yaml).
*/}}
{{- define "agyn-admission.validatedRules" -}}
{{- $validated := rest (include "agyn-admission.mutatedRules" . | fromJsonArray) -}}
{{- $validated = append $validated (dict "apiGroups" (list "") "apiVersions" (list "v1") "resources" (list "pods") "operations" (list "CREATE" "UPDATE") "scope" "Namespaced") -}}
{{- $validated = append $validated (dict "apiGroups" (list "") "apiVersions" (list "v1") "resources" (list "pods/ephemeralcontainers") "operations" (list "UPDATE") "scope" "Namespaced") -}}
{{- toJson $validated -}}
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

{{/*
The audit's name: its ServiceAccount, ClusterRole, CronJob or Deployment.
Short enough for a CronJob's name (52 characters).
*/}}
{{- define "agyn-admission.audit.name" -}}
{{- printf "%s-audit" (include "agyn-admission.fullname" . | trunc 46 | trimSuffix "-") -}}
{{- end -}}

{{/*
The audit's pods carry labels of their own: the webhook's Deployment,
Service, PodDisruptionBudget and NetworkPolicy select its pods by
agyn-admission.selectorLabels, and must not select these.
*/}}
{{- define "agyn-admission.audit.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-audit
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agyn-admission.audit.labels" -}}
{{ include "agyn-admission.audit.selectorLabels" . }}
app.kubernetes.io/component: audit
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The label or annotation by which a pod opts in to a Kubernetes API token,
as the policy set's service-account-token policy reads it (its optInKey
and optInValue settings, or their defaults).
*/}}
{{- define "agyn-admission.audit.tokenOptIn" -}}
{{- $key := "agyn.io/kube-api-access" -}}
{{- $value := "true" -}}
{{- range .Values.policySet.policies -}}
{{- if eq .name "service-account-token" -}}
{{- with .settings -}}
{{- if .optInKey }}{{ $key = .optInKey }}{{ end -}}
{{- if hasKey . "optInValue" }}{{ $value = toString .optInValue }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{ $key }}: {{ $value | quote }}
{{- end -}}

{{/*
The audit's pod, in the CronJob's job template (audit.mode cronjob) or the
Deployment's (watch): hardened as the webhook's pod is, with the same
policy set.
*/}}
{{- define "agyn-admission.audit.pod" -}}
{{- $watch := eq .Values.audit.mode "watch" -}}
metadata:
  labels:
    {{- include "agyn-admission.audit.labels" . | nindent 4 }}
  annotations:
    # The audit reads the policy set at each run, and in watch mode rescans
    # when it changes; the checksum only makes `helm upgrade` visible in
    # the pod's history.
    checksum/policy-set: {{ include (print $.Template.BasePath "/policy-set.yaml") . | sha256sum }}
    # This pod calls the Kubernetes API: it opts in to its token, as the
    # policy set's service-account-token policy asks (the release namespace
    # is never judged, but the pod passes the policies anyway).
    {{- include "agyn-admission.audit.tokenOptIn" . | nindent 4 }}
spec:
  serviceAccountName: {{ include "agyn-admission.audit.name" . }}
  # The audit lists the cluster's workloads and writes reports with this
  # token (in-cluster config). The webhook's pods have none: the server
  # never calls the Kubernetes API.
  automountServiceAccountToken: true
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if not $watch }}
  # A failed run stays for its logs; the Job retries in a new pod
  # (audit.backoffLimit).
  restartPolicy: Never
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: audit
      image: {{ include "agyn-admission.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - audit
        - --policies=/etc/agyn-admission/policy-set.yaml
        - --cache-dir=/var/cache/agyn-admission
        # Never audited, as never judged: the release namespace and
        # kube-system (which the audit leaves out by itself), the excluded
        # namespaces, and those labelled to opt out.
        - --webhook-namespace={{ .Release.Namespace }}
        {{- range .Values.webhook.excludedNamespaces }}
        - {{ printf "--exclude-namespace=%s" . | quote }}
        {{- end }}
        - {{ printf "--opt-out-label=%s=disabled" .Values.webhook.optOutLabel | quote }}
        {{- /* The webhooks judge only the platform's namespaces: so does
               the audit. */}}
        {{- if not .Values.webhook.otherNamespaces.enabled }}
        {{- range .Values.webhook.platformNamespaces }}
        - {{ printf "--namespace=%s" . | quote }}
        {{- end }}
        {{- end }}
        - --report-api={{ .Values.audit.reportApi }}
        - --results={{ .Values.audit.results }}
        - --page-size={{ int .Values.audit.pageSize }}
        - --log-format={{ .Values.logFormat }}
        {{- if $watch }}
        - --watch
        - --metrics-listen=0.0.0.0:9090
        {{- end }}
      {{- with include "agyn-admission.registry.env" . }}
      # How oci:// modules are pulled (registry), as the server pulls them.
      env:
        {{- . | nindent 8 }}
      {{- end }}
      {{- if $watch }}
      ports:
        - name: metrics
          containerPort: 9090
      livenessProbe:
        httpGet: {path: /healthz, port: metrics, scheme: HTTP}
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        httpGet: {path: /readyz, port: metrics, scheme: HTTP}
        periodSeconds: 5
      {{- end }}
      resources:
        {{- toYaml .Values.audit.resources | nindent 8 }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: [ALL]
      volumeMounts:
        - {name: policy-set, mountPath: /etc/agyn-admission, readOnly: true}
        - {name: cache, mountPath: /var/cache/agyn-admission}
        {{- if .Values.extraPolicyModules.enabled }}
        - {name: extra-policies, mountPath: /policies/extra, readOnly: true}
        {{- end }}
        {{- with include "agyn-admission.registry.volumeMounts" . }}
        {{- . | nindent 8 }}
        {{- end }}
  volumes:
    - name: policy-set
      configMap:
        name: {{ include "agyn-admission.fullname" . }}-policy-set
    # Compiled policies. The image ships no precompiled cache yet: each
    # run of the CronJob compiles the policies at its start (a few seconds
    # for the built-in set).
    - name: cache
      emptyDir:
        sizeLimit: {{ include "agyn-admission.cacheSizeLimit" . }}
    {{- if .Values.extraPolicyModules.enabled }}
    - name: extra-policies
      {{- toYaml .Values.extraPolicyModules.volume | nindent 6 }}
    {{- end }}
    {{- with include "agyn-admission.registry.volumes" . }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/*
Whether policySet names a module from an OCI registry (module:
oci://...): "true", or empty.
*/}}
{{- define "agyn-admission.registry.ociModules" -}}
{{- $oci := false -}}
{{- range .Values.policySet.policies -}}
{{- if hasPrefix "oci://" (toString (.module | default "")) }}{{ $oci = true }}{{ end -}}
{{- end -}}
{{- if $oci }}true{{ end -}}
{{- end -}}

{{/*
The cache volume's size: the compiled built-in policies fit in 64Mi;
pulled modules and their compiled code need registry.cacheSizeLimit.
*/}}
{{- define "agyn-admission.cacheSizeLimit" -}}
{{- if include "agyn-admission.registry.ociModules" . }}{{ .Values.registry.cacheSizeLimit }}{{ else }}64Mi{{ end -}}
{{- end -}}

{{/*
Whether the NetworkPolicies let the pods reach the registries (and DNS):
"true", or empty. registry.networkPolicy.egress auto: when policySet names
an oci:// module.
*/}}
{{- define "agyn-admission.registry.egress" -}}
{{- $mode := .Values.registry.networkPolicy.egress -}}
{{- if or (eq $mode "always") (and (eq $mode "auto") (include "agyn-admission.registry.ociModules" .)) }}true{{ end -}}
{{- end -}}

{{/*
The environment of `serve` and `audit` for pulling oci:// modules (their
RegistryArgs), as a list of env entries; empty when no registry value is
set and the set names no oci:// module.
*/}}
{{- define "agyn-admission.registry.env" -}}
{{- $r := .Values.registry -}}
{{- $ca := or $r.caBundle.configMap $r.caBundle.secret -}}
{{- if $r.pullSecret }}
- name: AGYN_REGISTRY_CONFIG
  value: /etc/agyn/registry/config.json
{{- end }}
{{- if $ca }}
- name: AGYN_REGISTRY_CA
  value: /etc/agyn/registry-ca/ca.crt
{{- end }}
{{- with $r.insecure }}
- name: AGYN_INSECURE_REGISTRIES
  value: {{ join "," . | quote }}
{{- end }}
{{- if or (include "agyn-admission.registry.ociModules" .) $r.pullSecret $ca $r.insecure }}
- name: AGYN_REGISTRY_TIMEOUT
  value: {{ $r.timeout | quote }}
{{- end }}
{{- end -}}

{{/*
The registry's read-only mounts: the pull secret's config.json, the CA
bundle, the cosign public keys. Empty when none is set.
*/}}
{{- define "agyn-admission.registry.volumeMounts" -}}
{{- $r := .Values.registry -}}
{{- if $r.pullSecret }}
- {name: registry-config, mountPath: /etc/agyn/registry, readOnly: true}
{{- end }}
{{- if or $r.caBundle.configMap $r.caBundle.secret }}
- {name: registry-ca, mountPath: /etc/agyn/registry-ca, readOnly: true}
{{- end }}
{{- if $r.verifyKeys.configMap }}
- {name: verify-keys, mountPath: /etc/agyn/keys, readOnly: true}
{{- end }}
{{- end -}}

{{/*
The volumes of those mounts.
*/}}
{{- define "agyn-admission.registry.volumes" -}}
{{- $r := .Values.registry -}}
{{- with $r.pullSecret }}
# The registry credentials: only the pull secret's config.json, readable
# by the pod's group (fsGroup) and no one else.
- name: registry-config
  secret:
    secretName: {{ . | quote }}
    items:
      - {key: .dockerconfigjson, path: config.json}
    defaultMode: 288 # 0440
{{- end }}
{{- with $r.caBundle }}
{{- if and .configMap .secret }}
{{- fail "registry.caBundle: name a configMap or a secret, not both" }}
{{- end }}
{{- if .configMap }}
- name: registry-ca
  configMap:
    name: {{ .configMap | quote }}
    items:
      - {key: {{ .key | quote }}, path: ca.crt}
{{- else if .secret }}
- name: registry-ca
  secret:
    secretName: {{ .secret | quote }}
    items:
      - {key: {{ .key | quote }}, path: ca.crt}
{{- end }}
{{- end }}
{{- with $r.verifyKeys.configMap }}
- name: verify-keys
  configMap:
    name: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
NetworkPolicy egress rules to the registries and to DNS.
*/}}
{{- define "agyn-admission.registry.egressRules" -}}
{{- $np := .Values.registry.networkPolicy -}}
# The registries of the policy set's oci:// modules
# (registry.networkPolicy.peers; anywhere if empty).
- ports:
    {{- range $np.ports }}
    - {port: {{ int . }}, protocol: TCP}
    {{- end }}
  {{- with $np.peers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# DNS, to find them.
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
  {{- with $np.dnsPeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
