{{/*
Names. The base name is "metallb" (not the chart's name) so that a release of MetalLB's
chart keeps its object names and immutable selectors when upgraded to this chart.
*/}}
{{- define "metallb.name" -}}
{{- default "metallb" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "metallb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "metallb.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "metallb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metallb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "metallb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "metallb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "metallb.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "metallb.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "metallb.speaker.serviceAccountName" -}}
{{- if .Values.speaker.serviceAccount.create }}
{{- default (printf "%s-speaker" (include "metallb.fullname" .)) .Values.speaker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.speaker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap both binaries read (and configInline's name): existingConfigMap if set,
else the release's full name, exactly as MetalLB's chart names it. */}}
{{- define "metallb.configMapName" -}}
{{- default (include "metallb.fullname" .) .Values.existingConfigMap | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "metallb.secretName" -}}
{{- default (printf "%s-memberlist" (include "metallb.fullname" .)) .Values.speaker.secretName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "metallb.pspServed" -}}
{{- if and .Values.psp.create (.Capabilities.APIVersions.Has "policy/v1beta1/PodSecurityPolicy") }}true{{ end }}
{{- end }}

{{/* Arguments both binaries take. */}}
{{- define "metallb.commonArgs" -}}
- --port={{ .root.Values.prometheus.metricsPort }}
- --config={{ include "metallb.configMapName" .root }}
{{- with .logLevel }}
- --log-level={{ . }}
{{- end }}
{{- if ne (toString .root.Values.logFormat) "json" }}
- --log-format={{ .root.Values.logFormat }}
{{- end }}
{{- with .root.Values.loadBalancerClass }}
- --lb-class={{ . }}
{{- end }}
{{- end }}

{{- define "metallb.probe" -}}
httpGet:
  path: {{ .path }}
  port: monitoring
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
successThreshold: {{ .probe.successThreshold }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}
