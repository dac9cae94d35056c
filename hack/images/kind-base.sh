#!/usr/bin/env bash
# canaryguard/kind-base:bookworm: the equivalent of kind's base image (kindest/base) made
# without a registry: a Debian bookworm root filesystem by debootstrap with Debian's systemd,
# containerd, runc and CNI plugins, plus kind's own node files (entrypoint, systemd units,
# containerd config) from the kind Go module that hack/kind pins. `kind build node-image
# --base-image` takes it. Skipped if the image exists (FORCE=1 rebuilds).
#
#   bash hack/images/kind-base.sh
#
# Where it differs from kind's, and why:
# - Debian's containerd 1.6 and runc 1.1 instead of kind's own builds (2.1, 1.3); kind's
#   containerd config is version 2, which 1.6 reads. Its unit runs /usr/local/bin/containerd,
#   linked to Debian's.
# - restrict_oom_score_adj = true: without CAP_SYS_RESOURCE (some sandboxes) containerd cannot
#   lower oom_score_adj; where it can, the setting only keeps scores at containerd's own.
# - /usr/local/sbin/runc, first on PATH, drops CAP_SYS_RESOURCE from what it creates when the
#   node's bounding set lacks it, else runs runc as is. Privileged containers get containerd's
#   own capabilities, which already lack it; a pod that adds SYS_RESOURCE would fail without.
# - /usr/local/bin/ctr, first on PATH, answers what kind's node-image builder asks of
#   containerd 2's ctr that 1.6's lacks: `ctr info` (as `ctr version`) and
#   `ctr images import --label=K=V` (the import, then `ctr images label` on what it created).
#   Every other command runs Debian's ctr unchanged.
# - On cgroup v1, kubelet's unit first unmounts the v1 hierarchies systemd mounted after
#   kind's entrypoint prepared the others (/kind/bin/canaryguard-cgroup-v1.sh): kubelet
#   refuses to start while one lacks kubelet.slice.
# - No fuse-overlayfs, nfs-common, open-iscsi (rootless and storage tests only).
set -euo pipefail
# shellcheck source=hack/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=${CANARYGUARD_KIND_BASE_IMAGE:-canaryguard/kind-base:bookworm}

need_docker
if [[ ${FORCE:-0} != 1 ]] && image_exists "$IMAGE"; then
  log "$IMAGE present ($(image_size "$IMAGE")); FORCE=1 rebuilds"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "go is needed to fetch the kind module"

# kind's node files, from the module hack/kind pins (the Go module proxy serves them).
kind_module=$(cd "$ROOT/hack/kind" && GOFLAGS=-mod=readonly GOWORK=off go mod download \
  -json sigs.k8s.io/kind | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
files=$kind_module/images/base/files
[[ -f $files/usr/local/bin/entrypoint ]] || die "no images/base/files in $kind_module"

start=$SECONDS
rootfs=$WORK_DIR/kind-base
trap 'rm -rf "$rootfs" "$rootfs.debootstrap.log"' EXIT
make_rootfs "$rootfs" "$(
  packages=(
    systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2
    pigz bash ca-certificates curl jq procps containerd runc containernetworking-plugins
  )
  IFS=,
  echo "${packages[*]}"
)"

# What kind's images/base/Dockerfile copies, with the same modes.
install -D -m 0755 -t "$rootfs/usr/local/bin" "$files"/usr/local/bin/*
mkdir -p "$rootfs/kind/bin" "$rootfs/LICENSES"
install -m 0644 -t "$rootfs/kind" "$files"/kind/README.txt
install -m 0755 -t "$rootfs/kind/bin" "$files"/kind/bin/*
install -m 0644 -t "$rootfs/LICENSES" "$files"/LICENSES/*
install -m 0644 -t "$rootfs/etc" "$files"/etc/crictl.yaml
for sub in containerd default sysctl.d systemd/system systemd/system/kubelet.service.d; do
  mkdir -p "$rootfs/etc/$sub"
  find "$files/etc/$sub" -maxdepth 1 -type f -exec install -m 0644 -t "$rootfs/etc/$sub" {} +
done

# What its RUN steps do: only the units kind wants start; systemd is init.
rm -f "$rootfs"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service \
  "$rootfs"/lib/systemd/system/multi-user.target.wants/* \
  "$rootfs"/etc/systemd/system/*.wants/* \
  "$rootfs"/lib/systemd/system/local-fs.target.wants/* \
  "$rootfs"/lib/systemd/system/sockets.target.wants/*udev* \
  "$rootfs"/lib/systemd/system/sockets.target.wants/*initctl* \
  "$rootfs"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$rootfs/etc/systemd/journald.conf"
ln -sf /lib/systemd/systemd "$rootfs/sbin/init"
chroot "$rootfs" systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
  >/dev/null 2>&1
chroot "$rootfs" systemctl mask systemd-binfmt.service >/dev/null 2>&1
mkdir -p "$rootfs/etc/kubernetes/manifests"

# Debian's containerd, CNI plugins and runc where kind's files look for them.
ln -sf /usr/bin/containerd "$rootfs/usr/local/bin/containerd"
mkdir -p "$rootfs/opt/cni"
ln -sfn /usr/lib/cni "$rootfs/opt/cni/bin"
sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
  "$rootfs/etc/containerd/config.toml"
grep -q 'restrict_oom_score_adj = true' "$rootfs/etc/containerd/config.toml" ||
  die "kind's containerd config has no restrict_oom_score_adj to set"

# The base runtime spec kind's config names: containerd's default spec, plus kind's hook that
# mounts the product files, without rlimits.
chroot "$rootfs" ctr oci spec | python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
    {"path": "/kind/bin/mount-product-files.sh"})
spec["process"].pop("rlimits", None)
json.dump(spec, sys.stdout, indent=2)' >"$rootfs/etc/containerd/cri-base.json"

cat >"$rootfs/usr/local/sbin/runc" <<'EOF'
#!/bin/bash
# Written by canaryguard hack/images/kind-base.sh. Where this node's capability bounding set
# lacks CAP_SYS_RESOURCE, runc cannot apply any capability set that holds it: drop it from
# the bundle's config.json (create, run) or the --process file (exec).
# Elsewhere runc runs unchanged.
set -euo pipefail
runc=/usr/sbin/runc
bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
if (( (16#$bnd >> 24 & 1) == 1 )); then exec "$runc" "$@"; fi

drop() { # FILE JQ_PATH
  [[ -f $1 ]] || return 0
  local tmp=$1.canaryguard
  jq "if $2 then $2 |= with_entries(.value |= (if type == \"array\" then
      map(select(. != \"CAP_SYS_RESOURCE\")) else . end)) else . end" "$1" >"$tmp" &&
    mv -f "$tmp" "$1"
}

args=("$@")
i=0
# runc's global options that take a value; the first other word is the command.
while (( i < ${#args[@]} )) && [[ ${args[i]} == -* ]]; do
  case ${args[i]} in
    --root | --log | --log-format | --criu | --rootless) i=$((i + 2)) ;;
    *) i=$((i + 1)) ;;
  esac
done
command=${args[i]:-}
bundle=. process=
for (( j = i + 1; j < ${#args[@]}; j++ )); do
  case ${args[j]} in
    --bundle | -b) bundle=${args[j + 1]:-.} ;;
    --bundle=*) bundle=${args[j]#--bundle=} ;;
    --process | -p) process=${args[j + 1]:-} ;;
    --process=*) process=${args[j]#--process=} ;;
  esac
done
case $command in
  create | run) drop "$bundle/config.json" .process.capabilities ;;
  exec) [[ -n $process ]] && drop "$process" .capabilities ;;
esac
exec "$runc" "$@"
EOF
chmod 0755 "$rootfs/usr/local/sbin/runc"

# kubelet on cgroup v1: systemd, started after kind's entrypoint made /kubelet and /kubelet.slice
# in each hierarchy, mounts the v1 hierarchies the engine did not give the container (here:
# hugetlb, net_cls,net_prio, perf_event). They lack kubelet.slice and kubelet refuses to start
# ("cgroup ["kubelet"] has some missing paths"). Unmount them before kubelet starts, as kind's
# entrypoint does with the hierarchies it cannot scope; creating the cgroups instead would
# leave them in the host's root cgroup of those hierarchies.
cat >"$rootfs/kind/bin/canaryguard-cgroup-v1.sh" <<'EOF'
#!/bin/bash
# Written by canaryguard hack/images/kind-base.sh; run before kubelet (12-canaryguard.conf).
set -euo pipefail
[[ -f /sys/fs/cgroup/cgroup.controllers ]] && exit 0
for dir in /sys/fs/cgroup/*/; do
  dir=${dir%/}
  [[ -L $dir ]] && continue
  mountpoint -q "$dir" || continue
  [[ $(stat -f -c %T "$dir") == cgroupfs ]] || continue
  [[ -d $dir/kubelet.slice ]] && continue
  echo "unmounting $dir: a cgroup v1 hierarchy without kubelet.slice (mounted by systemd)"
  umount "$dir"
done
EOF
chmod 0755 "$rootfs/kind/bin/canaryguard-cgroup-v1.sh"
cat >"$rootfs/etc/systemd/system/kubelet.service.d/12-canaryguard.conf" <<'EOF'
# canaryguard hack/images/kind-base.sh: see /kind/bin/canaryguard-cgroup-v1.sh.
[Service]
ExecStartPre=/kind/bin/canaryguard-cgroup-v1.sh
EOF

cat >"$rootfs/usr/local/bin/ctr" <<'EOF'
#!/bin/bash
# Written by canaryguard hack/images/kind-base.sh. Debian's ctr (containerd 1.6) with what
# kind's node-image builder asks of containerd 2's ctr: `ctr info`, answered by `ctr version`,
# and `ctr images import --label=K=V`, run as the import and then `ctr images label` on the
# images it created. Every other command runs /usr/bin/ctr unchanged.
set -euo pipefail
ctr=/usr/bin/ctr
args=("$@")
globals=()
i=0
# ctr's global options that take a value; the first other word is the command.
while (( i < ${#args[@]} )) && [[ ${args[i]} == -* ]]; do
  case ${args[i]} in
    --address | -a | --namespace | -n | --timeout | --connect-timeout)
      globals+=("${args[i]}" "${args[i + 1]:-}")
      i=$((i + 2))
      ;;
    *)
      globals+=("${args[i]}")
      i=$((i + 1))
      ;;
  esac
done
rest=("${args[@]:i}")
if [[ ${rest[0]:-} == info ]]; then
  exec "$ctr" "${globals[@]}" version
fi
if [[ ${rest[0]:-} =~ ^(images|image|i)$ && ${rest[1]:-} == import ]]; then
  labels=() keep=()
  for (( j = 2; j < ${#rest[@]}; j++ )); do
    case ${rest[j]} in
      --label=*) labels+=("${rest[j]#--label=}") ;;
      --label) labels+=("${rest[j + 1]:-}"); j=$((j + 1)) ;;
      *) keep+=("${rest[j]}") ;;
    esac
  done
  if (( ${#labels[@]} > 0 )); then
    before=$("$ctr" "${globals[@]}" images ls -q | sort)
    "$ctr" "${globals[@]}" images import "${keep[@]}"
    after=$("$ctr" "${globals[@]}" images ls -q | sort)
    comm -13 <(echo "$before") <(echo "$after") | while read -r ref; do
      [[ -n $ref ]] && "$ctr" "${globals[@]}" images label "$ref" "${labels[@]}" >/dev/null
    done
    exit 0
  fi
fi
exec "$ctr" "$@"
EOF
chmod 0755 "$rootfs/usr/local/bin/ctr"

import_rootfs "$rootfs" "$IMAGE-rootfs"
# docker import cannot set STOPSIGNAL (systemd halts on SIGRTMIN+3); a Dockerfile can.
old=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker build --quiet -t "$IMAGE" - >/dev/null <<DOCKERFILE
FROM $IMAGE-rootfs
ENV container=docker \\
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
docker rmi "$IMAGE-rootfs" >/dev/null
if [[ -n $old && $old != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
  docker rmi "$old" >/dev/null 2>&1 || true
fi
log "built $IMAGE in $((SECONDS - start)) s, $(image_size "$IMAGE")"
