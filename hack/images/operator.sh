#!/usr/bin/env bash
# The operator image (canaryguard:<manifests' newTag>) from the project's Dockerfile, without a
# registry or network in the build: the base is canaryguard/debian-python:bookworm (base.sh),
# and pip inside the build installs from wheels built here on the host, where pip reaches
# PyPI with this machine's own settings. None of those settings reach the image.
# Then checks the image: runs as 65532 with a read-only root, and holds only the operator.
#
#   bash hack/images/operator.sh
#
# Skipped when the image is labelled with the digest of its sources (pyproject.toml, README.md,
# operator/, the Dockerfile, these scripts) and base; FORCE=1 rebuilds (and resolves the
# dependencies again).
set -euo pipefail
# shellcheck source=hack/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_docker
FORCE=0 bash "$IMAGES_DIR/base.sh"  # present is enough: FORCE=1 rebuilds this image only

tag=$(sed -n 's/^ *newTag: *//p' "$ROOT/manifests/kustomization.yaml" | head -n 1)
IMAGE=${CANARYGUARD_OPERATOR_IMAGE:-canaryguard:${tag:?no newTag in manifests/kustomization.yaml}}
PYTHON=${PYTHON:-python3}
# The Dockerfile looks for the wheelhouse here (.dockerignore lets only it through).
wheelhouse=$ROOT/dist/wheelhouse

digest=$(sources_digest "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/operator" \
  "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$IMAGES_DIR/lib.sh" "${BASH_SOURCE[0]}")
if up_to_date "$IMAGE" "$digest"; then
  log "$IMAGE is up to date with its sources ($digest); FORCE=1 rebuilds"
  exit 0
fi

start=$SECONDS
trap 'rm -rf "$wheelhouse"; rmdir --ignore-fail-on-non-empty "$ROOT/dist" 2>/dev/null || true' EXIT
build_wheelhouse "$wheelhouse" "$ROOT"
wheels_done=$SECONDS

log "docker build $IMAGE (FROM $BASE_IMAGE, no network)"
build_image "$IMAGE" "$ROOT" --network none --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
  --label "$SOURCES_LABEL=$digest"
log "built $IMAGE in $((SECONDS - start)) s (wheels $((wheels_done - start)) s," \
  "docker build $((SECONDS - wheels_done)) s), $(image_size "$IMAGE")"

# The image as the Deployment runs it: UID 65532, read-only root, no network.
run=(docker run --rm --read-only --user 65532:65532 --network none --entrypoint "")
"${run[@]}" "$IMAGE" canaryguard --help >/dev/null || die "canaryguard --help failed in $IMAGE"
user=$("${run[@]}" "$IMAGE" python3 -c 'import getpass; print(getpass.getuser())') ||
  die "UID 65532 has no user name in $IMAGE (kopf needs one)"
# The test bed is a distribution of its own; the operator image must not carry it.
if "${run[@]}" "$IMAGE" python3 -c 'import importlib.util as u, sys
sys.exit(0 if u.find_spec("canaryguard_testbed") else 1)'; then
  die "$IMAGE holds canaryguard_testbed"
fi
log "checked $IMAGE: canaryguard --help as 65532 ($user) on a read-only root; no canaryguard_testbed"
