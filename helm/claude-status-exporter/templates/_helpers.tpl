{{/* The chart name, overridable. */}}
{{- define "cse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name used for most objects: <release>-<chart> unless the release already names the chart. */}}
{{- define "cse.fullname" -}}
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

{{- define "cse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cse.labels" -}}
helm.sh/chart: {{ include "cse.chart" . }}
{{ include "cse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: claude-status-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "cse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cse.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the API key, empty when there is none. */}}
{{- define "cse.secretName" -}}
{{- if and .Values.apiKey .Values.existingSecret }}
{{- fail "set apiKey (the chart creates the Secret) or existingSecret (you manage it), not both" }}
{{- end }}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.apiKey }}
{{- include "cse.fullname" . }}
{{- end }}
{{- end }}

{{/* The container securityContext, with NET_RAW (and uid 0, which raw sockets need) in icmp.mode netRaw. */}}
{{- define "cse.securityContext" -}}
{{- $sc := deepCopy .Values.securityContext }}
{{- if eq .Values.icmp.mode "netRaw" }}
{{- $caps := deepCopy (default dict $sc.capabilities) }}
{{- $add := default list $caps.add }}
{{- if not (has "NET_RAW" $add) }}
{{- $add = append $add "NET_RAW" }}
{{- end }}
{{- $_ := set $caps "add" $add }}
{{- $_ = set $sc "capabilities" $caps }}
{{- $_ = set $sc "runAsUser" 0 }}
{{- $_ = set $sc "runAsNonRoot" false }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/* The pod securityContext, with the ping_group_range sysctl in icmp.mode sysctl. */}}
{{- define "cse.podSecurityContext" -}}
{{- $psc := deepCopy .Values.podSecurityContext }}
{{- if eq .Values.icmp.mode "netRaw" }}
{{- $_ := set $psc "runAsNonRoot" false }}
{{- end }}
{{- if eq .Values.icmp.mode "sysctl" }}
{{- $sysctls := list }}
{{- range (default list $psc.sysctls) }}
{{- if ne .name "net.ipv4.ping_group_range" }}
{{- $sysctls = append $sysctls . }}
{{- end }}
{{- end }}
{{- $sysctls = append $sysctls (dict "name" "net.ipv4.ping_group_range" "value" "0 2147483647") }}
{{- $_ := set $psc "sysctls" $sysctls }}
{{- end }}
{{- toYaml $psc }}
{{- end }}
