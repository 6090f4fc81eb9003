#!/usr/bin/env bash
# The fleetgate Compose lab with podman (docs/lab-compose.md).
#
#   docker/lab.sh up      make the base image once (debootstrap), build the lab
#                         image from this source tree, start the lab
#   docker/lab.sh check   run the check job: fleetgate status, exit 0 only
#                         when every device is enrolled
#   docker/lab.sh down    remove the lab's containers, network and volumes
#                         (the images stay)
#
# Installs nothing. Needs root, podman, podman-compose, runc and debootstrap
# (apt-get install podman podman-compose runc debootstrap). The podman
# settings of docker/containers.conf apply through CONTAINERS_CONF; the
# machine's own configuration is left alone. Environment:
#   LAB_BASE     the base image (localhost/debian:bookworm, made here when missing)
#   LAB_MIRROR   the Debian mirror for debootstrap (default: from /etc/apt)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
export CONTAINERS_CONF="$here/containers.conf"
PROJECT=fleetgate-lab
IMAGE=localhost/fleetgate-lab:latest
BASE=${LAB_BASE:-localhost/debian:bookworm}
# every service but the check job, which `check` runs
SERVICES=(challtestsrv pebble scepserver init gateway agent-laptop agent-web agent-scep est-device)

say() { echo "==> $*" >&2; }
die() { echo "lab.sh: $*" >&2; exit 1; }

need_tools() {
  local missing=() t
  for t in podman podman-compose runc debootstrap; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing: ${missing[*]}; apt-get install podman podman-compose runc debootstrap"
  [ "$(id -u)" -eq 0 ] || die "run as root (podman with runc and cgroupfs, docker/containers.conf)"
}

compose() { podman-compose -p "$PROJECT" -f "$here/compose.yaml" "$@"; }
# podman-compose prints every podman command it runs: that goes to a log
COMPOSE_LOG=/var/tmp/fleetgate-lab-compose.log
compose_logged() {
  echo "---- podman-compose $*" >>"$COMPOSE_LOG"
  compose "$@" >>"$COMPOSE_LOG" 2>&1 || { tail -n 20 "$COMPOSE_LOG" >&2; return 1; }
}

# The Debian mirror apt uses: the first URIs of a deb822 source of suite
# bookworm (not -security) in /etc/apt/sources.list.d/, else a one-line
# "deb URI bookworm ..." entry.
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )bookworm( |$)/) { print u; exit } u = ""; s = ""; next }
      /^URIs:/ { u = $2 }
      /^Suites:/ { $1 = ""; s = $0 " " }
      END { if (u != "" && s ~ /(^| )bookworm( |$)/) print u }' "$f" | head -n 1)
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  uri=$(cat /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null |
    awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' | sed 's/^\[.*\]$//')
  [ -n "$uri" ] && { echo "$uri"; return 0; }
  return 1
}

base_image() {
  podman image exists "$BASE" && return 0
  [ "$BASE" = localhost/debian:bookworm ] || die "base image $BASE not found"
  local mirror dir
  mirror=${LAB_MIRROR:-$(debian_mirror)} || die "no Debian mirror for bookworm in /etc/apt/sources.list.d/; set LAB_MIRROR"
  dir=$(mktemp -d /var/tmp/fleetgate-lab-rootfs.XXXXXX)
  say "debootstrap --variant=minbase bookworm $dir $mirror"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 ||
    { tail -n 20 "$dir.log" >&2; die "debootstrap failed (log: $dir.log)"; }
  say "podman import -> $BASE"
  tar -C "$dir" -c . | podman import -q - "$BASE" >/dev/null
  rm -rf "$dir" "$dir.log"
}

# The lab image, from a clean build context: a copy of the source tree
# without build*/, .git, .ci and tests/ (the image needs none of them), so
# that no build directory reaches podman. Unchanged layers come from
# podman's cache, so a second `up` builds in seconds.
lab_image() {
  local ctx
  ctx=$(mktemp -d /var/tmp/fleetgate-lab-ctx.XXXXXX)
  tar -C "$top" -c --exclude='./build*' --exclude=./.git --exclude=./tests --exclude=./.ci . |
    tar -C "$ctx" -x
  local log=/var/tmp/fleetgate-lab-build.log
  say "podman build -t $IMAGE --build-arg BASE=$BASE (context: a copy of $top; log: $log)"
  if ! podman build -f "$ctx/docker/Containerfile" --build-arg "BASE=$BASE" -t "$IMAGE" "$ctx" >"$log" 2>&1; then
    rm -rf "$ctx"
    tail -n 30 "$log" >&2
    die "podman build failed (log: $log)"
  fi
  rm -rf "$ctx"
}

up() {
  base_image
  lab_image
  say "podman-compose up -d ${SERVICES[*]} (log: $COMPOSE_LOG)"
  compose_logged up -d "${SERVICES[@]}" || die "podman-compose up failed"
  podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}\t{{.Status}}\t{{.Ports}}' >&2
  say "the lab is starting; docker/lab.sh check waits until every device is enrolled"
}

# podman-compose 1.0.3 does not pass the exit status of `run` on: it prints
# "exit code: N" after the container ends (Docker's compose passes it on).
# Its own chatter (the podman commands it runs) goes to a log; the check
# job's output is shown.
check() {
  local log rc=0 code
  log=$(mktemp /tmp/fleetgate-lab-check.XXXXXX)
  compose run --rm --no-deps -T check >"$log" 2>&1 || rc=$?
  awk -v run="^podman run --name=${PROJECT}_check_tmp" \
    '$0 ~ run { on = 1; next } on && /^exit code: -?[0-9]+$/ { on = 0; next } on' "$log"
  code=$(sed -n 's/^exit code: \(-\{0,1\}[0-9]*\)$/\1/p' "$log" | tail -n 1)
  if [ "$rc" -ne 0 ] || [ -z "$code" ]; then
    tail -n 20 "$log" >&2
    die "podman-compose run failed (status $rc; log $log)"
  fi
  rm -f "$log"
  return "$code"
}

down() {
  say "podman-compose down -v (log: $COMPOSE_LOG)"
  compose_logged down -v || true
  # what podman-compose may have left: containers, the network, the volumes
  local ids
  ids=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")
  [ -z "$ids" ] || podman rm -f $ids >/dev/null
  ids=$(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT")
  [ -z "$ids" ] || podman volume rm -f $ids >/dev/null
  local n
  for n in lab edge; do
    if podman network exists "${PROJECT}_$n"; then podman network rm -f "${PROJECT}_$n" >/dev/null; fi
  done
  say "lab removed (images kept: $IMAGE, $BASE)"
}

need_tools
case "${1:-}" in
  up) up ;;
  check) check ;;
  down) down ;;
  *) echo "usage: docker/lab.sh up|check|down" >&2; exit 2 ;;
esac
