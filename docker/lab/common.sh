# Shared helpers of the lab's role scripts (sourced).
set -euo pipefail
export no_proxy='*' NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

STATE=${FLEETGATE_STATE:-/var/lib/fleetgate}
BUNDLES=${LAB_BUNDLES:-/lab/bundles}

log() { echo "lab: $(basename "$0" .sh): $*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_for SECONDS DESC CMD...: retry CMD every second until it succeeds
wait_for() {
  local t=$1 what=$2; shift 2
  for _ in $(seq "$t"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "gave up after $t s waiting for $what"
}
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# the first IPv4 address a name resolves to
ipv4_of() { getent ahostsv4 "$1" | awk 'NR == 1 { print $1 }'; }
