#!/usr/bin/env bash
# The ACME backend when things go wrong, against Debian's pebble on
# loopback with PEBBLE_WFE_NONCEREJECT=50 (pebble refuses half the nonces):
#  - badNonce: several enrollments all succeed, retried with fresh nonces;
#  - the order is a durable job: the gateway answers "pending" and the
#    agent collects the certificate with the same request id;
#  - fleetgated killed -9 mid-order and restarted: the same request id
#    completes from the stored order, one certificate;
#  - pebble killed mid-order and restarted (it forgets every account and
#    order): the plugin notices, registers and orders again, and the same
#    request completes with one certificate.
# pebble validates for real: the gateway answers http-01 (pebble.inc.sh).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pebble.inc.sh"

pebble_init
trap 'rc=$?; set +e; pebble_cleanup; (exit $rc); cleanup' EXIT
NONCEREJECT=50 pebble_start

gw_init --http "127.0.0.1:$HTTP01"
# inline_wait = 0: every call returns PENDING as soon as the order waits
# for the CA, so that an order is reliably in flight when a process dies
python3 - "$GW/fleetgated.conf" "$ACME_PORT" "$MGMT_PORT" "$P/tls-ca.pem" <<'EOF'
import sys
p, port, mport, ca = sys.argv[1:]
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["acme"] = {{ plugin = "acme", directory = "https://127.0.0.1:{port}/dir",
               tls_ca_file = "{ca}", root_url = "https://127.0.0.1:{mport}/roots/0",
               timeout = 5, poll_interval = 2, inline_wait = 0 }},
''', 1)
open(p, 'w').write(s)
EOF
cat > "$GW/policy.lua" <<'EOF'
function enroll(req)
  if req.new_device and req.token == nil and not req.renew then
    return deny("no token")
  end
  local name = string.lower(req.facts.hostname or "")
  return allow({ backend = "acme", cn = name, dns = { name }, validity = fleet.days(30) })
end

function checkin(dev)
  return {}
end
EOF
GW_LOG_LEVEL=debug gw_start

agent_for() { # NAME HOSTNAME
  local name=$1 host=$2
  GROUP=acme bundle "$name"
  KEY_TYPE=p256 AGENT_TIMEOUT=3s agent_conf "$name" >/dev/null
  mkdir -p "$T/facts/$name/proc/sys/kernel"
  echo "$host" > "$T/facts/$name/proc/sys/kernel/hostname"
}
run_agent() { # NAME [args]
  local name=$1; shift
  local rc=0
  FLEETGATE_FACTS_ROOT="$T/facts/$name" "$AGENT" --config "$T/agents/$name/agent.conf" --once "$@" \
    >>"$T/$name.out" 2>&1 || rc=$?
  return $rc
}
certs_for() { sql "select count(*) from certificates where subject like '%CN=$1%' or subject like '%CN = $1%'"; }
# mark, then new_log: the gateway log written since the mark;
# wait_log REGEX: until a line since the mark matches REGEX (20 s)
MARK=0
mark() { MARK=$(wc -l <"$T/gw.log"); }
new_log() { tail -n +$((MARK + 1)) "$T/gw.log"; }
wait_log() {
  for _ in $(seq 400); do new_log | grep -Eq -- "$1" && return 0; sleep 0.05; done
  return 1
}

# ---- 1. badNonce: five enrollments, all succeed ----
for i in 1 2 3 4 5; do
  agent_for n$i nonce-$i.test
  check "badNonce: enrollment $i succeeds" run_agent n$i
  check "badNonce: certificate $i chains to pebble's root" \
    openssl verify -CAfile "$P/root.pem" -untrusted "$(chain n$i)" "$(crt n$i)"
done
NB=$(grep -c 'badNonce from' "$T/gw.log" || true)
check "badNonce: pebble did refuse nonces ($NB retries)" test "$NB" -gt 0
expect_match "the durable job: the agent was told 'pending' and collected later" "$(cat "$T/n1.out")" \
  "pending at the CA .*asking again in [0-9]+ s"

# ---- 2. fleetgated killed -9 mid-order ----
agent_for k1 kill-gw.test
mark
FLEETGATE_FACTS_ROOT="$T/facts/k1" "$AGENT" --config "$T/agents/k1/agent.conf" --once >"$T/k1.out" 2>&1 &
K1=$!
check "kill -9: an order is in flight" wait_log "ACME order .* is pending; asking again"
RID=$(new_log | grep -E "ACME order .* is pending" | head -n 1 | sed -E 's/.*\[([0-9a-f]+)\].*/\1/')
gw_kill9
rc=0; wait "$K1" || rc=$?
check "kill -9: the agent did not get a certificate from the dead gateway" test "$rc" -ne 0
GW_LOG_LEVEL=debug gw_start
check "kill -9: after the restart the agent completes" run_agent k1
check "kill -9: certificate chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain k1)" "$(crt k1)"
expect_match "kill -9: the same request id completed" "$(cat "$T/gw.log")" "\[$RID\] enrolled device"
expect_eq "kill -9: one order for that request" "$(grep -cE "\[$RID\].*backend acme: ACME order https[^ ]*$" "$T/gw.log")" "1"
expect_eq "kill -9: one certificate" "$(certs_for kill-gw.test)" "1"

# ---- 3. pebble killed mid-order and restarted: it forgets everything ----
agent_for p1 pebble-restart.test
mark
FLEETGATE_FACTS_ROOT="$T/facts/p1" "$AGENT" --config "$T/agents/p1/agent.conf" --once >"$T/p1.out" 2>&1 &
P1=$!
check "pebble restart: an order is in flight" wait_log "ACME order .* is pending; asking again.*" 
RID=$(new_log | grep -E "ACME order .* is pending" | head -n 1 | sed -E 's/.*\[([0-9a-f]+)\].*/\1/')
pebble_stop
OLD_ROOT=$(openssl x509 -in "$P/root.pem" -noout -fingerprint -sha256)
sleep 1
NONCEREJECT=50 pebble_start
rc=0; wait "$P1" || rc=$?
if [ "$rc" -ne 0 ]; then run_agent p1 || true; fi   # exit 3 while pebble was down: ask again
check "pebble restart: a new pebble (new root)" test "$OLD_ROOT" != "$(openssl x509 -in "$P/root.pem" -noout -fingerprint -sha256)"
# a restarted pebble has a new root, which the device's bundle (made
# before) does not hold: the agent rightly refuses to install; the
# gateway's record is what shows the request completed
sql "select hex(der) from certificates where subject like '%pebble-restart.test%'" | xxd -r -p >"$T/p1.der"
pebble_mgmt /intermediates/0 >"$P/int.pem"
check "pebble restart: the certificate issued chains to the new pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$P/int.pem" <(openssl x509 -inform DER -in "$T/p1.der")
expect_match "pebble restart: the device got it and checked it against its anchors" "$(cat "$T/p1.out")" \
  "certificate does not chain to the trust anchors"
expect_match "pebble restart: the lost account was noticed" "$(cat "$T/gw.log")" "does not know account"
expect_match "pebble restart: the same request id completed" "$(cat "$T/gw.log")" "\[$RID\] enrolled device"
expect_eq "pebble restart: ordered again once" "$(grep -cE "\[$RID\].*backend acme: ACME order https[^ ]*$" "$T/gw.log")" "2"
expect_eq "pebble restart: one certificate" "$(certs_for pebble-restart.test)" "1"
expect_eq "no job left open" "$(sql "select count(*) from jobs where state in (0, 1)")" "0"

check "audit chain verifies" "$FLEETGATE" audit verify --state "$GW"
finish
