{{/*
Base of every object name: fullnameOverride, else the release name (with "-palisade" appended
unless it contains "palisade"). Cut to 46 characters so that "<base>-operator-metrics" (a
Service name, a DNS-1035 label) stays within 63.
*/}}
{{- define "palisade.fullname" -}}
{{- $name := .Values.fullnameOverride -}}
{{- if not $name -}}
{{- $name = ternary .Release.Name (printf "%s-%s" .Release.Name .Chart.Name) (contains .Chart.Name .Release.Name) -}}
{{- end -}}
{{- $name | trunc 46 | trimSuffix "-" -}}
{{- end }}

{{/* The operator's Deployment, ServiceAccount, ClusterRole and Lease: "<base>-operator". */}}
{{- define "palisade.operatorName" -}}
{{- printf "%s-operator" (include "palisade.fullname" .) -}}
{{- end }}

{{- define "palisade.serviceAccountName" -}}
{{- default (include "palisade.operatorName" .) .Values.serviceAccount.name -}}
{{- end }}

{{/* Selects the operator's pods; never changes (a Deployment's selector is immutable). */}}
{{- define "palisade.selectorLabels" -}}
app.kubernetes.io/name: palisade-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "palisade.labels" -}}
{{ include "palisade.selectorLabels" . }}
app.kubernetes.io/part-of: palisade
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "palisade.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end }}

{{- define "palisade.serverImage" -}}
{{- printf "%s:%s" .Values.mcpServers.image.repository (default .Chart.AppVersion .Values.mcpServers.image.tag) -}}
{{- end }}

{{/*
Parses one YAML document of files/; fails the render (rather than rendering `Error:`) when it
is not valid YAML. Call with (list $ "files/...").
*/}}
{{- define "palisade.fileYaml" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
{{- $text := $root.Files.Get $path -}}
{{- if not $text -}}
{{- fail (printf "%s is missing from the chart" $path) -}}
{{- end -}}
{{- $doc := fromYaml $text -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "%s: %s" $path $doc.Error) -}}
{{- end -}}
{{- toJson $doc -}}
{{- end }}

{{- /*
The namespaces the operator watches, as a JSON list (empty: every namespace): watchNamespaces,
plus the deprecated watchNamespace, each once, sorted.
*/ -}}
{{- define "palisade.watchNamespaces" -}}
{{- $namespaces := concat (.Values.watchNamespaces | default list) (list) -}}
{{- with .Values.watchNamespace -}}
{{- $namespaces = append $namespaces . -}}
{{- end -}}
{{- $namespaces | uniq | sortAlpha | toJson -}}
{{- end -}}

{{- /*
A map as `key=value` items, comma-separated, sorted by key (Go templates range over a map's
sorted keys).
*/ -}}
{{- define "palisade.keyValues" -}}
{{- $items := list -}}
{{- range $key, $value := . -}}
{{- $items = append $items (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}
