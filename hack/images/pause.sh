#!/usr/bin/env bash
# The pod sandbox (pause) image for kind nodes built here, from hack/images/pause.c (static,
# gcc), tagged as the sandbox image that kind's containerd config names (read from the kind
# module hack/kind pins, so containerd never tries to pull it). Skipped if present.
#
#   bash hack/images/pause.sh        # prints the image name last
set -euo pipefail
# shellcheck source=hack/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_docker
command -v go >/dev/null 2>&1 || die "go is needed to fetch the kind module"
kind_module=$(cd "$ROOT/hack/kind" && GOFLAGS=-mod=readonly GOWORK=off go mod download \
  -json sigs.k8s.io/kind | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
IMAGE=$(sed -n 's/^[[:space:]]*sandbox_image[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' \
  "$kind_module/images/base/files/etc/containerd/config.toml")
[[ -n $IMAGE ]] || die "no sandbox_image in kind's containerd config"

if [[ ${FORCE:-0} != 1 ]] && image_exists "$IMAGE"; then
  log "$IMAGE present ($(image_size "$IMAGE")); FORCE=1 rebuilds"
  echo "$IMAGE"
  exit 0
fi
ensure_tool gcc gcc
start=$SECONDS
dir=$WORK_DIR/pause
trap 'rm -rf "$dir"' EXIT
rm -rf "$dir"
mkdir -p "$dir/rootfs"
gcc -static -Os -s -Wall -Wextra -Werror -o "$dir/rootfs/pause" "$IMAGES_DIR/pause.c"
# The same unprivileged user as the upstream image.
import_rootfs "$dir/rootfs" "$IMAGE" --change 'USER 65535:65535' --change 'ENTRYPOINT ["/pause"]'
log "built $IMAGE in $((SECONDS - start)) s, $(image_size "$IMAGE")"
echo "$IMAGE"
