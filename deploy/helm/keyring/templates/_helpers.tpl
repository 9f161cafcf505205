{{/* Names: the release's full name is keyring's own (the headless Service clients dial, its certificate's
name); the other components are <fullname>-edge, -admin, -etcd. */}}
{{- define "keyring.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "keyring.edge" -}}{{ include "keyring.fullname" . }}-edge{{- end -}}
{{- define "keyring.admin" -}}{{ include "keyring.fullname" . }}-admin{{- end -}}
{{- define "keyring.etcd" -}}{{ include "keyring.fullname" . }}-etcd{{- end -}}

{{/* Selector labels of one component: its role (as in deploy/k8s) and the release. */}}
{{- define "keyring.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "keyring.labels" -}}
{{ include "keyring.selector" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: keyring-gemini
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "keyring.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Secret names: given in values, else named after the release. */}}
{{- define "keyring.secret.grpc" -}}{{ .Values.tls.secrets.keyringServer | default (printf "%s-grpc-tls" (include "keyring.fullname" .)) }}{{- end -}}
{{- define "keyring.secret.edge" -}}{{ .Values.tls.secrets.edgeClient | default (printf "%s-tls" (include "keyring.edge" .)) }}{{- end -}}
{{- define "keyring.secret.admin" -}}{{ .Values.tls.secrets.adminClient | default (printf "%s-tls" (include "keyring.admin" .)) }}{{- end -}}
{{- define "keyring.secret.etcdClient" -}}{{ .Values.tls.secrets.etcdClient | default (printf "%s-etcd-client-tls" (include "keyring.fullname" .)) }}{{- end -}}
{{- define "keyring.secret.etcdServer" -}}{{ .Values.tls.secrets.etcdServer | default (printf "%s-server-tls" (include "keyring.etcd" .)) }}{{- end -}}
{{- define "keyring.secret.etcdPeer" -}}{{ .Values.tls.secrets.etcdPeer | default (printf "%s-peer-tls" (include "keyring.etcd" .)) }}{{- end -}}

{{/* The identities keyring lets lease (the edge's) and administer (admin's): their certificates' common names. */}}
{{- define "keyring.identity.edge" -}}{{ .Values.tls.identities.edge | default (include "keyring.edge" .) }}{{- end -}}
{{- define "keyring.identity.admin" -}}{{ .Values.tls.identities.admin | default (include "keyring.admin" .) }}{{- end -}}

{{/* An internal service's lease identity and its certificate's Secret (internalClients). */}}
{{- define "keyring.identity.internal" -}}{{ .Values.internalClients.identity | default (printf "%s-internal" (include "keyring.fullname" .)) }}{{- end -}}
{{- define "keyring.secret.internal" -}}{{ .Values.internalClients.secretName | default (printf "%s-internal-tls" (include "keyring.fullname" .)) }}{{- end -}}

{{/* KEYRING_LEASE_IDENTITIES: the edge's, and an internal service's when internalClients is on (never admin's). */}}
{{- define "keyring.leaseIdentities" -}}
{{- $identities := list (include "keyring.identity.edge" .) -}}
{{- if .Values.internalClients.enabled -}}
{{- $internal := include "keyring.identity.internal" . -}}
{{- if eq $internal (include "keyring.identity.admin" .) -}}
{{- fail "internalClients.identity must not be admin's identity (tls.identities.admin): admin's certificate would lease" -}}
{{- end -}}
{{- $identities = append $identities $internal -}}
{{- end -}}
{{- join "," $identities -}}
{{- end -}}

{{- define "keyring.etcdEndpoint" -}}
{{- if .Values.etcd.bundled.enabled -}}
{{ include "keyring.etcd" . }}:2379
{{- else -}}
{{ required "etcd.external.endpoint (host:port) is required when etcd.bundled.enabled is false" .Values.etcd.external.endpoint }}
{{- end -}}
{{- end -}}

{{/* Where upload URLs point: the edge Ingress's host (https when the Ingress terminates TLS), else edge.publicBaseUrl. */}}
{{- define "keyring.publicBaseUrl" -}}
{{- $uploadsOff := and (hasKey .Values.edge.config "EDGE_UPLOADS") (has (toString (index .Values.edge.config "EDGE_UPLOADS")) (list "false" "0")) -}}
{{- if .Values.edge.publicBaseUrl -}}
{{ .Values.edge.publicBaseUrl }}
{{- else if .Values.ingress.edge.enabled -}}
{{ ternary "https" "http" .Values.ingress.edge.tls.enabled }}://{{ .Values.ingress.edge.host }}
{{- else if not $uploadsOff -}}
{{ fail "edge.publicBaseUrl (https://host where clients reach the edges) is required without the edge Ingress, or set edge.config.EDGE_UPLOADS: \"false\"" }}
{{- end -}}
{{- end -}}

{{/* A Secret volume of tls.crt, tls.key and ca.crt. */}}
{{- define "keyring.tlsVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
{{- end -}}

{{- define "keyring.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "keyring.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/* Spread over nodes (hard when `hard`) and zones. */}}
{{- define "keyring.spread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: {{ .hostWhen }}
  labelSelector:
    matchLabels:
      {{- include "keyring.selector" . | nindent 6 }}
{{- if .zones }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "keyring.selector" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy pieces. */}}
{{- define "keyring.upstreamEgress" -}}
# the Gemini upstream (or a relay / egress proxy)
- to:
    - ipBlock:
        cidr: {{ .Values.upstream.egressCIDR }}
        {{- with .Values.upstream.egressExcept }}
        except: {{ toJson . }}
        {{- end }}
  ports:
    {{- range .Values.upstream.egressPorts }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end -}}
{{- define "keyring.prometheusFrom" -}}
- namespaceSelector: {}
  podSelector:
    matchLabels:
      {{- toYaml .Values.networkPolicy.prometheusPodLabels | nindent 6 }}
{{- end -}}
