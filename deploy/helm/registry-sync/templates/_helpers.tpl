{{- define "registry-sync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "registry-sync.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "registry-sync.labels" -}}
app.kubernetes.io/name: {{ include "registry-sync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "registry-sync.selector" -}}
app.kubernetes.io/name: {{ include "registry-sync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "registry-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "registry-sync.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The config file: the user's config with the sink and admin sections completed. */}}
{{- define "registry-sync.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $instance := .Values.instance | default (printf "%s-%s" .Release.Namespace .Release.Name) | lower | trunc 63 | trimSuffix "-" -}}
{{- $kube := dict "instance" $instance "qps" .Values.kubernetes.qps "burst" .Values.kubernetes.burst "concurrency" .Values.kubernetes.concurrency -}}
{{- if .Values.leaderElection.enabled -}}
{{- $_ := set $kube "leader_election" (dict "lease" (include "registry-sync.fullname" .) "lease_duration_seconds" .Values.leaderElection.leaseDurationSeconds) -}}
{{- else -}}
{{- $_ := set $kube "leader_election" (dict "enabled" false) -}}
{{- end -}}
{{- $sinks := default dict $config.sinks -}}
{{- if eq .Values.sink "mcp" -}}
{{- if not (hasKey $sinks "mcp") -}}
{{- $_ := set $sinks "mcp" (dict "listen" (printf "0.0.0.0:%v" .Values.mcp.port)) -}}
{{- end -}}
{{- else if not (hasKey $sinks "kubernetes") -}}
{{- $_ := set $sinks "kubernetes" $kube -}}
{{- end -}}
{{- $_ := set $config "sinks" $sinks -}}
{{- if not (hasKey $config "admin") -}}
{{- $_ := set $config "admin" (dict "listen" (printf "0.0.0.0:%v" .Values.adminPort) "status_listen" (printf "127.0.0.1:%v" .Values.statusPort)) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
