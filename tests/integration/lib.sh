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

# gw_init [extra fleetgate init args]: a gateway state dir on a free port.
gw_init() {
  for _ in 1 2 3 4 5 6 7 8; do
    PORT=$((10000 + RANDOM % 22000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then break; fi
  done
  ENDPOINT="tcp://127.0.0.1:$PORT"
  "$FLEETGATE" init --state "$GW" --listen "$ENDPOINT" "$@" >"$T/init.out" || die "fleetgate init failed: $(cat "$T/init.out")"
  SERVER_KEY=$(sed -n 's/^public = //p' "$GW/keys/gateway.pub")
}

# gw_start: run fleetgated in the background and wait until it listens.
gw_start() {
  : >>"$T/gw.log"
  local before
  before=$(grep -c "listening on" "$T/gw.log" || true)
  "$FLEETGATED" --state "$GW" --log-level "${GW_LOG_LEVEL:-info}" 2>>"$T/gw.log" &
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
