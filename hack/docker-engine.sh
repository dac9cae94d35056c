#!/usr/bin/env bash
# A Docker engine for the kind tier, on machines without systemd.
#
#   bash hack/docker-engine.sh start    # use the engine that answers, or install and start one
#   bash hack/docker-engine.sh status   # does an engine answer; did this script start it
#   bash hack/docker-engine.sh stop     # stop the dockerd this script started, nothing else
#
# start: if `docker info` already answers, that engine is used and nothing is changed.
# Otherwise Debian's docker.io is installed with apt-get when dockerd is absent, and dockerd
# is started in the background (log and pid file in $CANARYGUARD_DOCKER_STATE). Where the
# capability bounding set lacks CAP_SYS_RESOURCE (some sandboxes), every privileged container
# (kind's nodes are) fails with "unable to apply caps"; there, and only there, an OCI runtime
# wrapper that drops that one capability is registered as dockerd's default runtime.
set -euo pipefail

if [[ $(id -u) == 0 ]]; then
  default_state=/var/lib/canaryguard-docker
else
  default_state=$HOME/.cache/canaryguard/docker
fi
STATE_DIR=${CANARYGUARD_DOCKER_STATE:-$default_state}
WAIT_SECONDS=${CANARYGUARD_DOCKER_WAIT:-90}
LOG=$STATE_DIR/dockerd.log
PID_FILE=$STATE_DIR/dockerd.pid
RUNTIME_NAME=canaryguard-runc
WRAPPER=/usr/local/bin/canaryguard-runc
DAEMON_JSON=/etc/docker/daemon.json

say() { echo "docker-engine: $*"; }
die() { echo "docker-engine: $*" >&2; exit 1; }

answers() { timeout 15 docker info >/dev/null 2>&1; }

# The pid of the dockerd this script started, if it still runs.
our_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
  echo "$pid"
}

# Bit 24 of the bounding set is CAP_SYS_RESOURCE.
lacks_sys_resource() {
  local bnd
  bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
  (( (16#$bnd >> 24 & 1) == 0 ))
}

install_docker() {
  if ! command -v apt-get >/dev/null 2>&1; then
    die "no Docker engine answers and dockerd is not installed; install Docker Engine" \
      "(a dockerd with runc, e.g. Debian/Ubuntu package docker.io) and run this again"
  fi
  [[ $(id -u) == 0 ]] || die "dockerd is not installed; run as root to install docker.io"
  say "installing Debian package docker.io"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -q --no-install-recommends docker.io)
  if ! "${apt[@]}"; then
    say "apt-get install failed; updating the package lists and trying again"
    apt-get update -q
    "${apt[@]}"
  fi
  command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is not on PATH"
}

# The OCI runtime wrapper: runc, minus CAP_SYS_RESOURCE in what it is asked to create or exec.
write_wrapper() {
  local runc python tmp
  runc=$(command -v runc) || die "runc is not on PATH (Debian package runc)"
  python=$(command -v python3) || die "python3 is needed for the runtime wrapper"
  tmp=$(mktemp "$WRAPPER.XXXXXX")
  cat >"$tmp" <<EOF
#!$python -I
"""Written by canaryguard hack/docker-engine.sh. This sandbox's capability bounding set lacks
CAP_SYS_RESOURCE, so runc fails to apply any capability set that holds it (every privileged
container). Drop it from the bundle's config.json (create, run) or the --process file (exec),
then run runc with the same arguments."""
import json
import os
import sys

RUNC = "$runc"
DROP = "CAP_SYS_RESOURCE"
# runc's global options that take a value; the first other word is the command.
GLOBAL_VALUES = {"--root", "--log", "--log-format", "--criu", "--rootless"}


def option(args, names):
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def strip(path, key):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return
    process = doc.get("process", {}) if key == "process" else doc
    caps = (process or {}).get("capabilities") or {}
    changed = False
    for name, values in caps.items():
        if isinstance(values, list) and DROP in values:
            caps[name] = [v for v in values if v != DROP]
            changed = True
    if changed:
        tmp = path + ".canaryguard"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)


def main():
    args = sys.argv[1:]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in GLOBAL_VALUES else 1
    if i < len(args):
        command, rest = args[i], args[i + 1 :]
        if command in ("create", "run"):
            bundle = option(rest, ("--bundle", "-b")) or "."
            strip(os.path.join(bundle, "config.json"), "process")
        elif command == "exec":
            process = option(rest, ("--process", "-p"))
            if process:
                strip(process, "top")
    os.execv(RUNC, [RUNC] + args)


main()
EOF
  chmod 0755 "$tmp"
  mv -f "$tmp" "$WRAPPER"
}

# Add the wrapper to daemon.json as a runtime and the default one; other keys are kept.
register_wrapper() {
  mkdir -p "$(dirname "$DAEMON_JSON")"
  python3 -I - "$DAEMON_JSON" "$RUNTIME_NAME" "$WRAPPER" <<'EOF'
import json, os, sys
path, name, wrapper = sys.argv[1:]
try:
    with open(path) as f:
        text = f.read()
except FileNotFoundError:
    text = ""
config = json.loads(text) if text.strip() else {}
before = json.dumps(config, sort_keys=True)
config.setdefault("runtimes", {})[name] = {"path": wrapper}
config["default-runtime"] = name
if json.dumps(config, sort_keys=True) != before:
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"docker-engine: registered {name} as default runtime in {path}")
EOF
}

start() {
  if answers; then
    if pid=$(our_pid); then
      say "dockerd (pid $pid, started by this script) answers"
    else
      say "a Docker engine already answers; using it, nothing changed"
    fi
    return
  fi
  if pid=$(our_pid); then
    die "dockerd pid $pid (started by this script) runs but does not answer; see $LOG" \
      "or run: bash $0 stop"
  fi
  command -v dockerd >/dev/null 2>&1 || install_docker
  command -v docker >/dev/null 2>&1 || die "dockerd is installed but the docker client is not"
  [[ $(id -u) == 0 ]] || die "no Docker engine answers; starting dockerd needs root"
  if lacks_sys_resource; then
    say "CAP_SYS_RESOURCE is not in the capability bounding set: installing $WRAPPER"
    write_wrapper
    register_wrapper
  fi
  mkdir -p "$STATE_DIR"
  say "starting dockerd (log: $LOG)"
  # setsid: the daemon outlives this shell and its job control signals.
  setsid dockerd >>"$LOG" 2>&1 </dev/null &
  local pid=$! start=$SECONDS
  echo "$pid" >"$PID_FILE"
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      echo "docker-engine: dockerd exited; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2
      exit 1
    fi
    if (( SECONDS - start >= WAIT_SECONDS )); then
      echo "docker-engine: dockerd (pid $pid) did not answer within $WAIT_SECONDS s;" \
        "last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2
      exit 1
    fi
    sleep 1
  done
  say "dockerd (pid $pid) answers after $((SECONDS - start)) s:" \
    "$(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}')"
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$PID_FILE"
    say "no dockerd started by this script is running; nothing to stop"
    return
  fi
  say "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  # dockerd stops its containers first (10 s grace each, in parallel), then its containerd.
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if (( waited >= 60 )); then
      say "dockerd did not stop within 60 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "$PID_FILE"
  say "stopped"
}

status() {
  local pid=
  pid=$(our_pid) || pid=
  if answers; then
    say "engine answers: $(docker version --format \
      'server {{.Server.Version}}, client {{.Client.Version}}')," \
      "default runtime $(docker info --format '{{.DefaultRuntime}}')"
    if [[ -n $pid ]]; then say "started by this script: pid $pid, log $LOG"; fi
    return 0
  fi
  if [[ -n $pid ]]; then
    say "dockerd pid $pid (started by this script) runs but does not answer; see $LOG"
  else
    say "no Docker engine answers"
  fi
  return 3
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
