# shellcheck shell=bash disable=SC2034
# Shared by the image scripts in hack/images/ (sourced, not run). No image registry is needed:
# root filesystems come from debootstrap and the Debian mirror this machine's apt already uses.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGES_DIR=$ROOT/hack/images
BASE_IMAGE=${CANARYGUARD_BASE_IMAGE:-canaryguard/debian-python:bookworm}
SUITE=bookworm
# Scratch space for root filesystems and wheelhouses, outside the checkout.
WORK_DIR=${CANARYGUARD_IMAGE_WORK:-${TMPDIR:-/tmp}/canaryguard-images}

log() { echo "images: $*"; }
die() { echo "images: $*" >&2; exit 1; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

image_size() { # human-readable size of a local image
  docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'
}

# The Debian mirror apt on this machine is configured with, for suite $SUITE (main), read at
# run time so no mirror is written anywhere. CANARYGUARD_DEBIAN_MIRROR overrides it.
debian_mirror() {
  if [[ -n ${CANARYGUARD_DEBIAN_MIRROR:-} ]]; then
    echo "$CANARYGUARD_DEBIAN_MIRROR"
    return
  fi
  local found
  found=$(
    {
      # One-line style: deb [options] URI SUITE COMPONENTS...
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' |
        awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
      # deb822 style: stanzas separated by blank lines, with Types, URIs and Suites fields.
      cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk -v suite="$SUITE" '
          function flush() {
            if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "")
              { print uri; found = 1 }
            types = ""; suites = ""; uri = ""
          }
          /^[[:space:]]*#/ { next }
          /^[[:space:]]*$/ { if (!found) flush(); next }
          tolower($1) == "types:" { $1 = ""; types = $0 }
          tolower($1) == "suites:" { $1 = ""; suites = $0 }
          tolower($1) == "uris:" { uri = $2 }
          END { if (!found) flush() }'
    } | head -n 1
  )
  [[ -n $found ]] || die "no 'deb' source for $SUITE in /etc/apt/sources.list{,.d/}; set" \
    "CANARYGUARD_DEBIAN_MIRROR to a Debian mirror URL"
  echo "$found"
}

ensure_tool() { # COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  command -v apt-get >/dev/null 2>&1 || die "$1 is needed (Debian package $2)"
  [[ $(id -u) == 0 ]] || die "$1 is needed; run as root to install Debian package $2"
  log "installing Debian package $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null
}

need_docker() {
  timeout 15 docker info >/dev/null 2>&1 ||
    die "no Docker engine answers; run: bash hack/docker-engine.sh start"
}

# debootstrap SUITE into DIR with the packages given, then strip what an image does not need:
# package lists and caches, documentation, and the mirror this machine uses.
make_rootfs() { # DIR PACKAGE,PACKAGE,...
  local dir=$1 include=$2 mirror
  ensure_tool debootstrap debootstrap
  [[ $(id -u) == 0 ]] || die "debootstrap needs root"
  mirror=$(debian_mirror)
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  log "debootstrap --variant=minbase $SUITE with $include"
  if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$dir" "$mirror" \
    >"$dir.debootstrap.log" 2>&1; then
    tail -n 20 "$dir.debootstrap.log" >&2
    [[ -f $dir/debootstrap/debootstrap.log ]] && tail -n 20 "$dir/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log: $dir.debootstrap.log)"
  fi
  clean_rootfs "$dir"
}

clean_rootfs() { # DIR
  local dir=$1
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/log/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/usr/share/locale/* "$dir"/tmp/* "$dir"/var/tmp/* "$dir"/root/.cache
  # The image must not name this machine's mirror; apt inside gets its source at build time.
  rm -f "$dir"/etc/apt/sources.list "$dir"/etc/apt/sources.list.d/*
  : >"$dir/etc/apt/sources.list"
  # debootstrap copies the build host's resolver and host name; the engine provides its own.
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/hostname"
}

import_rootfs() { # DIR IMAGE [docker import --change ...]
  local dir=$1 image=$2 old
  shift 2
  old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  tar --numeric-owner -C "$dir" -c . | docker import "$@" - "$image" >/dev/null
  # A rebuild leaves the image the tag pointed to untagged; remove it unless still in use.
  if [[ -n $old && $old != "$(docker image inspect --format '{{.Id}}' "$image")" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

# Wheels of a Python project and all it needs, and of its build backend, into DIR, built by
# the host's pip (its index and certificates; the image sees neither). The interpreter must be
# the base image's minor version, so compiled wheels fit it.
build_wheelhouse() { # DIR PROJECT_DIR...
  local dir=$1 src want have
  shift
  want=$(docker run --rm --network none "$BASE_IMAGE" python3 -c \
    'import sys; print("%d.%d" % sys.version_info[:2])')
  have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ $have == "$want" ]] ||
    die "$PYTHON is Python $have but $BASE_IMAGE has $want; set PYTHON=python$want"
  rm -rf "$dir"
  mkdir -p "$dir"
  # Build from a copy: pip would write build/ and *.egg-info into the checkout.
  src=$(mktemp -d "$WORK_DIR.src.XXXXXX")
  local projects=() project
  for project in "$@"; do
    mkdir -p "$src/$(basename "$project")"
    # Top-level local state (the checkout's tests/ too), then caches and metadata anywhere.
    tar -C "$project" --anchored --exclude=./.git --exclude=./.venv --exclude=./tests \
      --exclude=./build --exclude=./dist --exclude='./.*cache' --exclude=./.hypothesis \
      --no-anchored --exclude='*.egg-info' --exclude=__pycache__ -c . |
      tar -C "$src/$(basename "$project")" -x
    projects+=("$src/$(basename "$project")")
  done
  log "pip wheel ${*##*/} and dependencies (Python $have) into ${dir#"$ROOT"/}"
  if ! "$PYTHON" -m pip wheel --quiet --wheel-dir "$dir" "${projects[@]}" \
    "setuptools>=77" wheel; then
    rm -rf "$src"
    die "pip wheel failed"
  fi
  rm -rf "$src"
  log "wheelhouse: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1)"
}

# docker build, leaving no untagged images behind: the classic builder keeps each earlier
# stage as an untagged image and the image a rebuilt tag pointed to; both are removed here.
# A digest of what an image is built from: the files under the paths given (caches, build
# output and egg-info left out) and the base image. An image labelled with the same digest
# is up to date (FORCE=1 rebuilds anyway).
SOURCES_LABEL=io.canaryguard.sources
sources_digest() { # PATH...
  {
    docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || echo "no $BASE_IMAGE"
    find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' \
      -not -path '*.egg-info/*' -not -path '*/build/*' -print0 | sort -z | xargs -0 sha256sum |
      sed "s|  $ROOT/|  |"
  } | sha256sum | cut -c1-16
}

up_to_date() { # IMAGE DIGEST
  [[ ${FORCE:-0} != 1 ]] &&
    [[ $(docker image inspect --format "{{index .Config.Labels \"$SOURCES_LABEL\"}}" "$1" \
      2>/dev/null) == "$2" ]]
}

# A failed build names the image and shows the end of the builder's output (the failing step).
build_image() { # IMAGE CONTEXT [docker build options...]
  local image=$1 context=$2 old new build_log
  shift 2
  old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  mkdir -p "$WORK_DIR"
  build_log=$(mktemp "$WORK_DIR/build.XXXXXX")
  if ! docker build --force-rm "$@" -t "$image" "$context" >"$build_log" 2>&1; then
    echo "images: docker build of $image failed; last lines of its output:" >&2
    tail -n 30 "$build_log" | sed 's/^/  | /' >&2
    rm -f "$build_log"
    die "docker build of $image failed"
  fi
  rm -f "$build_log"
  # The build stage again (from cache, instantly), under a name, so it can be removed by name.
  docker build --quiet --force-rm "$@" --target build -t "$image-build-stage" "$context" \
    >/dev/null
  docker rmi "$image-build-stage" >/dev/null
  new=$(docker image inspect --format '{{.Id}}' "$image")
  if [[ -n $old && $old != "$new" ]]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}
