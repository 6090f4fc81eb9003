#!/usr/bin/env bash
# Renewal: a new key and certificate proven by the current key; a failing
# reload hook rolls back; a bad proof of possession or another device's
# certificate is refused.
. "$(dirname "$0")/lib.sh"

gw_init
gw_start
bundle r1
RELOAD="echo reloaded >> $T/r1.reloads" agent_conf r1 >/dev/null
R1="$T/agents/r1"
check "enroll" agent r1
expect_eq "reload hook ran once after enrollment" "$(wc -l < "$T/r1.reloads")" "1"
old_serial=$(openssl x509 -in "$R1/default.crt" -noout -serial)
old_key=$(openssl pkey -in "$R1/default.key" -pubout | sha256sum)

check "renew now" agent r1 --renew-now
cat "$T/r1.out"
new_serial=$(openssl x509 -in "$R1/default.crt" -noout -serial)
new_key=$(openssl pkey -in "$R1/default.key" -pubout | sha256sum)
check "renewal issued a new serial" test "$old_serial" != "$new_serial"
check "renewal rotated the key" test "$old_key" != "$new_key"
expect_eq "renewed certificate matches the new key" \
  "$(openssl x509 -in "$R1/default.crt" -noout -pubkey | sha256sum)" "$new_key"
check "renewed certificate chains to the CA" openssl verify -CAfile "$GW/ca/ca.crt" "$R1/default.crt"
expect_eq "reload hook ran again" "$(wc -l < "$T/r1.reloads")" "2"
dev=$("$FLEETGATE" device list --state "$GW" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
expect_eq "both certificates recorded for the device" \
  "$("$FLEETGATE" cert list --state "$GW" --device "$dev" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" "2"
expect_eq "still one device" "$(sql 'select count(*) from devices')" "1"

# A reload hook that fails: the previous key and certificate come back.
cp "$R1/default.crt" "$T/before.crt"; cp "$R1/default.key" "$T/before.key"
sed -i "s|^reload = .*|reload = exit 7|" "$R1/agent.conf"
rc=0; agent r1 --renew-now || rc=$?
check "failing reload hook: agent reports failure" test "$rc" -ne 0
check "failing reload hook: certificate rolled back" cmp -s "$T/before.crt" "$R1/default.crt"
check "failing reload hook: key rolled back" cmp -s "$T/before.key" "$R1/default.key"
sed -i "s|^reload = .*|reload = true|" "$R1/agent.conf"

# Proof of possession signed by some other key.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/other.key" 2>/dev/null
out=$(FG_PROBE_CURVE="$R1/state/curve.key" "$PROBE" "$ENDPOINT" "$SERVER_KEY" renew "$R1/default.crt" "$R1/default.key" "$T/other.key")
expect_match "bad proof of possession refused" "$out" "^unauthorized .*proof of possession"

# Another device's certificate, presented with this device's CURVE key.
bundle r2
agent_conf r2 >/dev/null
check "second device enrolls" agent r2
R2="$T/agents/r2"
out=$(FG_PROBE_CURVE="$R1/state/curve.key" "$PROBE" "$ENDPOINT" "$SERVER_KEY" renew "$R2/default.crt" "$R2/default.key")
expect_match "renewing another device's certificate refused" "$out" "^unauthorized .*belongs to another device"

# A renewal from a key the gateway has never seen.
out=$("$PROBE" "$ENDPOINT" "$SERVER_KEY" renew "$R1/default.crt" "$R1/default.key")
expect_match "renewal from an unknown key refused" "$out" "^unauthorized .*not enrolled"

# The proper renewal still works after all that.
out=$(FG_PROBE_CURVE="$R1/state/curve.key" "$PROBE" "$ENDPOINT" "$SERVER_KEY" renew "$R1/default.crt" "$R1/default.key")
expect_match "a correct proof of possession is accepted" "$out" "^ok "

check "gateway still running" gw_alive
finish
