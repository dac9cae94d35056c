#!/usr/bin/env bash
# Installs the Prometheus server from Debian's package without starting its service:
# tests start their own instance with a generated config.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Keep the package's postinst from starting a system-wide prometheus.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus
prometheus --version 2>&1 | head -1
