#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the pinned wrapper modules (hack/kube,
# hack/etcd) into ${CANARYGUARD_BIN_DIR:-~/.cache/canaryguard/bin}/<component>-<version>/.
# A binary already present is kept; a new one is built under a temporary name and renamed,
# so an interrupted build never leaves a half-written binary behind.
#
#   bash hack/build-bins.sh          # the local control plane (make bins)
#   bash hack/build-bins.sh node     # and what a kind node image holds besides (make node-bins):
#                                    # kubelet, kubeadm, kube-proxy, kube-controller-manager,
#                                    # kube-scheduler (hack/kube), coredns (hack/coredns),
#                                    # crictl (hack/cri-tools)
set -euo pipefail

case ${1:-} in
  "") with_node=0 ;;
  node) with_node=1 ;;
  *) echo "usage: $0 [node]" >&2; exit 2 ;;
esac

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_dir=${CANARYGUARD_BIN_DIR:-$HOME/.cache/canaryguard/bin}

# versions.env: plain KEY=value lines; copied beside the binaries for the test bed to read.
KUBE_VERSION=$(sed -n 's/^KUBE_VERSION=//p' "$hack_dir/versions.env")
ETCD_VERSION=$(sed -n 's/^ETCD_VERSION=//p' "$hack_dir/versions.env")
ISTIO_API_VERSION=$(sed -n 's/^ISTIO_API_VERSION=//p' "$hack_dir/versions.env")
COREDNS_VERSION=$(sed -n 's/^COREDNS_VERSION=//p' "$hack_dir/versions.env")
CRICTL_VERSION=$(sed -n 's/^CRICTL_VERSION=//p' "$hack_dir/versions.env")
GATEWAY_API_VERSION=$(sed -n 's/^GATEWAY_API_VERSION=//p' "$hack_dir/versions.env")

# Never let a go.mod's toolchain line download another Go; build with the one installed.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly

# The wrapper modules must pin what versions.env says, or the cache would be mislabelled.
check_pin() { # dir module version
  local got
  got=$(cd "$hack_dir/$1" && go list -m -f '{{.Version}}' "$2")
  if [[ "$got" != "$3" ]]; then
    echo "bins: hack/$1/go.mod pins $2 $got but hack/versions.env says $3" >&2
    exit 1
  fi
}

# Go is needed only when something has to be built; a warm cache works without it.
go_checked=
ensure_go() {
  [[ -n "$go_checked" ]] && return
  if ! command -v go >/dev/null 2>&1; then
    echo "bins: go is not installed; building needs Go >= 1.26 on PATH" >&2
    exit 1
  fi
  check_pin kube k8s.io/kubernetes "$KUBE_VERSION"
  check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  if [[ $with_node == 1 ]]; then
    check_pin coredns github.com/coredns/coredns "$COREDNS_VERSION"
    check_pin cri-tools sigs.k8s.io/cri-tools "$CRICTL_VERSION"
  fi
  go_checked=1
}

tmp_files=()
cleanup() { rm -f "${tmp_files[@]+"${tmp_files[@]}"}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# build COMPONENT VERSION MODULE_DIR PACKAGE TAGS LDFLAGS VERSION_ARGS...
build() {
  local component=$1 version=$2 module_dir=$3 package=$4 tags=$5 ldflags=$6
  shift 6
  local dest_dir="$bin_dir/$component-$version"
  local dest="$dest_dir/$component"
  if [[ -x "$dest" ]]; then
    echo "bins: $component $version present at $dest"
    return
  fi
  ensure_go
  mkdir -p "$dest_dir"
  local tmp="$dest_dir/.$component.tmp.$$"
  tmp_files+=("$tmp")
  local start=$SECONDS
  echo "bins: building $component $version (first build takes minutes)"
  (cd "$hack_dir/$module_dir" &&
    go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp" "$package")
  # The fresh binary must run and report the pinned version before it is published.
  if ! "$tmp" "$@" 2>&1 | grep -qF "${version#v}"; then
    echo "bins: $component does not report version $version:" >&2
    "$tmp" "$@" >&2 || true
    exit 1
  fi
  mv -f "$tmp" "$dest"
  echo "bins: built $component $version in $((SECONDS - start)) s," \
    "$(( $(stat -c %s "$dest") / 1048576 )) MiB, at $dest"
}

# Without these /version reports v0.0.0-master, which semver-parsing clients reject.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
# The tags upstream release builds use.
kube_tags=selinux,notest,grpcnotrace

total_start=$SECONDS
build kube-apiserver "$KUBE_VERSION" kube k8s.io/kubernetes/cmd/kube-apiserver \
  "$kube_tags" "$kube_ldflags" --version
build kubectl "$KUBE_VERSION" kube k8s.io/kubernetes/cmd/kubectl \
  "$kube_tags" "$kube_ldflags" version --client
build etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3 "" "-s -w" --version
if [[ $with_node == 1 ]]; then
  # One at a time: each shares the Go build cache with the ones before it.
  for component in kubeadm kubelet kube-proxy kube-controller-manager kube-scheduler; do
    version_args=(--version)
    [[ $component == kubeadm ]] && version_args=(version -o short)
    build "$component" "$KUBE_VERSION" kube "k8s.io/kubernetes/cmd/$component" \
      "$kube_tags" "$kube_ldflags" "${version_args[@]}"
  done
  build coredns "$COREDNS_VERSION" coredns github.com/coredns/coredns "" "-s -w" -version
  build crictl "$CRICTL_VERSION" cri-tools sigs.k8s.io/cri-tools/cmd/crictl "" \
    "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" --version
fi
# Istio's real CRDs, as Istio generates them, from the istio.io/api module.
istio_crds="$bin_dir/istio-api-$ISTIO_API_VERSION/customresourcedefinitions.gen.yaml"
if [[ ! -s "$istio_crds" ]]; then
  ensure_go
  module_dir=$(go mod download -json "istio.io/api@$ISTIO_API_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  if [[ ! -s "$module_dir/kubernetes/customresourcedefinitions.gen.yaml" ]]; then
    echo "bins: istio.io/api@$ISTIO_API_VERSION has no kubernetes/customresourcedefinitions.gen.yaml" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$istio_crds")"
  install -m 0644 "$module_dir/kubernetes/customresourcedefinitions.gen.yaml" "$istio_crds.tmp.$$"
  tmp_files+=("$istio_crds.tmp.$$")
  mv -f "$istio_crds.tmp.$$" "$istio_crds"
  echo "bins: Istio CRDs $ISTIO_API_VERSION at $istio_crds"
fi
# Gateway API's real CRDs (standard channel), from the sigs.k8s.io/gateway-api module.
gateway_crds="$bin_dir/gateway-api-$GATEWAY_API_VERSION/standard-install.yaml"
if [[ ! -s "$gateway_crds" ]]; then
  ensure_go
  module_dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  shopt -s nullglob
  crd_files=("$module_dir"/config/crd/standard/*.yaml)
  shopt -u nullglob
  if [[ ${#crd_files[@]} -eq 0 ]]; then
    echo "bins: sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION has no config/crd/standard/*.yaml" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$gateway_crds")"
  tmp_files+=("$gateway_crds.tmp.$$")
  for f in "${crd_files[@]}"; do
    echo "---"
    cat "$f"
  done >"$gateway_crds.tmp.$$"
  chmod 0644 "$gateway_crds.tmp.$$"
  mv -f "$gateway_crds.tmp.$$" "$gateway_crds"
  echo "bins: Gateway API CRDs $GATEWAY_API_VERSION (standard) at $gateway_crds"
fi
# The test bed (canaryguard_testbed.bins) reads the pins from here, not from a checkout.
install -m 0644 "$hack_dir/versions.env" "$bin_dir/versions.env"
echo "bins: done in $((SECONDS - total_start)) s ($bin_dir)"
