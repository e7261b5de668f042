{{/* Names, labels and the permission rules shared by the chart's templates. */}}
{{- define "npuserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "npuserve.labels" -}}
app.kubernetes.io/name: npuserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "npuserve.selectorLabels" -}}
app.kubernetes.io/name: npuserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "npuserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ default (include "npuserve.fullname" .) .Values.serviceAccount.name }}{{ else }}{{ required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}{{ end }}
{{- end }}

{{- define "npuserve.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Namespaced calls of the operator (reconcile.ts, events.ts, autoscaler/autoscaler.ts, informer.ts via controller.ts):
exactly these verbs; test/integration/chart.test.ts checks them against the source.
*/}}
{{- define "npuserve.namespacedRules" -}}
- apiGroups: [npuserve.io]
  resources: [npumodels]
  verbs: [list, watch, patch]
- apiGroups: [npuserve.io]
  resources: [npumodels/status]
  verbs: [update, patch]
- apiGroups: [npuserve.io]
  resources: [npumodels/scale]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create, patch, list, watch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, update, list, watch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* Cluster-wide reads of the spare-NPU check: NPU nodes and the pods bound to them. */}}
{{- define "npuserve.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [list]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
{{- end }}

{{/* The gateway's objects: its own name label, so the operator's selectors never take its pods. */}}
{{- define "npuserve.gatewayLabels" -}}
app.kubernetes.io/name: npuserve-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "npuserve.gatewaySelectorLabels" -}}
app.kubernetes.io/name: npuserve-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "npuserve.gatewayServiceAccountName" -}}
{{- default (printf "%s-gateway" (include "npuserve.fullname" .) | trunc 63 | trimSuffix "-") .Values.gateway.serviceAccountName }}
{{- end }}

{{/*
Calls of the gateway (gateway/kube.ts): list and watch NPUModels and patch their held-requests
annotation; list and watch the EndpointSlices of their Services. test/integration/chart.test.ts
checks them against the source.
*/}}
{{- define "npuserve.gatewayRules" -}}
- apiGroups: [npuserve.io]
  resources: [npumodels]
  verbs: [list, watch, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
{{- end }}

{{/*
gateway.loadFactor as the gateway's flag: a number, or a decimal string (`--set` keeps 1.5 a
string); below 1 the chart fails with the value's name, as the schema cannot check a string's size.
*/}}
{{- define "npuserve.gatewayLoadFactor" -}}
{{- $f := float64 .Values.gateway.loadFactor -}}
{{- if lt $f 1.0 -}}
{{- fail (printf "gateway.loadFactor must be at least 1, got %v" .Values.gateway.loadFactor) -}}
{{- end -}}
{{- .Values.gateway.loadFactor -}}
{{- end }}
