{{/* The chart's name: nameOverride, else the chart's (kubemam). */}}
{{- define "kubemam.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: fullnameOverride, else the release name suffixed with -<name> unless it
already contains the name. */}}
{{- define "kubemam.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kubemam.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubemam.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kubemam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubemam
{{- end -}}

{{/* Selects the operator pod only: step Job pods carry name=kubemam too, but no instance label. */}}
{{- define "kubemam.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubemam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubemam.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubemam.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest, else repository:tag (tag "" = the chart's appVersion). Call with (list image $). */}}
{{- define "kubemam.imageRef" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod Security "restricted", the same settings plan/jobs.py gives step pods (uid 65532 in both images). */}}
{{- define "kubemam.podSecurityContextDefaults" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kubemam.containerSecurityContextDefaults" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The defaults with podSecurityContext / securityContext merged over them (deep: maps merge, a key
given wins, lists are replaced). Call with (list "pod"|"container" $). */}}
{{- define "kubemam.securityContext" -}}
{{- $which := index . 0 -}}
{{- $root := index . 1 -}}
{{- if eq $which "pod" -}}
{{- toYaml (mergeOverwrite (fromYaml (include "kubemam.podSecurityContextDefaults" $root)) (deepCopy $root.Values.podSecurityContext)) -}}
{{- else -}}
{{- toYaml (mergeOverwrite (fromYaml (include "kubemam.containerSecurityContextDefaults" $root)) (deepCopy $root.Values.securityContext)) -}}
{{- end -}}
{{- end -}}
