#!/usr/bin/env bash
# End-to-end on a real cluster: kind, the operator image built from this tree and installed
# with `kubectl apply -k manifests/`, and two rollouts with real traffic. For machines with a
# Docker engine; CI here has none and runs the same scenarios on the local control plane.
#
#   make e2e-kind                      # or: bash hack/e2e-kind.sh
#   KEEP_CLUSTER=1 make e2e-kind       # leave the cluster up afterwards to look around
#
# Needs docker, kind and kubectl on PATH. What it does:
#   1. creates the kind cluster $CLUSTER (reuses it if it exists);
#   2. installs Istio's own CRDs (istio.io/api, fetched by `make bins`; no istiod, no Envoy);
#   3. builds the operator image, loads it into kind, applies manifests/ (through
#      hack/e2e/install, which allows the stack's Prometheus and PagerDuty receiver) and
#      waits for the operator to be available;
#   4. deploys, in namespace e2e, Prometheus, the local PagerDuty receiver and, per service,
#      v1 and v2 model servers, a router that splits real requests as the VirtualService
#      says (exporting Istio's metrics), and steady load; all but Prometheus run the
#      operator's image (the local stack ships in the package);
#   5. promote: fraud-promote (v2 healthy) must reach Promoted with v2 at weight 100;
#      rollback: fraud-rollback (v2 starts failing 4% of requests) must be RolledBack with
#      v2 at weight 0, and the PagerDuty receiver must hold the rollback's incident.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${CLUSTER:-canaryguard-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.0}
TIMEOUT=${TIMEOUT:-300s}
# The image the kustomization names, so `kubectl apply -k manifests/` runs it as is.
TAG=$(sed -n 's/^ *newTag: *//p' "$ROOT/manifests/kustomization.yaml" | head -n 1)
IMAGE=canaryguard:${TAG:?no newTag in manifests/kustomization.yaml}
NS=e2e
KUBECTL=(kubectl --context "kind-$CLUSTER")

log() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed on PATH"
  done
}

diagnostics() {
  log "diagnostics"
  "${KUBECTL[@]}" get canaryrollouts -A -o wide || true
  "${KUBECTL[@]}" get pods -A -o wide || true
  "${KUBECTL[@]}" -n canaryguard-system logs deployment/canaryguard --tail=100 || true
  "${KUBECTL[@]}" -n "$NS" get events --sort-by=.lastTimestamp || true
}

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    diagnostics
  fi
  if [[ $KEEP_CLUSTER == 1 ]]; then
    log "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
  else
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}

# Fill the @NAME@ placeholders of a manifest template.
render() {
  local template=$1 service=${2:-} scenario=${3:-}
  sed -e "s|@IMAGE@|$IMAGE|g" \
      -e "s|@PROMETHEUS_IMAGE@|$PROMETHEUS_IMAGE|g" \
      -e "s|@SERVICE@|$service|g" \
      -e "s|@V2_SCENARIO@|$scenario|g" \
      "$template"
}

wait_phase() {
  local name=$1 phase=$2
  log "waiting for $name to be $phase (up to $TIMEOUT)"
  "${KUBECTL[@]}" -n "$NS" wait "canaryrollout/$name" \
    --for="jsonpath={.status.phase}=$phase" --timeout="$TIMEOUT"
}

canary_weight() {
  "${KUBECTL[@]}" -n "$NS" get virtualservice "$1" \
    -o jsonpath='{.spec.http[?(@.name=="primary")].route[1].weight}'
}

main() {
  need docker kind kubectl
  cd "$ROOT"

  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "reusing kind cluster $CLUSTER"
  else
    log "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --wait 120s
  fi
  trap cleanup EXIT

  log "installing Istio's networking CRDs"
  "${KUBECTL[@]}" apply --server-side -f "$(python3 -c 'from canaryguard_testbed.bins import istio_crds; print(istio_crds())')"
  "${KUBECTL[@]}" wait --for=condition=Established --timeout=60s \
    crd/virtualservices.networking.istio.io crd/destinationrules.networking.istio.io

  log "building $IMAGE and loading it into kind"
  docker build -t "$IMAGE" .
  kind load docker-image "$IMAGE" --name "$CLUSTER"

  # manifests/ as shipped, allowed to reach this stack's Prometheus and PagerDuty receiver.
  log "installing canaryguard: kubectl apply -k hack/e2e/install/ (manifests/ + allowlist)"
  "${KUBECTL[@]}" apply --server-side -k hack/e2e/install/
  "${KUBECTL[@]}" wait --for=condition=Established --timeout=60s \
    crd/canaryrollouts.canaryguard.io
  "${KUBECTL[@]}" -n canaryguard-system rollout status deployment/canaryguard --timeout=180s

  log "deploying Prometheus, the PagerDuty receiver, model servers, routers and load"
  render hack/e2e/stack.yaml | "${KUBECTL[@]}" apply -f -
  local service scenario
  for service in fraud-promote:healthy fraud-rollback:error-spike; do
    scenario=${service#*:}
    service=${service%%:*}
    render hack/e2e/service.yaml.tmpl "$service" "$scenario" | "${KUBECTL[@]}" apply -f -
  done
  "${KUBECTL[@]}" -n "$NS" wait --for=condition=Available deployment --all --timeout=240s

  log "starting the two rollouts"
  for service in fraud-promote fraud-rollback; do
    render hack/e2e/rollout.yaml.tmpl "$service" | "${KUBECTL[@]}" apply -f -
  done

  wait_phase fraud-promote Promoted
  [[ $(canary_weight fraud-promote) == 100 ]] || fail "fraud-promote: v2 weight is not 100"

  wait_phase fraud-rollback RolledBack
  [[ $(canary_weight fraud-rollback) == 0 ]] || fail "fraud-rollback: v2 weight is not 0"

  log "the rollback as the CLI explains it (run inside the operator's pod)"
  "${KUBECTL[@]}" -n canaryguard-system exec deployment/canaryguard -- \
    canaryguard explain -n "$NS" fraud-rollback

  log "checking that PagerDuty got the page"
  local key="canaryguard/$NS/fraud-rollback/e2e-1" page=""
  for _ in $(seq 1 60); do
    page=$("${KUBECTL[@]}" -n "$NS" get canaryrollout fraud-rollback \
      -o jsonpath='{.status.page.state}')
    [[ $page == Delivered ]] && break
    sleep 2
  done
  [[ $page == Delivered ]] || fail "fraud-rollback: page state is '$page', not Delivered"
  "${KUBECTL[@]}" -n "$NS" exec deployment/pagerduty -- python -c "
import json, sys, urllib.request
state = json.load(urllib.request.urlopen('http://127.0.0.1:8080/_receiver/state'))
keys = [i['dedup_key'] for i in state['incidents']]
print('incidents:', keys)
sys.exit(0 if '$key' in keys else 1)
" || fail "the receiver has no incident $key"

  log "PASS: one rollout promoted, one rolled back and paged"
}

main "$@"
