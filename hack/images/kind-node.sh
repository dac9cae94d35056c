#!/usr/bin/env bash
# canaryguard/kind-node:<KUBE_VERSION>: a kind node image built here, without a registry, by
# kind's own builder (`kind build node-image --type file`) on canaryguard/kind-base:bookworm.
#
#   bash hack/images/kind-node.sh        # prints the image name last
#
# Needs (make node-image runs them first): make node-bins (kubeadm, kubelet, kubectl,
# kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy of KUBE_VERSION from
# hack/kube, etcd from hack/etcd, coredns from hack/coredns, crictl from hack/cri-tools),
# make kind, make kind-images.
#
# 1. The images kubeadm names (`kubeadm config images list`), each a one-layer image holding
#    the locally built binary (kube-proxy also Debian's nft, for kube-proxy's nftables mode),
#    built under names of this script's own (canaryguard/kind-node-parts:*); the sandbox image
#    pause.sh built; and stand-ins (hack/images/kind-node/standin.c, a message and exit 1) for
#    the kindnetd and local-path images kind's builder insists on preloading. Nothing is ever
#    tagged in the engine with a name of kubeadm's or kind's.
# 2. The server tarball kind's `--type file` builder takes: kubernetes/version and
#    kubernetes/server/bin/{kubeadm,kubelet,kubectl,kube-apiserver.tar,kube-controller-manager.tar,
#    kube-scheduler.tar,kube-proxy.tar}. Each archive is a `docker save` renamed by
#    archive_tags.py to the exact names the builder and kubeadm look for; kube-apiserver.tar
#    also carries etcd, CoreDNS, pause and the stand-ins, so the builder fetches nothing.
#    Cached in $CANARYGUARD_BIN_DIR/kind-node-<KUBE_VERSION>/ with a digest of its inputs.
# 3. kind build node-image --type file on the base, then one layer more: crictl (kind's `load`
#    runs it to see what the node already has; hack/cri-tools), the CNI configuration
#    (Debian's bridge and host-local plugins, pods in 10.244.0.0/24: one node) and neutral
#    default CNI and storage manifests, so kind applies neither kindnetd nor local-path
#    (kind-node/*.yaml). Create clusters with networking.disableDefaultCNI: true and
#    kubeProxyMode: nftables (tests/kind/manifests/cluster.yaml).
#
# Skipped when the image exists with a label holding the digest of its inputs (binaries, base
# and pause images, kind version, these scripts); FORCE=1 rebuilds. A failed step prints its
# name and the tail of its log.
set -euo pipefail
# shellcheck source=hack/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

versions=$ROOT/hack/versions.env
pin() { sed -n "s/^$1=//p" "$versions"; }
KUBE_VERSION=$(pin KUBE_VERSION)
ETCD_VERSION=$(pin ETCD_VERSION)
COREDNS_VERSION=$(pin COREDNS_VERSION)
CRICTL_VERSION=$(pin CRICTL_VERSION)
KIND_VERSION=$(pin KIND_VERSION)
BIN_DIR=${CANARYGUARD_BIN_DIR:-$HOME/.cache/canaryguard/bin}
IMAGE=${CANARYGUARD_KIND_NODE_IMAGE:-canaryguard/kind-node:$KUBE_VERSION}
KIND_BASE=${CANARYGUARD_KIND_BASE_IMAGE:-canaryguard/kind-base:bookworm}
PARTS=canaryguard/kind-node-parts
NODE_DIR=$IMAGES_DIR/kind-node
CACHE=$BIN_DIR/kind-node-$KUBE_VERSION
TARBALL=$CACHE/kubernetes-server-linux-amd64.tar.gz
LABEL=io.canaryguard.kind-node.inputs

need_docker
[[ $(uname -m) == x86_64 ]] || die "kind-node.sh builds amd64 node images only (this is $(uname -m))"

binary() { # COMPONENT VERSION
  local path=$BIN_DIR/$1-$2/$1
  [[ -x $path ]] || die "$1 $2 is not built ($path); run: make node-bins"
  echo "$path"
}
kind=$BIN_DIR/kind-$KIND_VERSION/kind
[[ -x $kind ]] || die "kind $KIND_VERSION is not built ($kind); run: make kind"
declare -A bins
for component in kubeadm kubelet kubectl kube-apiserver kube-controller-manager \
  kube-scheduler kube-proxy; do
  bins[$component]=$(binary "$component" "$KUBE_VERSION")
done
bins[etcd]=$(binary etcd "$ETCD_VERSION")
bins[coredns]=$(binary coredns "$COREDNS_VERSION")
crictl=$(binary crictl "$CRICTL_VERSION")
image_exists "$KIND_BASE" || die "$KIND_BASE is missing; run: make kind-images"
# The sandbox image kind's containerd config names (built, or found, by pause.sh).
PAUSE=$(bash "$IMAGES_DIR/pause.sh" | tail -n 1)

# What the tarball is made of, and what the node image is made of besides.
tarball_inputs=$(
  {
    echo "$KUBE_VERSION $ETCD_VERSION $COREDNS_VERSION $PAUSE"
    docker image inspect --format '{{.Id}}' "$PAUSE"
    for component in "${!bins[@]}"; do stat -c '%n %s %Y' "${bins[$component]}"; done | sort
    cat "${BASH_SOURCE[0]}" "$IMAGES_DIR/archive_tags.py" "$NODE_DIR/standin.c"
  } | sha256sum | cut -c1-16
)
node_inputs=$(
  {
    echo "$tarball_inputs $KIND_VERSION"
    docker image inspect --format '{{.Id}}' "$KIND_BASE"
    stat -c '%n %s %Y' "$crictl"
    cat "$NODE_DIR"/*.conflist "$NODE_DIR"/*.yaml
  } | sha256sum | cut -c1-16
)
if [[ ${FORCE:-0} != 1 ]] &&
  [[ $(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" \
    2>/dev/null) == "$node_inputs" ]]; then
  log "$IMAGE present ($(image_size "$IMAGE")); FORCE=1 rebuilds"
  echo "$IMAGE"
  exit 0
fi

work=$WORK_DIR/kind-node
# The images this script names PARTS:*-KUBE_VERSION are its own, removed when it ends.
remove_parts() {
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$PARTS" | grep -- "-$KUBE_VERSION\$" |
    xargs -r docker rmi >/dev/null 2>&1 || true
}
cleanup() {
  remove_parts
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work/logs"

# step NAME FUNCTION: run FUNCTION (errexit on: in the background, not in an `if`) with its
# output in a log; on failure say which step failed and show the log's tail.
step() {
  local name=$1 started=$SECONDS log_file=$work/logs/$1.log
  shift
  "$@" >"$log_file" 2>&1 &
  if ! wait $!; then
    echo "images: step '$name' failed; last lines of its log ($log_file):" >&2
    tail -n 30 "$log_file" | sed 's/^/  | /' >&2
    trap - EXIT
    remove_parts
    die "kind node image: step '$name' failed (work directory kept: $work)"
  fi
  log "$name: $((SECONDS - started)) s"
}

total_start=$SECONDS

# A rootfs holding one static binary; the engine keeps it as PARTS:NAME-KUBE_VERSION.
binary_image() { # NAME BINARY [docker import --change ...]
  local name=$1 binary=$2 dir=$work/rootfs-$1
  shift 2
  mkdir -p "$dir/usr/local/bin" "$dir/etc" "$dir/tmp" "$dir/var/run"
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
    >"$dir/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/etc/group"
  install -m 0755 "$binary" "$dir/usr/local/bin/$(basename "$binary")"
  import_rootfs "$dir" "$PARTS:$name-$KUBE_VERSION" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$@"
  rm -rf "$dir"
}

# Debian's nft and the libraries it links, taken from the kind base image.
copy_nft() { # ROOTFS
  docker run --rm --network none --entrypoint /bin/bash "$KIND_BASE" -c '
    set -euo pipefail
    { echo /usr/sbin/nft; ldd /usr/sbin/nft | grep -o "/[^ ]*"; } | sort -u |
      tar -c --dereference -T - 2>/dev/null' | tar -C "$1" -x
}

kind_module() {
  (cd "$ROOT/hack/kind" && GOFLAGS=-mod=readonly GOWORK=off GOTOOLCHAIN=local go mod download \
    -json sigs.k8s.io/kind | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
}

build_tarball() {
  local bin=$work/tarball/kubernetes/server/bin name from to
  mkdir -p "$bin"
  # The images kubeadm deploys, by name: kube-apiserver, ..., coredns/coredns, etcd (its pause
  # is replaced by the sandbox image kind's containerd config names, as kind's builder does).
  declare -A wanted
  while read -r name; do
    from=${name##*/}
    from=${from%%:*}
    wanted[$from]=$name
  done < <("${bins[kubeadm]}" config images list --kubernetes-version "$KUBE_VERSION")
  for name in kube-apiserver kube-controller-manager kube-scheduler kube-proxy coredns etcd; do
    [[ -n ${wanted[$name]:-} ]] || die "kubeadm $KUBE_VERSION lists no $name image"
  done
  local cni_images storage_images kind_dir
  kind_dir=$(kind_module)/pkg/build/nodeimage
  cni_images=$(sed -n 's/^const [A-Za-z]*Image = "\(.*\)"$/\1/p' "$kind_dir/const_cni.go")
  storage_images=$(sed -n 's/^const [A-Za-z]*Image = "\(.*\)"$/\1/p' "$kind_dir/const_storage.go")
  [[ -n $cni_images && -n $storage_images ]] ||
    die "no image names in kind's const_cni.go / const_storage.go ($kind_dir)"

  for name in kube-apiserver kube-controller-manager kube-scheduler; do
    binary_image "$name" "${bins[$name]}"
  done
  binary_image etcd "${bins[etcd]}"
  # The upstream CoreDNS image's entry point; kubeadm's Deployment passes only arguments.
  binary_image coredns "${bins[coredns]}" --change 'ENTRYPOINT ["/usr/local/bin/coredns"]'
  # kube-proxy in nftables mode runs nft.
  local proxy_dir=$work/rootfs-kube-proxy
  mkdir -p "$proxy_dir"
  copy_nft "$proxy_dir"
  binary_image kube-proxy "${bins[kube-proxy]}"
  # The stand-in, one image under each name kind's builder wants preloaded.
  mkdir -p "$work/standin"
  ensure_tool gcc gcc
  gcc -static -Os -s -Wall -Wextra -Werror -o "$work/standin/standin" "$NODE_DIR/standin.c"
  import_rootfs "$work/standin" "$PARTS:standin-$KUBE_VERSION" --change 'ENTRYPOINT ["/standin"]'
  docker tag "$PAUSE" "$PARTS:pause-$KUBE_VERSION"

  save() { # ARCHIVE PART=NAME...
    local archive=$1 pair saved=()
    shift
    for pair in "$@"; do saved+=("${pair%%=*}"); done
    docker save -o "$archive" "${saved[@]}"
    python3 "$IMAGES_DIR/archive_tags.py" "$archive" "$@"
  }
  local extras=("$PARTS:etcd-$KUBE_VERSION=${wanted[etcd]}"
    "$PARTS:coredns-$KUBE_VERSION=${wanted[coredns]}"
    "$PARTS:pause-$KUBE_VERSION=$PAUSE")
  # One image with several names: docker save lists it once, with every name.
  local n=0
  for name in $cni_images $storage_images; do
    n=$((n + 1))
    docker tag "$PARTS:standin-$KUBE_VERSION" "$PARTS:standin-$n-$KUBE_VERSION"
    extras+=("$PARTS:standin-$n-$KUBE_VERSION=$name")
  done
  save "$bin/kube-apiserver.tar" "$PARTS:kube-apiserver-$KUBE_VERSION=${wanted[kube-apiserver]}" \
    "${extras[@]}"
  for name in kube-controller-manager kube-scheduler kube-proxy; do
    save "$bin/$name.tar" "$PARTS:$name-$KUBE_VERSION=${wanted[$name]}"
  done
  for name in kubeadm kubelet kubectl; do
    install -m 0755 "${bins[$name]}" "$bin/$name"
  done
  echo "$KUBE_VERSION" >"$work/tarball/kubernetes/version"
  mkdir -p "$CACHE"
  tar -C "$work/tarball" -c kubernetes | gzip -1 >"$TARBALL.tmp.$$"
  mv -f "$TARBALL.tmp.$$" "$TARBALL"
  echo "$tarball_inputs" >"$CACHE/tarball.inputs"
  rm -rf "$work/tarball"
  remove_parts
}

if [[ ${FORCE:-0} != 1 && -s $TARBALL &&
  $(cat "$CACHE/tarball.inputs" 2>/dev/null) == "$tarball_inputs" ]]; then
  log "server tarball present ($TARBALL)"
else
  step server-tarball build_tarball
  log "server tarball: $(du -m "$TARBALL" | cut -f1) MiB at $TARBALL"
fi

build_node() {
  local raw=$PARTS:node-raw-$KUBE_VERSION context=$work/node-context old
  # kind extracts the tarball into TMPDIR and leaves it there.
  mkdir -p "$work/tmp"
  TMPDIR=$work/tmp "$kind" build node-image --type file --base-image "$KIND_BASE" \
    --image "$raw" "$TARBALL"
  mkdir -p "$context"
  cp "$NODE_DIR/10-canaryguard-bridge.conflist" "$NODE_DIR/default-cni.yaml" \
    "$NODE_DIR/default-storage.yaml" "$crictl" "$context/"
  cat >"$context/Dockerfile" <<DOCKERFILE
FROM $raw
COPY crictl /usr/local/bin/
COPY 10-canaryguard-bridge.conflist /etc/cni/net.d/
COPY default-cni.yaml default-storage.yaml /kind/manifests/
LABEL $LABEL=$node_inputs
DOCKERFILE
  old=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  docker build --force-rm --network none -t "$IMAGE" "$context"
  if [[ -n $old && $old != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}
step node-image build_node

# What kind reads from the node: the version, the manifests, the CNI configuration.
check_node() {
  local out
  out=$(docker run --rm --network none --entrypoint /bin/sh "$IMAGE" -c '
    set -e
    echo "$(cat /kind/version)"
    ls /etc/cni/net.d/10-canaryguard-bridge.conflist /kind/manifests/default-cni.yaml \
      /kind/manifests/default-storage.yaml /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
    crictl --version')
  echo "$out"
  [[ $(head -n 1 <<<"$out") == "$KUBE_VERSION" ]]
}
step check check_node
log "built $IMAGE in $((SECONDS - total_start)) s, $(image_size "$IMAGE")"
echo "$IMAGE"
