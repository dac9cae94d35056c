{{/* Labels on every object: the kustomize base's (part-of) and Helm's own. */}}
{{- define "canaryguard.labels" -}}
app.kubernetes.io/part-of: canaryguard
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator's Pods, as the Deployment, PodDisruptionBudget and Service select them. */}}
{{- define "canaryguard.selector" -}}
app.kubernetes.io/name: canaryguard
app.kubernetes.io/component: operator
{{- end -}}

{{- define "canaryguard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Exactly the verbs the operator uses, no wildcards: the ClusterRole's, or each watched
namespace's Role's (manifests/rbac/clusterrole.yaml). */}}
{{- define "canaryguard.rules" -}}
# Watch rollouts and write their status (merge patches of the status subresource only).
- apiGroups: ["canaryguard.io"]
  resources: ["canaryrollouts"]
  verbs: ["list", "watch"]
- apiGroups: ["canaryguard.io"]
  resources: ["canaryrollouts/status"]
  verbs: ["patch"]
# The route weights of the VirtualServices and HTTPRoutes the rollouts name, read from a
# watch (list, watch); a weight write reads the object first (get).
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "update"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "update"]
# The PagerDuty routing key and the optional Prometheus authorization header: read only when
# annotated canaryguard.io/allowed-rollouts naming the rollout, whatever RBAC allows.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# An Event for every decision.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
