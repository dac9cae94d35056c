#!/usr/bin/env bash
# canaryguard/testbed:<version>: the test bed's router, model servers, load generator and
# PagerDuty receiver for a real cluster, FROM the local Debian base (base.sh), installed from
# wheels built here on the host (hack/images/testbed.Dockerfile); no network in the build.
#
#   bash hack/images/testbed.sh
set -euo pipefail
# shellcheck source=hack/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_docker
FORCE=0 bash "$IMAGES_DIR/base.sh"  # present is enough: FORCE=1 rebuilds this image only

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/tests/testbed/pyproject.toml" | head -n 1)
IMAGE=${CANARYGUARD_TESTBED_IMAGE:-canaryguard/testbed:${version:?no version in tests/testbed/pyproject.toml}}
PYTHON=${PYTHON:-python3}
# The build context: the wheelhouse and the Dockerfile, nothing else.
context=$WORK_DIR/testbed-context

# Skipped when the image is labelled with the digest of its sources (the operator's and the
# test bed's projects, these scripts) and base; FORCE=1 rebuilds.
digest=$(sources_digest "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/operator" \
  "$ROOT/tests/testbed" "$IMAGES_DIR/testbed.Dockerfile" "$IMAGES_DIR/lib.sh" \
  "${BASH_SOURCE[0]}")
if up_to_date "$IMAGE" "$digest"; then
  log "$IMAGE is up to date with its sources ($digest); FORCE=1 rebuilds"
  exit 0
fi

start=$SECONDS
trap 'rm -rf "$context"' EXIT
build_wheelhouse "$context" "$ROOT" "$ROOT/tests/testbed"
cp "$IMAGES_DIR/testbed.Dockerfile" "$context/Dockerfile"
wheels_done=$SECONDS

log "docker build $IMAGE (FROM $BASE_IMAGE, no network)"
build_image "$IMAGE" "$context" --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --label "$SOURCES_LABEL=$digest"
log "built $IMAGE in $((SECONDS - start)) s (wheels $((wheels_done - start)) s," \
  "docker build $((SECONDS - wheels_done)) s), $(image_size "$IMAGE")"

# Each server's command line parses, as 65532 on a read-only root.
run=(docker run --rm --read-only --user 65532:65532 --network none)
for server in router modelserver loadgen pagerduty_receiver; do
  "${run[@]}" "$IMAGE" python3 -m "canaryguard_testbed.$server" --help >/dev/null ||
    die "python3 -m canaryguard_testbed.$server --help failed in $IMAGE"
done
log "checked $IMAGE: router, modelserver, loadgen, pagerduty_receiver --help as 65532 on a read-only root"
