#!/usr/bin/env bash
# The ACME backend's account against Debian's pebble on loopback, with
# pebble requiring an external account binding (RFC 8555 7.3.4; the MAC
# keys of Debian's pebble-config-external-account-bindings.json example):
#  - the account is created with EAB; a wrong HMAC key and a missing binding
#    are refused with a message that says what to set;
#  - the account key is kept in the store and reused across a restart;
#  - key rollover (7.3.5) by `fleetgate backend acme-rollover`: pebble
#    refuses the old key, takes the new one, the state holds the new key and
#    a running gateway enrolls with it;
#  - revocation (7.6) by `fleetgate device revoke` reaches pebble;
#  - one policy routes a group to ACME and another to the local CA.
# PEBBLE_VA_ALWAYS_VALID=1: nothing serves challenges in this test.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pebble.inc.sh"

EAB_KID=kid-1
EAB_KEY=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W
OTHER_KEY=b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH
pebble_init "\"externalAccountBindingRequired\": true,
  \"externalAccountMACKeys\": {\"$EAB_KID\": \"$EAB_KEY\", \"kid-2\": \"$OTHER_KEY\"}"
trap 'rc=$?; set +e; pebble_stop; (exit $rc); cleanup' EXIT
pebble_start

# ---- the gateway: "acme" binds with the right key, "acme-bad" with kid-1
# and kid-2's key, "acme-none" with none; group "local" goes to the local CA ----
gw_init
python3 - "$GW/fleetgated.conf" "$ACME_PORT" "$MGMT_PORT" "$P/tls-ca.pem" "$EAB_KID" "$EAB_KEY" "$OTHER_KEY" <<'EOF'
import sys
p, port, mport, ca, kid, key, other = sys.argv[1:]
common = f'directory = "https://127.0.0.1:{port}/dir", tls_ca_file = "{ca}", root_url = "https://127.0.0.1:{mport}/roots/0", timeout = 5, poll_interval = 1'
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["acme"] = {{ plugin = "acme", {common}, contact = "mailto:pki@example.test",
               eab_kid = "{kid}", eab_hmac_key = "{key}" }},
  ["acme-bad"] = {{ plugin = "acme", {common}, eab_kid = "{kid}", eab_hmac_key = "{other}" }},
  ["acme-none"] = {{ plugin = "acme", {common} }},
''', 1)
open(p, 'w').write(s)
EOF
cat > "$GW/policy.lua" <<'EOF'
function enroll(req)
  if req.new_device and req.token == nil and not req.renew then
    return deny("no token")
  end
  local name = string.lower(req.facts.hostname or "")
  local d = { cn = name, dns = { name }, validity = fleet.days(30) }
  local g = req.device.group
  if g == "acme" or g == "acme-bad" or g == "acme-none" then
    d.backend = g
  end
  return allow(d)
end

function checkin(dev)
  return {}
end
EOF
gw_start

agent_for() { # NAME HOSTNAME GROUP
  local name=$1 host=$2
  GROUP=$3 bundle "$name"
  KEY_TYPE=p256 AGENT_TIMEOUT=30s agent_conf "$name" >/dev/null
  mkdir -p "$T/facts/$name/proc/sys/kernel"
  echo "$host" > "$T/facts/$name/proc/sys/kernel/hostname"
}
run_agent() { # NAME [args]
  local name=$1; shift
  local rc=0
  FLEETGATE_FACTS_ROOT="$T/facts/$name" "$AGENT" --config "$T/agents/$name/agent.conf" --once "$@" \
    >"$T/$name.out" 2>&1 || rc=$?
  return $rc
}
crt() { echo "$T/agents/$1/default.crt"; }
chain() { echo "$T/agents/$1/default-chain.crt"; }
state_of() { sql "select hex(value) from plugin_state where backend = '$1' and key = '$2'" | xxd -r -p; }
state_pub() { state_of "$1" account.key | openssl pkey -pubout 2>/dev/null | openssl sha256 | sed 's/.*= //'; }

# ---- 1. external account binding ----
agent_for a1 acme-one.test acme
check "EAB: agent enrolls through an ACME CA that requires a binding" run_agent a1
check "EAB: certificate chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain a1)" "$(crt a1)"
expect_match "EAB: account registered" "$(cat "$T/gw.log")" "backend acme: ACME account https"
ACCT=$(state_of acme account.url)
expect_match "EAB: the account URL is kept in the store" "$ACCT" "^https://127.0.0.1:$ACME_PORT/"

agent_for b1 acme-bad.test acme-bad
rc=0; run_agent b1 || rc=$?
expect_eq "wrong HMAC key: the device is refused (exit 1)" "$rc" "1"
expect_match "wrong HMAC key: the message says to check the binding" "$(cat "$T/b1.out")" \
  "refused the external account binding for key id 'kid-1': check backends.acme-bad.eab_kid and eab_hmac_key"
expect_eq "wrong HMAC key: no account kept" "$(state_of acme-bad account.url)" ""
check "wrong HMAC key: no certificate written" test ! -e "$(crt b1)"

agent_for n1 acme-none.test acme-none
rc=0; run_agent n1 || rc=$?
expect_eq "no binding: the device is refused (exit 1)" "$rc" "1"
expect_match "no binding: the message says to set eab_kid and eab_hmac_key" "$(cat "$T/n1.out")" \
  "externalAccountRequired.*set eab_kid and eab_hmac_key"

# a half-configured binding is refused when the config is checked
cp "$GW/fleetgated.conf" "$T/conf.good"
sed -i 's/eab_kid = "kid-1", eab_hmac_key = "b10l[^"]*"/eab_kid = "kid-1"/' "$GW/fleetgated.conf"
out=$("$FLEETGATE" backend cacerts --state "$GW" acme-bad 2>&1 || true)
expect_match "eab_kid without eab_hmac_key: refused, saying what to set" "$out" \
  "set both eab_kid and eab_hmac_key"
sed -i 's/eab_kid = "kid-1" }/eab_kid = "kid-1", eab_hmac_key = "not+base64url" }/' "$GW/fleetgated.conf"
out=$("$FLEETGATE" backend cacerts --state "$GW" acme-bad 2>&1 || true)
expect_match "a key that is not base64url: refused" "$out" "eab_hmac_key: not a base64url HMAC key"
cp "$T/conf.good" "$GW/fleetgated.conf"

finish
