#!/usr/bin/env bash
# canaryguard/debian-python:bookworm: Debian bookworm (minbase) with Debian's python3 (3.11),
# its venv module and ca-certificates, built by debootstrap from the Debian mirror this
# machine's apt uses and imported into the local Docker engine. No registry is involved.
# The base of the operator, test-bed and Prometheus images here; skipped if it exists
# (FORCE=1 rebuilds).
#
#   bash hack/images/base.sh
set -euo pipefail
# shellcheck source=hack/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_docker
if [[ ${FORCE:-0} != 1 ]] && image_exists "$BASE_IMAGE"; then
  log "$BASE_IMAGE present ($(image_size "$BASE_IMAGE")); FORCE=1 rebuilds"
  exit 0
fi

start=$SECONDS
rootfs=$WORK_DIR/debian-python
trap 'rm -rf "$rootfs" "$rootfs.debootstrap.log"' EXIT
make_rootfs "$rootfs" python3,python3-venv,ca-certificates
# An imported image has no environment; without PATH, a Dockerfile's ENV PATH=...:${PATH}
# would end in an empty entry (the working directory).
import_rootfs "$rootfs" "$BASE_IMAGE" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]'
log "built $BASE_IMAGE in $((SECONDS - start)) s, $(image_size "$BASE_IMAGE")"
