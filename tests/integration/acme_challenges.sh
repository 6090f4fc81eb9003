#!/usr/bin/env bash
# ACME challenges answered for real, against Debian's pebble (no
# PEBBLE_VA_ALWAYS_VALID) with pebble-challtestsrv as its DNS server:
#  - http-01 answered by the gateway's HTTP side (names resolving to
#    127.0.0.1, where the gateway listens);
#  - http-01 answered by the agent on its own listener (names resolving to
#    127.0.0.2), for an enrollment and a renewal; and through a webroot
#    served by a separate web server (python3 -m http.server on 127.0.0.3);
#  - dns-01 through the operator's hook, which calls challtestsrv's
#    management API; a failing hook gives a clear error, the job stays
#    open, and the same request completes once the hook works;
#  - the gateway killed mid-order (after the challenge went to the agent)
#    and restarted: the same request and the same order complete;
#  - the agent as a daemon answers http-01 the same way;
#  - a gateway restarted while pebble validates its http-01 answer serves
#    the answer again when the job resumes;
#  - afterwards nothing is served: the agent's listener is closed, its
#    webroot files are gone, the gateway's token answers 404;
#  - every certificate chains to pebble's root and carries exactly the
#    decided name.
# pebble's VA connects to httpPort (not 80), so the gateway and the agents
# listen on that port, each on its own loopback address.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pebble_renew.inc.sh"

PEBBLE=$(command -v pebble) || die "pebble not found: apt-get install pebble"
CTS=$(command -v pebble-challtestsrv) || die "pebble-challtestsrv not found: apt-get install pebble"

# Free at 127.0.0.1, .2 and .3 (the agents' http-01 listeners use those).
free_port() { fg_free_port 127.0.0.2 127.0.0.3; }

export no_proxy='*' NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# ---- pebble's TLS (Debian ships no test certificates) ----
P="$T/pebble"
mkdir -p "$P"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/tls-ca.key" \
  -out "$P/tls-ca.pem" -days 2 -subj /CN=fleetgate-test-pebble-tls-ca 2>/dev/null || die "cannot make the TLS CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/key.pem" -out "$P/srv.csr" \
  -subj /CN=localhost 2>/dev/null || die "cannot make the TLS key"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$P/ext"
openssl x509 -req -in "$P/srv.csr" -CA "$P/tls-ca.pem" -CAkey "$P/tls-ca.key" -CAcreateserial \
  -out "$P/cert.pem" -days 2 -extfile "$P/ext" 2>/dev/null || die "cannot sign the TLS certificate"

ACME_PORT=$(free_port)
MGMT_PORT=$(free_port)
HTTP01=$(free_port)      # pebble's httpPort: the gateway's HTTP side and the agents' listeners
DNS_PORT=$(free_port)
CTS_MGMT=$(free_port)
cat >"$P/config.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$ACME_PORT", "managementListenAddress": "127.0.0.1:$MGMT_PORT",
  "certificate": "$P/cert.pem", "privateKey": "$P/key.pem", "httpPort": $HTTP01, "tlsPort": $(free_port),
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF

PB_PID= CTS_PID= WEB_PID= BG_PID=
stop_peers() {
  local p
  for p in $BG_PID $WEB_PID $PB_PID $CTS_PID; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  BG_PID= WEB_PID= PB_PID= CTS_PID=
}
trap 'rc=$?; set +e; stop_peers; (exit $rc); cleanup' EXIT

# challtestsrv: DNS only (names added below), no default answers
"$CTS" -dns01 "127.0.0.1:$DNS_PORT" -http01 "" -https01 "" -tlsalpn01 "" \
  -management "127.0.0.1:$CTS_MGMT" -defaultIPv4 "" -defaultIPv6 "" >>"$T/cts.log" 2>&1 &
CTS_PID=$!
for _ in $(seq 100); do
  curl -fs -d '{"host":"probe.test.","addresses":["127.0.0.9"]}' "http://127.0.0.1:$CTS_MGMT/add-a" \
    >/dev/null 2>&1 && break
  sleep 0.1
done
kill -0 "$CTS_PID" 2>/dev/null || die "pebble-challtestsrv did not start: $(tail -n 5 "$T/cts.log")"
add_a() { # NAME ADDRESS
  curl -fsS -d "{\"host\":\"$1.\",\"addresses\":[\"$2\"]}" "http://127.0.0.1:$CTS_MGMT/add-a" >/dev/null ||
    die "challtestsrv refused /add-a for $1"
}

# real validation: no PEBBLE_VA_ALWAYS_VALID; no authorization reuse, so
# that a renewal is validated again
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  "$PEBBLE" -config "$P/config.json" -dnsserver "127.0.0.1:$DNS_PORT" >>"$T/pebble.log" 2>&1 &
PB_PID=$!
for _ in $(seq 300); do
  curl -fs --cacert "$P/tls-ca.pem" "https://127.0.0.1:$ACME_PORT/dir" >/dev/null 2>&1 &&
    curl -fs --cacert "$P/tls-ca.pem" "https://127.0.0.1:$MGMT_PORT/roots/0" >"$P/root.pem" 2>/dev/null && break
  sleep 0.1
done
test -s "$P/root.pem" || die "pebble does not answer: $(tail -n 5 "$T/pebble.log")"

# ---- the dns-01 hook: sets and clears TXT records through challtestsrv ----
HOOK="$T/dns-hook"
cat >"$HOOK" <<EOF
#!/bin/bash
# test hook: publish or remove _acme-challenge TXT records at pebble-challtestsrv
echo "\$1 \$FLEETGATE_ACME_ACTION \$FLEETGATE_ACME_DOMAIN \$FLEETGATE_ACME_RECORD \$FLEETGATE_ACME_VALUE" >>"$T/hook.log"
if [ -e "$T/hook.fail" ]; then echo "zone update refused by the test DNS"; exit 7; fi
echo "test DNS: \$FLEETGATE_ACME_ACTION \$FLEETGATE_ACME_RECORD"
case "\$FLEETGATE_ACME_ACTION" in
  present) curl -fsS -d "{\"host\":\"\$FLEETGATE_ACME_RECORD.\",\"value\":\"\$FLEETGATE_ACME_VALUE\"}" \
             "http://127.0.0.1:$CTS_MGMT/set-txt" ;;
  cleanup) curl -fsS -d "{\"host\":\"\$FLEETGATE_ACME_RECORD.\"}" "http://127.0.0.1:$CTS_MGMT/clear-txt" ;;
  *) echo "unknown action"; exit 2 ;;
esac
EOF
chmod 755 "$HOOK"
: >"$T/hook.log"

# ---- the gateway: HTTP side on the http-01 port; the policy picks the
# challenge per group (the backend's default is http-01-gateway) ----
gw_init --http "127.0.0.1:$HTTP01"
python3 - "$GW/fleetgated.conf" "$ACME_PORT" "$MGMT_PORT" "$P/tls-ca.pem" "$HOOK" <<'EOF'
import sys
p, port, mport, ca, hook = sys.argv[1:]
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["acme"] = {{ plugin = "acme", directory = "https://127.0.0.1:{port}/dir",
               tls_ca_file = "{ca}", root_url = "https://127.0.0.1:{mport}/roots/0",
               timeout = 5, poll_interval = 1, dns_hook = "{hook}", hook_timeout = 20 }},
''', 1)
open(p, 'w').write(s)
EOF
cat > "$GW/policy.lua" <<'EOF'
-- The hostname as the one DNS name; the group chooses how ACME validates it.
function enroll(req)
  if req.new_device and req.token == nil and not req.renew then
    return deny("no token")
  end
  local name = string.lower(req.facts.hostname or "")
  local d = { cn = name, dns = { name }, validity = fleet.days(30), backend = "acme", profile = "server" }
  local g = req.device.group
  if g == "agent" then
    d.acme_challenge = "http-01-agent"
  elseif g == "dns" then
    d.acme_challenge = "dns-01"
  elseif g == "bad" then
    d.acme_challenge = "tls-alpn-01"
  end
  return allow(d)
end

function checkin(dev)
  return {}
end
EOF
gw_start
HURL="http://127.0.0.1:$HTTP01"

# agent_for NAME HOSTNAME GROUP [extra global config lines]
agent_for() {
  local name=$1 host=$2
  GROUP=$3 bundle "$name"
  KEY_TYPE=p256 AGENT_TIMEOUT=${AGENT_TIMEOUT:-30s} agent_conf "$name" >/dev/null
  if [ -n "${4:-}" ]; then
    sed -i "/^request_timeout/a $4" "$T/agents/$name/agent.conf"
  fi
  mkdir -p "$T/facts/$name/proc/sys/kernel"
  echo "$host" > "$T/facts/$name/proc/sys/kernel/hostname"
}
# the certificate's subjectAltName entries, one line
sans() { openssl x509 -in "$(crt "$1")" -noout -ext subjectAltName | sed -n '2,$p' | tr -d ' '; }
chains() { openssl verify -CAfile "$P/root.pem" -untrusted "$(chain "$1")" "$(crt "$1")" >/dev/null; }
serial() { openssl x509 -in "$(crt "$1")" -noout -serial; }
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
pending_rid() { cut -d' ' -f1 "$T/agents/$1/state/default.pending"; }

# ---- 1. http-01 answered by the gateway ----
add_a gw-one.test 127.0.0.1
agent_for g1 gw-one.test gw
check "gateway http-01: agent enrolls" run_agent g1
check "gateway http-01: chains to pebble's root" chains g1
expect_eq "gateway http-01: exactly the decided name" "$(sans g1)" "DNS:gw-one.test"
expect_match "gateway http-01: pebble fetched the answer from the gateway" "$(cat "$T/gw.log")" \
  "http-01: answered token [A-Za-z0-9_-]+"
TOKEN=$(grep -o 'http-01: answered token [A-Za-z0-9_-]*' "$T/gw.log" | head -n 1 | awk '{print $4}')
expect_eq "gateway http-01: the token is withdrawn afterwards" \
  "$(curl -s -o /dev/null -w '%{http_code}' "$HURL/.well-known/acme-challenge/$TOKEN")" "404"
expect_match "gateway http-01: pebble's VA fetched it from the gateway's port" "$(cat "$T/pebble.log")" \
  "validate w/ HTTP: http://gw-one.test:$HTTP01/.well-known/acme-challenge/$TOKEN"

# ---- 2. http-01 answered by the agent (own listener), then a renewal ----
add_a agent-one.test 127.0.0.2
agent_for a1 agent-one.test agent "acme_http01_listen = 127.0.0.2:$HTTP01"
check "agent http-01: agent enrolls" run_agent a1
expect_match "agent http-01: the agent served the challenge" "$(cat "$T/a1.out")" \
  "serving 1 ACME http-01 challenge"
expect_match "agent http-01: the gateway answered only after the agent's acknowledgement" "$(cat "$T/gw.log")" \
  "the device serves http-01 for agent-one.test; answering"
expect_match "agent http-01: pebble's VA fetched it from the device's name" "$(cat "$T/pebble.log")" \
  "validate w/ HTTP: http://agent-one.test:$HTTP01/.well-known/acme-challenge/"
check "agent http-01: chains to pebble's root" chains a1
expect_eq "agent http-01: exactly the decided name" "$(sans a1)" "DNS:agent-one.test"
check "agent http-01: the agent's listener is closed afterwards" bash -c "! (exec 3<>/dev/tcp/127.0.0.2/$HTTP01) 2>/dev/null"
S1=$(serial a1)
check "agent http-01: renewal" pebble_renew a1
expect_match "agent http-01: the renewal was validated again" "$(cat "$T/a1.out")" "serving 1 ACME http-01 challenge"
check "agent http-01: renewed certificate chains" chains a1
expect_eq "agent http-01: renewed certificate has exactly the decided name" "$(sans a1)" "DNS:agent-one.test"
check "agent http-01: a new certificate" test "$(serial a1)" != "$S1"
expect_eq "agent http-01: renewal recorded" "$(sql "select count(*) from audit where kind = 'cert.renew'")" "$RENEWALS"
check "agent http-01: listener closed after the renewal" bash -c "! (exec 3<>/dev/tcp/127.0.0.2/$HTTP01) 2>/dev/null"

# ---- 3. http-01 through the agent's webroot, served by another web server ----
add_a web-one.test 127.0.0.3
mkdir -p "$T/www"
python3 -m http.server --bind 127.0.0.3 --directory "$T/www" "$HTTP01" >"$T/web.log" 2>&1 &
WEB_PID=$!
for _ in $(seq 100); do listening 127.0.0.3 "$HTTP01" && break; sleep 0.1; done
agent_for w1 web-one.test agent "acme_webroot = $T/www"
check "webroot http-01: agent enrolls" run_agent w1
expect_match "webroot http-01: the web server served the agent's file" "$(cat "$T/web.log")" \
  "GET /.well-known/acme-challenge/[A-Za-z0-9_-]+ HTTP/1.1\" 200"
check "webroot http-01: chains to pebble's root" chains w1
expect_eq "webroot http-01: exactly the decided name" "$(sans w1)" "DNS:web-one.test"
expect_eq "webroot http-01: the challenge file is gone" "$(ls -A "$T/www/.well-known/acme-challenge" | wc -l)" "0"

# ---- 4. dns-01 through the hook ----
agent_for d1 dns-one.test dns
check "dns-01: agent enrolls" run_agent d1
expect_match "dns-01: the hook published the TXT record" "$(cat "$T/hook.log")" \
  "^present present dns-one.test _acme-challenge.dns-one.test [A-Za-z0-9_-]{43}$"
expect_match "dns-01: and removed it afterwards" "$(cat "$T/hook.log")" \
  "^cleanup cleanup dns-one.test _acme-challenge.dns-one.test [A-Za-z0-9_-]{43}$"
check "dns-01: chains to pebble's root" chains d1
expect_eq "dns-01: exactly the decided name" "$(sans d1)" "DNS:dns-one.test"
expect_match "dns-01: the hook's output is logged" "$(cat "$T/gw.log")" \
  "dns_hook present dns-one.test: test DNS: present _acme-challenge.dns-one.test"
DVAL=$(awk '$1 == "present" && $3 == "dns-one.test" { print $5 }' "$T/hook.log" | head -n 1)
expect_match "dns-01: the TXT record reached the DNS server pebble asks" "$(cat "$T/cts.log")" \
  "Added DNS-01 TXT challenge for Host \"_acme-challenge.dns-one.test.\" - Value \"$DVAL\""
expect_match "dns-01: and was removed there" "$(cat "$T/cts.log")" \
  "Removed DNS-01 TXT challenge for Host \"_acme-challenge.dns-one.test.\""

# ---- 5. a failing hook: clear error, the job stays, the same request completes ----
touch "$T/hook.fail"
agent_for d2 dns-two.test dns
rc=0; run_agent d2 || rc=$?
expect_eq "failing hook: agent exits 3 (try later)" "$rc" "3"
expect_match "failing hook: the device is told what failed" "$(cat "$T/d2.out")" \
  "dns-01 hook failed to publish the TXT record _acme-challenge.dns-two.test.*exited with status 7.*zone update refused"
expect_match "failing hook: the operator sees it too" "$(cat "$T/gw.log")" "zone update refused by the test DNS"
expect_eq "failing hook: the job stays open" \
  "$(sql "select count(*) from jobs where state in (0, 1) and backend = 'acme'")" "1"
RID=$(pending_rid d2)
rm -f "$T/hook.fail"
check "hook fixed: the same request completes" run_agent d2
expect_eq "hook fixed: it was the same request" \
  "$(sql "select request_id from certificates order by rowid desc limit 1")" "$RID"
check "hook fixed: chains to pebble's root" chains d2
expect_eq "hook fixed: exactly the decided name" "$(sans d2)" "DNS:dns-two.test"
expect_eq "no job left open" "$(sql "select count(*) from jobs where state in (0, 1)")" "0"

# ---- 6. a challenge mode the policy may not choose ----
agent_for b1 bad-one.test bad
rc=0; run_agent b1 || rc=$?
expect_eq "unknown acme_challenge: refused" "$rc" "1"
expect_match "unknown acme_challenge: the message says which modes exist" "$(cat "$T/b1.out")" \
  "acme_challenge 'tls-alpn-01'.*http-01-gateway"

# ---- 7. the gateway killed mid-order, after the challenge went to the agent ----
add_a agent-two.test 127.0.0.2
AGENT_TIMEOUT=4s agent_for k1 agent-two.test agent "acme_http01_listen = 127.0.0.2:$HTTP01"
FLEETGATE_FACTS_ROOT="$T/facts/k1" "$AGENT" --config "$T/agents/k1/agent.conf" --once >"$T/k1-first.out" 2>&1 &
BG_PID=$!
for _ in $(seq 500); do
  grep -q "serving 1 ACME http-01 challenge" "$T/k1-first.out" 2>/dev/null && break
  sleep 0.01
done
gw_kill9
expect_match "killed: the agent had been handed the challenge" "$(cat "$T/k1-first.out")" "serving 1 ACME http-01 challenge"
KRID=$(pending_rid k1)
rc=0; wait "$BG_PID" || rc=$?
BG_PID=
expect_eq "killed: the agent's request was not answered (exit 3)" "$rc" "3"
check "killed: the agent's listener closed when it gave up" bash -c "! (exec 3<>/dev/tcp/127.0.0.2/$HTTP01) 2>/dev/null"
gw_start
check "restarted: the same request completes" run_agent k1
expect_eq "restarted: it was the same request" \
  "$(sql "select request_id from certificates order by rowid desc limit 1")" "$KRID"
expect_eq "restarted: one ACME order for it (resumed, not placed again)" \
  "$(grep "$KRID" "$T/gw.log" | grep -cE 'ACME order https://[^ ]+$')" "1"
check "restarted: chains to pebble's root" chains k1
expect_eq "restarted: exactly the decided name" "$(sans k1)" "DNS:agent-two.test"
check "restarted: listener closed afterwards" bash -c "! (exec 3<>/dev/tcp/127.0.0.2/$HTTP01) 2>/dev/null"

# ---- 8. the agent as a daemon answers http-01 too ----
add_a agent-three.test 127.0.0.2
agent_for m1 agent-three.test agent "acme_http01_listen = 127.0.0.2:$HTTP01"
FLEETGATE_FACTS_ROOT="$T/facts/m1" "$AGENT" --config "$T/agents/m1/agent.conf" 2>"$T/m1-daemon.log" &
BG_PID=$!
for _ in $(seq 300); do test -s "$(crt m1)" && break; sleep 0.1; done
check "daemon: enrolled through http-01 answered on its host" test -s "$(crt m1)"
expect_match "daemon: it served the challenge" "$(cat "$T/m1-daemon.log")" "serving 1 ACME http-01 challenge"
check "daemon: chains to pebble's root" chains m1
expect_eq "daemon: exactly the decided name" "$(sans m1)" "DNS:agent-three.test"
for _ in $(seq 50); do listening 127.0.0.2 "$HTTP01" || break; sleep 0.1; done
check "daemon: its listener closed once installed" bash -c "! (exec 3<>/dev/tcp/127.0.0.2/$HTTP01) 2>/dev/null"
kill "$BG_PID"; wait "$BG_PID" 2>/dev/null || true; BG_PID=

# ---- 9. gateway http-01 across a restart: the answer is published again ----
# challtestsrv is stopped, so pebble's VA waits on DNS (about 3 s) after
# the challenge was answered; meanwhile the gateway and the agent are
# killed, the gateway restarts, the agent sends the same request again, and
# the resumed job must serve the token again before pebble looks.
add_a gw-two.test 127.0.0.1
kill -STOP "$CTS_PID"
ANSWERED=$(grep -c "answering http-01 for gw-two.test" "$T/gw.log" || true)
agent_for g2 gw-two.test gw
FLEETGATE_FACTS_ROOT="$T/facts/g2" "$AGENT" --config "$T/agents/g2/agent.conf" --once >"$T/g2-first.out" 2>&1 &
BG_PID=$!
for _ in $(seq 300); do
  [ "$(grep -c "answering http-01 for gw-two.test" "$T/gw.log" || true)" -gt "$ANSWERED" ] && break
  sleep 0.02
done
gw_kill9
kill -9 "$BG_PID" 2>/dev/null || true
TOKEN2=$(grep -o 'answering http-01 for gw-two.test (http-01-gateway, token [A-Za-z0-9_-]*' "$T/gw.log" | tail -n 1 |
  sed 's/.*token //')
wait "$BG_PID" 2>/dev/null || true
BG_PID=
G2RID=$(pending_rid g2)
gw_start
expect_eq "restart: the new gateway does not know the token yet" \
  "$(curl -s -o /dev/null -w '%{http_code}' "$HURL/.well-known/acme-challenge/$TOKEN2")" "404"
FLEETGATE_FACTS_ROOT="$T/facts/g2" "$AGENT" --config "$T/agents/g2/agent.conf" --once >"$T/g2.out" 2>&1 &
BG_PID=$!
code=
for _ in $(seq 250); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$HURL/.well-known/acme-challenge/$TOKEN2")
  [ "$code" = 200 ] && break
  sleep 0.02
done
expect_eq "restart: the resumed job publishes the token again" "$code" "200"
kill -CONT "$CTS_PID"
rc=0; wait "$BG_PID" || rc=$?
BG_PID=
expect_eq "restart: the same request completes" "$rc" "0"
expect_eq "restart: it was the same request" \
  "$(sql "select request_id from certificates order by rowid desc limit 1")" "$G2RID"
check "restart: chains to pebble's root" chains g2
expect_eq "restart: exactly the decided name" "$(sans g2)" "DNS:gw-two.test"
expect_eq "restart: the token is withdrawn afterwards" \
  "$(curl -s -o /dev/null -w '%{http_code}' "$HURL/.well-known/acme-challenge/$TOKEN2")" "404"

check "audit chain verifies" "$FLEETGATE" audit verify --state "$GW"
finish
