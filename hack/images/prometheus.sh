#!/usr/bin/env bash
# canaryguard/prometheus:bookworm (also tagged with the package's version): the real
# Prometheus server from Debian's `prometheus` package, in a Debian bookworm root filesystem
# made by debootstrap from the mirror this machine's apt uses. No registry, no Dockerfile.
# Skipped if the image exists (FORCE=1 rebuilds). Checked by starting it and asking /-/ready.
#
#   bash hack/images/prometheus.sh
#   docker run -v CONFIG:/etc/prometheus/prometheus.yml canaryguard/prometheus:bookworm
set -euo pipefail
# shellcheck source=hack/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=${CANARYGUARD_PROMETHEUS_IMAGE:-canaryguard/prometheus:bookworm}

need_docker
if [[ ${FORCE:-0} != 1 ]] && image_exists "$IMAGE"; then
  log "$IMAGE present ($(image_size "$IMAGE")); FORCE=1 rebuilds"
  exit 0
fi

start=$SECONDS
rootfs=$WORK_DIR/prometheus
trap 'rm -rf "$rootfs" "$rootfs.debootstrap.log"' EXIT
make_rootfs "$rootfs" prometheus
# 214 MB of moment-timezone's per-release data files; the web UI loads its builds/ instead.
rm -rf "$rootfs/usr/share/javascript/moment-timezone/data"
# The package's postinst made a `prometheus` system user; run as it, by number.
ids=$(awk -F: '$1 == "prometheus" { print $3 ":" $4 }' "$rootfs/etc/passwd")
[[ -n $ids ]] || die "the prometheus package made no prometheus user"
version=$(awk '/^Package: prometheus$/ { p = 1 } p && /^Version:/ { print $2; exit }' \
  "$rootfs/var/lib/dpkg/status")
version=${version%%+*}
# The data directory, writable by that user (mount a volume over it to keep data).
mkdir -p "$rootfs/prometheus"
chown "$ids" "$rootfs/prometheus"
import_rootfs "$rootfs" "$IMAGE" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "USER $ids" \
  --change 'WORKDIR /prometheus' \
  --change 'EXPOSE 9090' \
  --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
  --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
docker tag "$IMAGE" "${IMAGE%:*}:$version"
log "built $IMAGE (prometheus $version, also tagged ${IMAGE%:*}:$version) in" \
  "$((SECONDS - start)) s, $(image_size "$IMAGE")"

# It must serve: start it on a read-only root with a scratch data directory, ask /-/ready.
name=canaryguard-prometheus-check-$$
docker run -d --rm --name "$name" --read-only --tmpfs "/prometheus:uid=${ids%:*}" "$IMAGE" \
  >/dev/null
trap 'docker rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$rootfs" "$rootfs.debootstrap.log"' EXIT
address=$(docker inspect --format '{{.NetworkSettings.IPAddress}}' "$name")
for _ in $(seq 30); do
  if python3 -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)' \
    "http://$address:9090/-/ready" 2>/dev/null; then
    log "checked $IMAGE: /-/ready answers on a read-only root as $ids"
    exit 0
  fi
  sleep 1
done
docker logs "$name" 2>&1 | tail -n 20 >&2
die "$IMAGE did not become ready"
