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
# pebble validates for real: the gateway answers http-01 (pebble.inc.sh).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pebble.inc.sh"

EAB_KID=kid-1
EAB_KEY=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W
OTHER_KEY=b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH
pebble_init "\"externalAccountBindingRequired\": true,
  \"externalAccountMACKeys\": {\"$EAB_KID\": \"$EAB_KEY\", \"kid-2\": \"$OTHER_KEY\"}"
trap 'rc=$?; set +e; pebble_cleanup; (exit $rc); cleanup' EXIT
pebble_start

# ---- the gateway: "acme" binds with the right key, "acme-bad" with kid-1
# and kid-2's key, "acme-none" with none; group "local" goes to the local CA ----
gw_init --http "127.0.0.1:$HTTP01"
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

# ---- 2. the account key is kept in the store and reused across a restart ----
PUB0=$(state_pub acme)
expect_match "the account key is in the store" "$PUB0" "^[0-9a-f]{64}$"
gw_stop
gw_start
agent_for a2 acme-two.test acme
check "after a restart: a second device enrolls" run_agent a2
expect_eq "after a restart: the same account key" "$(state_pub acme)" "$PUB0"
expect_eq "after a restart: no new account key made" "$(grep -c 'backend acme: made a new ACME account key' "$T/gw.log")" "1"
expect_eq "after a restart: no second registration" "$(grep -c 'backend acme: ACME account https' "$T/gw.log")" "1"

# ---- 3. key rollover (RFC 8555 7.3.5), the gateway running ----
state_of acme account.key > "$T/old.key"
out=$("$FLEETGATE" backend acme-rollover --state "$GW" acme 2>&1) || fail "acme-rollover failed: $out"
expect_match "rollover: the operator is told" "$out" "account $ACCT now uses a new key \(JWK thumbprint [A-Za-z0-9_-]{43}\)"
PUB1=$(state_pub acme)
expect_match "rollover: the state holds a key" "$PUB1" "^[0-9a-f]{64}$"
check "rollover: the state holds a new key" test "$PUB1" != "$PUB0"
expect_eq "rollover: no pending key left" "$(state_of acme account.key.next)" ""
expect_eq "rollover: the account URL is unchanged" "$(state_of acme account.url)" "$ACCT"
expect_match "rollover: audited" "$("$FLEETGATE" audit tail --state "$GW" -n 3)" "backend.admin"
agent_for r1 acme-roll.test acme
check "rollover: the running gateway enrolls with the new key" run_agent r1
check "rollover: that certificate chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain r1)" "$(crt r1)"
expect_match "rollover: the gateway took up the new key" "$(cat "$T/gw.log")" "account key changed in the plugin state"
expect_eq "rollover: still one registration" "$(grep -c 'backend acme: ACME account https' "$T/gw.log")" "1"

# the old key is refused by pebble: put it back in the state (as if the
# rollover had reached the CA but not the store, the new key pending)
state_of acme account.key > "$T/new.key"
sql "update plugin_state set value = readfile('$T/old.key') where backend = 'acme' and key = 'account.key'"
sql "insert or replace into plugin_state (backend, key, value) values ('acme', 'account.key.next', readfile('$T/new.key'))"
agent_for o1 acme-old.test acme
rc=0; run_agent o1 || rc=$?
check "old key: pebble refuses it (the enrollment fails)" test "$rc" -ne 0
expect_match "old key: pebble's refusal reaches the device" "$(cat "$T/o1.out")" "the ACME CA says malformed: JWS verification error"
check "old key: no certificate written" test ! -e "$(crt o1)"
out=$("$FLEETGATE" backend acme-rollover --state "$GW" acme 2>&1) || fail "acme-rollover (resume) failed: $out"
expect_match "an interrupted rollover is finished by running it again" "$out" "an earlier rollover had reached the CA"
expect_eq "resume: the state holds the key pebble knows" "$(state_pub acme)" "$PUB1"
agent_for r2 acme-roll2.test acme
check "resume: a later enrollment succeeds" run_agent r2
check "resume: that certificate chains to pebble's root" \
  openssl verify -CAfile "$P/root.pem" -untrusted "$(chain r2)" "$(crt r2)"
out=$("$FLEETGATE" backend acme-rollover --state "$GW" local 2>&1 || true)
expect_match "rollover on a backend that is not ACME: refused" "$out" "has no such command; it works on ACME backends only"

# ---- 4. revocation (RFC 8555 7.6) reaches pebble ----
# pebble's management interface: /cert-status-by-serial/<lower-case hex,
# no leading zeros>
serial_of() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'; }
dev_of() { sql "select device_id from certificates where serial_hex = '$1'"; }
pebble_status() { pebble_mgmt "/cert-status-by-serial/$(tr A-F a-f <<<"$1" | sed 's/^0*//')"; }
S1=$(serial_of "$(crt a1)")
D1=$(dev_of "$S1")
expect_match "revoke: pebble knows the certificate as valid first" "$(pebble_status "$S1")" '"Status": *"Valid"'
out=$("$FLEETGATE" device revoke --state "$GW" "$D1" 2>&1) || fail "device revoke failed: $out"
expect_match "device revoke: the operator is told the CA revoked it" "$out" "revoked certificate $S1 \(backend acme\)"
check "device revoke: no warning" test "$(grep -c warning <<<"$out")" = 0
st=$(pebble_status "$S1")
expect_match "device revoke: pebble shows the certificate revoked" "$st" '"Status": *"Revoked"'
expect_match "device revoke: with reason cessationOfOperation (5)" "$st" '"Reason": *5'
S2=$(serial_of "$(crt a2)")
out=$("$FLEETGATE" device retire --state "$GW" "$(dev_of "$S2")" 2>&1) || fail "device retire failed: $out"
expect_match "device retire: the operator is told the CA revoked it" "$out" "revoked certificate $S2 \(backend acme\)"
expect_match "device retire: pebble shows the certificate revoked" "$(pebble_status "$S2")" '"Status": *"Revoked"'
expect_match "a certificate not revoked stays valid at pebble" "$(pebble_status "$(serial_of "$(crt r1)")")" '"Status": *"Valid"'
# revoking at a CA that is down: fleetgate revokes, the operator is told to act
S3=$(serial_of "$(crt r2)")
kill -STOP "$PB_PID"
out=$("$FLEETGATE" device revoke --state "$GW" "$(dev_of "$S3")" 2>&1 || true)
kill -CONT "$PB_PID"
expect_match "CA down: the operator is told the CA did not revoke" "$out" \
  "could not revoke certificate $S3: backend acme: the ACME CA did not revoke the certificate: cannot reach the ACME server.*try again when the CA answers, or revoke it at the CA"
expect_eq "CA down: revoked in fleetgate all the same" "$(sql "select revoked from certificates where serial_hex = '$S3'")" "1"
expect_match "CA down: still valid at pebble" "$(pebble_status "$S3")" '"Status": *"Valid"'

# ---- 5. one policy, two CAs: group "local" goes to the local CA ----
agent_for l1 local-one.test local
check "local group: enrolls in the same run" run_agent l1
"$FLEETGATE" backend cacerts --state "$GW" local > "$T/local-ca.pem"
check "local group: certificate chains to the local CA" \
  openssl verify -CAfile "$T/local-ca.pem" "$(crt l1)"
check "local group: not issued by pebble" \
  bash -c "! openssl verify -CAfile '$P/root.pem' -untrusted '$(chain l1)' '$(crt l1)' >/dev/null 2>&1"
expect_eq "local group: recorded with backend local" \
  "$(sql "select backend from certificates where serial_hex = '$(serial_of "$(crt l1)")'")" "local"
expect_eq "acme group: recorded with backend acme" \
  "$(sql "select backend from certificates where serial_hex = '$(serial_of "$(crt r1)")'")" "acme"
expect_eq "the local CA's device is unknown to pebble" \
  "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$P/tls-ca.pem" "https://127.0.0.1:$MGMT_PORT/cert-status-by-serial/$(serial_of "$(crt l1)" | tr A-F a-f | sed 's/^0*//')")" "404"

check "audit chain verifies" "$FLEETGATE" audit verify --state "$GW"
finish
