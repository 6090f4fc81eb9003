#!/usr/bin/env bash
# An agent enrolls end to end over ZeroMQ/CURVE against the local CA; tokens
# that are reused, unknown, expired or missing, and a wrong gateway key, are
# refused with clear messages.
. "$(dirname "$0")/lib.sh"

gw_init
gw_start

bundle a1 --uses 1 --ttl 1h
agent_conf a1 >/dev/null
check "agent enrolls with a one-use token" agent a1
cat "$T/a1.out"
A1="$T/agents/a1"
check "certificate installed" test -s "$A1/default.crt"
check "chain installed" test -s "$A1/default-chain.crt"
expect_eq "key file mode is 0600" "$(stat -c %a "$A1/default.key")" "600"
check "certificate chains to the gateway CA" openssl verify -CAfile "$GW/ca/ca.crt" "$A1/default.crt"
host=$(hostname | tr 'A-Z' 'a-z')
expect_match "subject CN is the hostname" "$(openssl x509 -in "$A1/default.crt" -noout -subject)" "CN ?= ?$host"
expect_match "SAN carries the hostname" "$(openssl x509 -in "$A1/default.crt" -noout -ext subjectAltName)" "DNS:$host"
expect_match "client-auth EKU" "$(openssl x509 -in "$A1/default.crt" -noout -ext extendedKeyUsage)" "TLS Web Client Authentication"
expect_match "leaf is not a CA" "$(openssl x509 -in "$A1/default.crt" -noout -ext basicConstraints)" "CA:FALSE"
expect_eq "certificate matches the agent's key" \
  "$(openssl x509 -in "$A1/default.crt" -noout -pubkey | sha256sum)" \
  "$(openssl pkey -in "$A1/default.key" -pubout | sha256sum)"
serial=$(openssl x509 -in "$A1/default.crt" -noout -serial | cut -d= -f2)
expect_match "the agent prints subject, issuer, serial and expiry" "$(cat "$T/a1.out")" "$serial"

devs=$("$FLEETGATE" device list --state "$GW" --json)
expect_eq "one device listed" "$(echo "$devs" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" "1"
expect_eq "device is active" "$(echo "$devs" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["state"])')" "active"
certs=$("$FLEETGATE" cert list --state "$GW" --json)
expect_eq "cert list has the issued serial" \
  "$(echo "$certs" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["serial"])')" "$serial"
expect_match "text device list shows the group" "$("$FLEETGATE" device list --state "$GW")" " test "

check "a second --once run with a valid certificate succeeds" agent a1
expect_match "and says nothing is due" "$(cat "$T/a1.out")" "valid until"

# The same one-use token on another device.
cp "$T/a1.bundle" "$T/a2.bundle"
agent_conf a2 >/dev/null
rc=0; agent a2 || rc=$?
expect_eq "reused token: agent exits 1" "$rc" "1"
expect_match "reused token: message says it is used up" "$(cat "$T/a2.out")" "used up"
check "reused token: nothing installed" test ! -e "$T/agents/a2/default.crt"

# A token the gateway never issued.
sed "s/^token = .*/token = fgt_0123456789abcdef0123456789abcdef/" "$T/a1.bundle" > "$T/a3.bundle"
agent_conf a3 >/dev/null
rc=0; agent a3 || rc=$?
expect_eq "unknown token: agent exits 1" "$rc" "1"
expect_match "unknown token: message" "$(cat "$T/a3.out")" "unknown to this gateway"

# An expired token.
bundle a4 --ttl 1s
sleep 2
agent_conf a4 >/dev/null
rc=0; agent a4 || rc=$?
expect_eq "expired token: agent exits 1" "$rc" "1"
expect_match "expired token: message" "$(cat "$T/a4.out")" "expired at"

# No token at all from an unknown key.
grep -v '^token' "$T/a1.bundle" > "$T/a5.bundle"
agent_conf a5 >/dev/null
rc=0; agent a5 || rc=$?
expect_eq "no token: agent exits 1" "$rc" "1"
expect_match "no token: message" "$(cat "$T/a5.out")" "no enrollment token"
before=$(sql "select count(*) from devices")
expect_eq "refused enrollments created no device" "$before" "1"

# A bundle naming another gateway key: the agent refuses to talk.
bundle a6
other='rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'   # a valid key of no gateway here
sed -i "s|^server_key = .*|server_key = $other|" "$T/a6.bundle"
AGENT_TIMEOUT=3s agent_conf a6 >/dev/null
rc=0; agent a6 || rc=$?
expect_eq "wrong gateway key: agent exits 3" "$rc" "3"
expect_match "wrong gateway key: message names the CURVE key" "$(cat "$T/a6.out")" "(CURVE|server key)"
check "wrong gateway key: nothing installed" test ! -e "$T/agents/a6/default.crt"

check "gateway still running" gw_alive
check "gateway stops cleanly on SIGTERM" gw_stop
finish
