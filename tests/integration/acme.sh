#!/usr/bin/env bash
# ACME backend (RFC 8555) against Debian's pebble on loopback:
#  - an agent enrolls (P-256 key), the certificate chains to pebble's root
#    and names what the policy decided; a second device reuses the account;
#  - an IP address identifier (RFC 8738);
#  - pebble unreachable: the job stays open; back: the same request completes;
#  - a fresh pebble that forgot the account: the gateway registers again;
#  - cacerts through root_url (pebble's management interface).
# pebble validates for real: its DNS server is pebble-challtestsrv, which
# resolves every name to 127.0.0.1, where the gateway's HTTP side answers
# http-01 on pebble's httpPort (the backend's default challenge mode).
# tests/integration/acme_challenges.sh covers the other challenge modes.
source "$(dirname "$0")/lib.sh"

source "$(dirname "$0")/pebble.inc.sh"

# no authorization reuse: a renewal is validated again
PEBBLE_ENV=PEBBLE_AUTHZREUSE=0
pebble_init
trap 'rc=$?; set +e; pebble_cleanup; (exit $rc); cleanup' EXIT
pebble_start

# ---- the gateway: group "acme" goes to the ACME backend; its HTTP side
# answers http-01 on pebble's httpPort ----
gw_init --http "127.0.0.1:$HTTP01"
python3 - "$GW/fleetgated.conf" "$ACME_PORT" "$MGMT_PORT" "$P/tls-ca.pem" <<'EOF'
import sys
p, port, mport, ca = sys.argv[1:]
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["acme"] = {{ plugin = "acme", directory = "https://127.0.0.1:{port}/dir",
               tls_ca_file = "{ca}", root_url = "https://127.0.0.1:{mport}/roots/0",
               timeout = 5, poll_interval = 1 }},
''', 1)
open(p, 'w').write(s)
EOF
cat > "$GW/policy.lua" <<'EOF'
-- Group "acme" goes to the ACME CA: the hostname as CN and DNS name; group
-- "acme-ip" asks for an IP address too.
function enroll(req)
  if req.new_device and req.token == nil and not req.renew then
    return deny("no token")
  end
  local name = string.lower(req.facts.hostname or "")
  local d = { cn = name, dns = { name }, validity = fleet.days(30) }
  if req.device.group == "acme" then
    d.backend = "acme"
  elseif req.device.group == "acme-ip" then
    d.backend = "acme"
    d.profile = "server"
    d.ip = { "127.0.0.1" }
  end
  return allow(d)
end

function checkin(dev)
  return {}
end
EOF
gw_start

# agent_for NAME HOSTNAME GROUP: a bundle, facts with that hostname, a P-256 slot
agent_for() {
  local name=$1 host=$2
  GROUP=$3 bundle "$name"
  KEY_TYPE=p256 AGENT_TIMEOUT=30s agent_conf "$name" >/dev/null
  mkdir -p "$T/facts/$name/proc/sys/kernel"
  echo "$host" > "$T/facts/$name/proc/sys/kernel/hostname"
}

# ---- 1. enroll through pebble ----
agent_for a1 acme-one.test acme
check "agent enrolls through ACME" run_agent a1
check "certificate chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain a1)" "$(crt a1)"
expect_match "SAN is the decided name" "$(openssl x509 -in "$(crt a1)" -noout -ext subjectAltName)" "DNS:acme-one.test"
expect_eq "the key never left the device: certificate matches the agent's key" \
  "$(openssl x509 -in "$(crt a1)" -noout -pubkey | openssl sha256)" \
  "$(openssl pkey -in "$T/agents/a1/default.key" -pubout | openssl sha256)"
expect_eq "the certificate is recorded with backend acme" \
  "$(sql "select backend from certificates order by rowid desc limit 1")" "acme"
expect_eq "one ACME account registered" "$(grep -c 'ACME account https' "$T/gw.log")" "1"
expect_match "pebble validated http-01 at the gateway" "$(cat "$T/pebble.log")" \
  "validate w/ HTTP: http://acme-one.test:$HTTP01/.well-known/acme-challenge/"
expect_eq "no job left open" "$(sql "select count(*) from jobs where state in (0, 1)")" "0"

# ---- 1b. the device renews through pebble; the gateway answers http-01 again ----
S0=$(openssl x509 -in "$(crt a1)" -noout -serial)
V0=$(grep -c "validate w/ HTTP: http://acme-one.test:$HTTP01/" "$T/pebble.log" || true)
check "renewal through ACME" pebble_renew a1
check "renewal: a new serial" test "$S0" != "$(openssl x509 -in "$(crt a1)" -noout -serial)"
check "renewal: chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain a1)" "$(crt a1)"
check "renewal: pebble validated http-01 at the gateway again" \
  test "$(grep -c "validate w/ HTTP: http://acme-one.test:$HTTP01/" "$T/pebble.log")" -gt "$V0"
expect_eq "renewal: audited as a renewal" "$(sql "select count(*) from audit where kind = 'cert.renew'")" "$RENEWALS"

# ---- 2. a second device reuses the account ----
agent_for a2 acme-two.test acme
check "second device enrolls" run_agent a2
check "second certificate chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain a2)" "$(crt a2)"
expect_eq "the account was reused" "$(grep -c 'ACME account https' "$T/gw.log")" "1"

# ---- 3. an IP address identifier (RFC 8738) ----
agent_for i1 acme-ip.test acme-ip
check "device with an IP name enrolls" run_agent i1
expect_match "SAN carries the IP address" "$(openssl x509 -in "$(crt i1)" -noout -ext subjectAltName)" "IP Address:127.0.0.1"

# ---- 4. cacerts from root_url ----
expect_eq "cacerts is pebble's root" \
  "$("$FLEETGATE" backend cacerts --state "$GW" acme | openssl x509 -noout -fingerprint -sha256)" \
  "$(openssl x509 -in "$P/root.pem" -noout -fingerprint -sha256)"

# ---- 5. pebble unreachable (stopped), then back ----
agent_for d1 acme-down.test acme
kill -STOP "$PB_PID"
rc=0; run_agent d1 || rc=$?
expect_eq "CA unreachable: agent exits 3 (try later)" "$rc" "3"
expect_match "CA unreachable: the device is told so" "$(cat "$T/d1.out")" "cannot reach the ACME server"
expect_eq "CA unreachable: the job stays open" \
  "$(sql "select count(*) from jobs where state in (0, 1) and backend = 'acme'")" "1"
kill -CONT "$PB_PID"
check "CA back: the same request completes" run_agent d1
check "CA back: certificate chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain d1)" "$(crt d1)"
expect_eq "CA back: no job left open" "$(sql "select count(*) from jobs where state in (0, 1)")" "0"

# ---- 6. a new pebble (new root, no accounts): the gateway registers again ----
pebble_stop
pebble_start
agent_for f1 acme-fresh.test acme
check "after the CA forgot the account: enrolls" run_agent f1
check "after the CA forgot the account: chains to the new root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain f1)" "$(crt f1)"
expect_match "the forgotten account was noticed" "$(cat "$T/gw.log")" "does not know account"
expect_eq "and registered again" "$(grep -c 'ACME account https' "$T/gw.log")" "2"

check "audit chain verifies" "$FLEETGATE" audit verify --state "$GW"
finish
