#!/usr/bin/env bash
# Builds the kind CLI from the pinned wrapper module (hack/kind) into
# ${CANARYGUARD_BIN_DIR:-~/.cache/canaryguard/bin}/kind-<version>/kind, as hack/build-bins.sh
# builds the control plane: kept if present, else built under a temporary name, checked to
# report the pinned version, then renamed.
#
#   bash hack/kind/build.sh          # prints the binary's path last
set -euo pipefail

kind_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
hack_dir=$(dirname "$kind_dir")
bin_dir=${CANARYGUARD_BIN_DIR:-$HOME/.cache/canaryguard/bin}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly

pinned() { (cd "$kind_dir" && go list -m -f '{{.Version}}' sigs.k8s.io/kind); }

# versions.env names the release; the wrapper's go.mod must pin the same one.
KIND_VERSION=$(sed -n 's/^KIND_VERSION=//p' "$hack_dir/versions.env")
if [[ -z $KIND_VERSION ]]; then
  command -v go >/dev/null 2>&1 || { echo "kind: no KIND_VERSION in hack/versions.env" >&2; exit 1; }
  KIND_VERSION=$(pinned)
  echo "kind: hack/versions.env has no KIND_VERSION; using hack/kind/go.mod's $KIND_VERSION"
fi

dest_dir=$bin_dir/kind-$KIND_VERSION
dest=$dest_dir/kind
if [[ -x $dest ]]; then
  echo "kind: $KIND_VERSION present at $dest"
  echo "$dest"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "kind: go is not installed; building needs Go >= 1.24 on PATH" >&2
  exit 1
fi
got=$(pinned)
if [[ $got != "$KIND_VERSION" ]]; then
  echo "kind: hack/kind/go.mod pins sigs.k8s.io/kind $got but hack/versions.env says" \
    "$KIND_VERSION" >&2
  exit 1
fi

mkdir -p "$dest_dir"
tmp=$dest_dir/.kind.tmp.$$
trap 'rm -f "$tmp"' EXIT
trap 'exit 130' INT TERM
start=$SECONDS
echo "kind: building $KIND_VERSION"
(cd "$kind_dir" && go build -trimpath -ldflags "-s -w" -o "$tmp" sigs.k8s.io/kind)
# `kind version` prints e.g. "kind v0.30.0 go1.26.8 linux/amd64".
if ! "$tmp" version 2>&1 | grep -qF "kind $KIND_VERSION "; then
  echo "kind: the built binary does not report $KIND_VERSION:" >&2
  "$tmp" version >&2 || true
  exit 1
fi
mv -f "$tmp" "$dest"
echo "kind: built $KIND_VERSION in $((SECONDS - start)) s," \
  "$(($(stat -c %s "$dest") / 1048576)) MiB, at $dest"
echo "$dest"
