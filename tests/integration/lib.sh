# Shared helpers for the integration tests: each test makes its own temp
# directory, a gateway on a free loopback port, and agents, and cleans up.
# Source it; FG_BUILD and FG_SOURCE_ROOT come from meson (tests/meson.build).
set -euo pipefail

: "${FG_BUILD:?run through meson test}"
FLEETGATE="$FG_BUILD/gateway/fleetgate"
FLEETGATED="$FG_BUILD/gateway/fleetgated"
AGENT="$FG_BUILD/agents/fleetgate-agent"
PROBE="$FG_BUILD/tests/fg-probe"
BENCH="$FG_BUILD/agents/fleetgate-bench"

T=$(mktemp -d /tmp/fg-test.XXXXXX)
GW="$T/gw"
GW_PID=
FAILS=0
CHECKS=0

cleanup() {
  local rc=$?
  [ -n "$GW_PID" ] && kill -TERM "$GW_PID" 2>/dev/null
  wait 2>/dev/null || true
  if [ $rc -ne 0 ] || [ $FAILS -ne 0 ]; then
    echo "---- gateway log ($T/gw.log) ----"; tail -n 60 "$T/gw.log" 2>/dev/null || true
  else
    rm -rf "$T"
  fi
}
trap cleanup EXIT

ok()   { CHECKS=$((CHECKS + 1)); echo "ok - $*"; }
fail() { CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); echo "FAIL - $*"; }
die()  { echo "FATAL - $*"; exit 1; }

# check DESC CMD...: the command must succeed
check() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }
# expect_eq DESC ACTUAL EXPECTED
expect_eq() { if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: got '$2', want '$3'"; fi; }
# expect_match DESC TEXT REGEX
# (a here-string, not a pipe: with pipefail, grep -q closing the pipe early
# would fail the writer)
expect_match() { if grep -Eq -- "$3" <<<"$2"; then ok "$1"; else fail "$1: '$2' does not match /$3/"; fi; }

finish() {
  echo "# $CHECKS checks, $FAILS failed"
  [ $FAILS -eq 0 ]
}

# Random ports come from 10000-31999, below Linux's ephemeral range
# (32768-60999), so that no outgoing connection of another test holds them.

# fg_free_port [ADDR...]: a port nothing listens on at 127.0.0.1 (nor at
# the ADDRs), and never one this test handed out before: a port picked for
# pebble and one picked for the gateway are both free until the first is
# bound, so every port handed out is kept in $T/ports (a file, as callers
# use $(free_port), a subshell). free_port is the same at 127.0.0.1 only.
fg_free_port() {
  local p a busy
  for _ in $(seq 100); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % 22000))
    grep -qx "$p" "$T/ports" 2>/dev/null && continue
    busy=0
    for a in 127.0.0.1 "$@"; do
      if (exec 3<>"/dev/tcp/$a/$p") 2>/dev/null; then busy=1; break; fi
    done
    [ "$busy" = 0 ] || continue
    echo "$p" >>"$T/ports"
    echo "$p"
    return 0
  done
  die "no free port"
}
free_port() { fg_free_port; }

# gw_init [extra fleetgate init args]: a gateway state dir on a free port.
gw_init() {
  PORT=$(free_port)
  ENDPOINT="tcp://127.0.0.1:$PORT"
  "$FLEETGATE" init --state "$GW" --listen "$ENDPOINT" "$@" >"$T/init.out" || die "fleetgate init failed: $(cat "$T/init.out")"
  SERVER_KEY=$(sed -n 's/^public = //p' "$GW/keys/gateway.pub")
}

# gw_start: run fleetgated in the background and wait until it listens
# (in network namespace $GW_NETNS when set: tests/lab).
gw_start() {
  : >>"$T/gw.log"
  local before
  before=$(grep -c "listening on" "$T/gw.log" || true)
  ${GW_NETNS:+ip netns exec "$GW_NETNS"} "$FLEETGATED" --state "$GW" --log-level "${GW_LOG_LEVEL:-info}" 2>>"$T/gw.log" &
  GW_PID=$!
  for _ in $(seq 200); do
    [ "$(grep -c "listening on" "$T/gw.log" || true)" -gt "$before" ] && return 0
    kill -0 "$GW_PID" 2>/dev/null || die "fleetgated exited: $(tail -n 5 "$T/gw.log")"
    sleep 0.05
  done
  die "fleetgated did not start listening"
}

gw_stop() {
  [ -n "$GW_PID" ] || return 0
  kill -TERM "$GW_PID"
  local rc=0
  wait "$GW_PID" || rc=$?
  GW_PID=
  return $rc
}

gw_kill9() {
  [ -n "$GW_PID" ] || return 0
  kill -9 "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=
}

gw_alive() { [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; }

# bundle NAME [token create args...]: writes $T/NAME.bundle
bundle() {
  local name=$1; shift
  "$FLEETGATE" token create --state "$GW" --group "${GROUP:-test}" --bundle "$T/$name.bundle" "$@" >/dev/null
}

# agent_conf NAME [HOSTNAME]: an agent directory with one slot "default".
agent_conf() {
  local name=$1 dir="$T/agents/$1"
  mkdir -p "$dir"
  cat > "$dir/agent.conf" <<CONF
bundle = $T/$name.bundle
state_dir = $dir/state
request_timeout = ${AGENT_TIMEOUT:-5s}
[slot default]
key_type = ${KEY_TYPE:-p256}
key = $dir/default.key
cert = $dir/default.crt
chain = $dir/default-chain.crt
${RELOAD:+reload = $RELOAD}
CONF
  echo "$dir/agent.conf"
}

# agent NAME [args...]: run the agent once for NAME; output in $T/NAME.out
agent() {
  local name=$1; shift
  local rc=0
  "$AGENT" --config "$T/agents/$name/agent.conf" --once "$@" >"$T/$name.out" 2>&1 || rc=$?
  return $rc
}

# run_agent NAME [args...]: agent, with the facts under $T/facts/NAME (the
# backend tests give each device a hostname of its own there)
run_agent() {
  local name=$1; shift
  FLEETGATE_FACTS_ROOT="$T/facts/$name" agent "$name" "$@"
}
# the certificate and chain files of agent NAME's slot "default"
crt() { echo "$T/agents/$1/default.crt"; }
chain() { echo "$T/agents/$1/default-chain.crt"; }

sql() { sqlite3 "$GW/fleetgate.db" "$@"; }
