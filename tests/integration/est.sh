#!/usr/bin/env bash
# The EST front-end (RFC 7030, docs/est.md) against real clients on loopback:
#  - Debian's strongSwan pki (--estca, --est; its own TLS stack, the openssl
#    plugin of libstrongswan-standard-plugins for EC keys): CA
#    certificates, enrollment with a token, re-enrollment with the issued
#    certificate, a wrong token refused;
#  - curl + openssl for the error cases: wrong content type, bad base64, bad
#    CSR signature, expired token, re-enrollment with another subject,
#    tls-unique under TLS 1.3 and a wrong tls-unique under TLS 1.2;
#  - tests/tools/est-tls-unique.py (Python's ssl and http.client) for a CSR
#    bound to its own TLS 1.2 session, which curl cannot make;
#  - a label routed to a SCEP backend (tests/tools/scep-responder in its
#    PENDING mode): 202 + Retry-After, the gateway restarted while the job
#    is open, the same request resent until it completes.
source "$(dirname "$0")/lib.sh"

PKI=$(command -v pki) || die "pki not found: apt-get install strongswan-pki libstrongswan-standard-plugins"
RESPONDER="$FG_BUILD/tests/scep-responder"
export no_proxy='*' NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# free_port: lib.sh

RS_PID=
stop_responder() {
  if [ -n "$RS_PID" ]; then kill "$RS_PID" 2>/dev/null || true; wait "$RS_PID" 2>/dev/null || true; fi
  RS_PID=
}
trap 'rc=$?; set +e; stop_responder; cleanup; exit $rc' EXIT

# pki prints plugin warnings on stderr; keep them out of the checks
pki() { "$PKI" "$@" 2>>"$T/pki.log"; }

# ---- an upstream SCEP CA that answers PENDING twice ----
RS_PORT=$(free_port)
"$RESPONDER" --dir "$T/responder" --port "$RS_PORT" --pending 2 >>"$T/responder.out" 2>>"$T/responder.log" &
RS_PID=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$RS_PORT/scep?operation=GetCACaps" >/dev/null 2>&1 && break
  sleep 0.1
done
RS_FP=$(openssl x509 -in "$T/responder/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)

# ---- the gateway with EST ----
EST_PORT=$(free_port)
gw_init --est "127.0.0.1:$EST_PORT"
check "init --est made a TLS key (0600) and a certificate for 127.0.0.1" \
  bash -c "[ \"\$(stat -c %a '$GW/est/server.key')\" = 600 ] && openssl x509 -in '$GW/est/server.crt' -noout -ext subjectAltName | grep -q 'IP Address:127.0.0.1'"
python3 - "$GW/fleetgated.conf" "$RS_PORT" "$RS_FP" <<'EOF'
import sys
p, rs_port, rs_fp = sys.argv[1:]
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["scep-pend"] = {{ plugin = "scep", url = "http://127.0.0.1:{rs_port}/scep",
                    ca_fingerprint = "{rs_fp}", timeout = 5, poll_interval = 1 }},
''', 1)
s = s.replace('profiles = {\n', '''profiles = {
  pend = { backend = "scep-pend", key_usage = { "digitalSignature" },
           extended_key_usage = { "clientAuth" }, names = { "cn", "dns" } },
  vpn = { backend = "local", key_usage = { "digitalSignature" },
          extended_key_usage = { "serverAuth" }, names = { "cn", "dns" }, max_validity = "7d" },
''', 1)
s = s.replace('labels = { }', 'labels = { pend = "pend", vpn = "vpn" }')
open(p, "w").write(s)
EOF
gw_start
URL="https://127.0.0.1:$EST_PORT"
EST="$URL/.well-known/est"
CA="$GW/ca/ca.crt"

token() { # token [args]: a fresh token for group "est"
  "$FLEETGATE" token create --state "$GW" --group est "$@" 2>/dev/null | tail -n 1
}
# post OP CSR_DER [curl args...]: base64 POST; status in $CODE, body in $T/body, headers in $T/hdr
post() {
  local op=$1 der=$2; shift 2
  base64 -w0 "$der" >"$T/req.b64"
  CODE=$(curl -s --cacert "$CA" -o "$T/body" -D "$T/hdr" -w '%{http_code}' \
    -H "Content-Type: ${CTYPE:-application/pkcs10}" --data-binary @"$T/req.b64" "$@" "$EST/$op")
}
csr() { # csr NAME CN [openssl req args...]: $T/NAME.key and DER $T/NAME.csr
  local name=$1 cn=$2; shift 2
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$name.key" \
    -subj "/CN=$cn" -addext "subjectAltName=DNS:$cn" -outform DER -out "$T/$name.csr" "$@" 2>/dev/null
}

# ---- strongSwan pki ----
check "pki --estca fetches the CA certificates" \
  pki --estca --url "$URL" --cacert "$CA" --caout "$T/estca.pem" --outform pem --force
expect_eq "the EST CA is the gateway's local CA" \
  "$(openssl x509 -in "$T/estca.pem" -noout -fingerprint -sha256 2>/dev/null)" \
  "$(openssl x509 -in "$CA" -noout -fingerprint -sha256)"

pki --gen --type ecdsa --size 256 --outform pem >"$T/s1.key"
pki --req --in "$T/s1.key" --type priv --dn "CN=router1.example" --san router1.example --outform der >"$T/s1.csr"
TOK=$(token)
check "pki --est enrolls with a token as the Basic password" \
  pki --est --url "$URL" --in "$T/s1.csr" --cacert "$CA" --userpass "router1:$TOK" --outform pem
pki --est --url "$URL" --in "$T/s1.csr" --cacert "$CA" --userpass "router1:$TOK" --outform pem >"$T/s1.crt" || true
expect_eq "the certificate names the CSR's CN" \
  "$(openssl x509 -in "$T/s1.crt" -noout -subject 2>/dev/null)" "subject=CN = router1.example"
check "the certificate chains to the local CA" openssl verify -CAfile "$CA" "$T/s1.crt"
S1=$(openssl x509 -in "$T/s1.crt" -noout -serial 2>/dev/null | cut -d= -f2) || true
expect_eq "the certificate is recorded in slot est" \
  "$(sql "SELECT slot FROM certificates WHERE serial_hex = '$S1'")" "est"
DEV1=$(sql "SELECT device_id FROM certificates WHERE serial_hex = '$S1'")
expect_match "the EST device is identified by its key (est: identity)" \
  "$(sql "SELECT curve_key FROM devices WHERE id = '$DEV1'")" '^est:[0-9a-f]{36}$'
expect_eq "the token was consumed" \
  "$(sql "SELECT uses_left FROM tokens ORDER BY rowid DESC LIMIT 1")" "0"

pki --gen --type ecdsa --size 256 --outform pem >"$T/s2.key"
pki --req --in "$T/s2.key" --type priv --dn "CN=router2.example" --san router2.example --outform der >"$T/s2.csr"
rc=0
pki --est --url "$URL" --in "$T/s2.csr" --cacert "$CA" --userpass "router2:fgt_00000000000000000000000000000000" \
  --outform pem >"$T/s2.crt" || rc=$?
check "pki --est with a wrong token fails" [ "$rc" -ne 0 ]
check "... and gets no certificate" [ ! -s "$T/s2.crt" ]

pki --gen --type ecdsa --size 256 --outform pem >"$T/s1b.key"
pki --req --in "$T/s1b.key" --type priv --dn "CN=router1.example" --san router1.example --outform der >"$T/s1b.csr"
check "pki --est re-enrolls with the issued certificate (simplereenroll, new key)" \
  pki --est --url "$URL" --in "$T/s1b.csr" --cacert "$CA" --cert "$T/s1.crt" --key "$T/s1.key" --outform pem
pki --est --url "$URL" --in "$T/s1b.csr" --cacert "$CA" --cert "$T/s1.crt" --key "$T/s1.key" --outform pem >"$T/s1b.crt" || true
S1B=$(openssl x509 -in "$T/s1b.crt" -noout -serial 2>/dev/null | cut -d= -f2) || true
check "the renewal is a new certificate" [ -n "$S1B" ] && [ "$S1B" != "$S1" ]
expect_eq "the renewal belongs to the same device" \
  "$(sql "SELECT device_id FROM certificates WHERE serial_hex = '$S1B'")" "$DEV1"
check "the renewal certifies the new key" \
  bash -c "[ \"\$(openssl x509 -in '$T/s1b.crt' -noout -pubkey)\" = \"\$(openssl pkey -in '$T/s1b.key' -pubout)\" ]"
expect_match "the audit log calls it a renewal" \
  "$(sql "SELECT kind FROM audit WHERE detail LIKE '%$S1B%'")" 'cert.renew'

# ---- curl + openssl: what the front-end refuses ----
csr c1 curl1.example
TOK=$(token)
CTYPE=text/plain post simpleenroll "$T/c1.csr" -u "x:$TOK"
expect_eq "a wrong content type gets 415" "$CODE" "415"
expect_match "... saying what to send" "$(cat "$T/body")" 'application/pkcs10'

printf 'this is not base64!!' >"$T/bad.b64"
CODE=$(curl -s --cacert "$CA" -o "$T/body" -w '%{http_code}' -u "x:$TOK" \
  -H 'Content-Type: application/pkcs10' --data-binary @"$T/bad.b64" "$EST/simpleenroll")
expect_eq "bad base64 gets 400" "$CODE" "400"
expect_match "... saying the body is not base64" "$(cat "$T/body")" 'not base64'

# flip a bit in the last byte of the signature: still DER, no longer valid
python3 - "$T/c1.csr" "$T/c1bad.csr" <<'EOF'
import sys
d = bytearray(open(sys.argv[1], 'rb').read())
d[-1] ^= 0x01
open(sys.argv[2], 'wb').write(d)
EOF
post simpleenroll "$T/c1bad.csr" -u "x:$TOK"
expect_eq "a CSR with a bad signature gets 400" "$CODE" "400"
expect_match "... naming the CSR" "$(cat "$T/body")" 'bad CSR'
expect_eq "... and the token is not consumed" \
  "$(sql "SELECT uses_left FROM tokens ORDER BY rowid DESC LIMIT 1")" "1"

post simpleenroll "$T/c1.csr"
expect_eq "no credentials get 401" "$CODE" "401"
expect_match "... with a Basic challenge" "$(cat "$T/hdr")" 'WWW-Authenticate: Basic realm='

TOKX=$(token)
TOKX_ID=$(sql "SELECT id FROM tokens ORDER BY rowid DESC LIMIT 1")
sql "UPDATE tokens SET expires_at = strftime('%s','now') - 60 WHERE id = '$TOKX_ID'"
csr cx expired.example
post simpleenroll "$T/cx.csr" -u "x:$TOKX"
expect_eq "an expired token gets 401" "$CODE" "401"
expect_match "... saying it expired and what to do" "$(cat "$T/body")" "expired at .*ask the operator"

post simpleenroll "$T/c1.csr" -u "x:$TOK"
expect_eq "a good request with curl gets 200" "$CODE" "200"
expect_match "... as PKCS#7 certs-only" "$(cat "$T/hdr")" 'Content-Type: application/pkcs7-mime; smime-type=certs-only'
expect_match "... base64 transfer encoding" "$(cat "$T/hdr")" 'Content-Transfer-Encoding: base64'
openssl base64 -d -in "$T/body" | openssl pkcs7 -inform DER -print_certs -out "$T/c1.crt" 2>/dev/null || true
expect_eq "... holding the certificate for the CSR" \
  "$(openssl x509 -in "$T/c1.crt" -noout -subject 2>/dev/null)" "subject=CN = curl1.example"
C1=$(openssl x509 -in "$T/c1.crt" -noout -serial 2>/dev/null | cut -d= -f2) || true
post simpleenroll "$T/c1.csr" -u "x:$TOK"
openssl base64 -d -in "$T/body" | openssl pkcs7 -inform DER -print_certs 2>/dev/null | openssl x509 -noout -serial >"$T/again" 2>/dev/null || true
expect_eq "the same request again gets the same certificate (the token is spent)" \
  "$(cut -d= -f2 "$T/again")" "$C1"

csr c2 other.example
post simplereenroll "$T/c2.csr" --cert "$T/c1.crt" --key "$T/c1.key"
expect_eq "re-enrollment with another subject gets 400" "$CODE" "400"
expect_match "... citing RFC 7030 4.2.2" "$(cat "$T/body")" 'subject .* differs .*4\.2\.2'
post simplereenroll "$T/c2.csr"
expect_eq "re-enrollment without a client certificate gets 401" "$CODE" "401"

CODE=$(curl -s --cacert "$CA" -o "$T/body" -w '%{http_code}' "$EST/nosuchlabel/cacerts")
expect_eq "an unknown label gets 404" "$CODE" "404"
CODE=$(curl -s --cacert "$CA" -o "$T/body" -D "$T/hdr" -w '%{http_code}' "$EST/csrattrs")
expect_eq "csrattrs answers 200" "$CODE" "200"
expect_match "... as application/csrattrs" "$(cat "$T/hdr")" 'Content-Type: application/csrattrs'
expect_match "... advising challengePassword" \
  "$(openssl base64 -d -in "$T/body" | openssl asn1parse -inform DER 2>&1)" 'challengePassword'
# base64 on one line ended by CRLF: what strongSwan's pki (above) reads and
# OpenSSL's base64 BIO needs (a line end)
b64_line() { # FILE: 0 when it is one line of base64 ended by CRLF
  [ "$(wc -l <"$1")" = 1 ] && LC_ALL=C grep -qE $'^[A-Za-z0-9+/]+=*\r$' "$1"
}
check "csrattrs: base64 on one line ended by CRLF" b64_line "$T/body"
curl -s --cacert "$CA" -o "$T/cacerts.b64" "$EST/cacerts"
check "cacerts: base64 on one line ended by CRLF" b64_line "$T/cacerts.b64"
expect_eq "cacerts: OpenSSL's base64 BIO reads it (the CA certificate)" \
  "$(openssl base64 -d -in "$T/cacerts.b64" | openssl pkcs7 -inform DER -print_certs 2>/dev/null |
     openssl x509 -noout -fingerprint -sha256 2>/dev/null)" \
  "$(openssl x509 -in "$CA" -noout -fingerprint -sha256)"

# bulk provisioning: a token from device import enrolls its pre-registered device
printf 'serial,hostname\nRTR-9,rtr9.example\nRTR-10,rtr10.example\n' >"$T/fleet.csv"
"$FLEETGATE" device import --state "$GW" "$T/fleet.csv" --group est --bundles "$T/bundles" >/dev/null 2>&1 ||
  fail "device import failed"
TOKI=$(sed -n 's/^token = //p' "$T/bundles/RTR-9.bundle")
csr i1 rtr9.example
post simpleenroll "$T/i1.csr" -u "x:$TOKI"
expect_eq "an imported device's token enrolls over EST" "$CODE" "200"
openssl base64 -d -in "$T/body" | openssl pkcs7 -inform DER -print_certs -out "$T/i1.crt" 2>/dev/null || true
I1=$(openssl x509 -in "$T/i1.crt" -noout -serial 2>/dev/null | cut -d= -f2) || true
expect_eq "... as the pre-registered device, now active" \
  "$(sql "SELECT d.serial || '/' || d.state FROM devices d JOIN certificates c ON c.device_id = d.id WHERE c.serial_hex = '$I1'")" \
  "RTR-9/0"   # DEVICE_ACTIVE
TOKJ=$(sed -n 's/^token = //p' "$T/bundles/RTR-10.bundle")
openssl req -new -key "$T/s1.key" -subj /CN=router1.example -addext subjectAltName=DNS:router1.example \
  -outform DER -out "$T/s1c.csr" 2>/dev/null
post simpleenroll "$T/s1c.csr" -u "x:$TOKJ"
expect_eq "a known key with another device's token gets 401" "$CODE" "401"
expect_match "... naming both devices" "$(cat "$T/body")" "made for device dev_.*this key belongs to device $DEV1"
expect_eq "... and RTR-10 stays registered (DEVICE_REGISTERED = 3)" "$(sql "SELECT state FROM devices WHERE serial = 'RTR-10'")" "3"

TOKB=$(token --bind serial=HW-1)
csr b1 bound1.example
post simpleenroll "$T/b1.csr" -u "x:$TOKB"
expect_eq "a token bound to facts gets 401 over EST" "$CODE" "401"
expect_match "... saying EST carries no facts" "$(cat "$T/body")" 'EST does not carry.*without --bind'

# a label selects a profile; a re-enrollment without label stays in it
csr v1 vpn1.example
post vpn/simpleenroll "$T/v1.csr" -u "x:$(token)"
expect_eq "enrollment under the vpn label gets 200" "$CODE" "200"
openssl base64 -d -in "$T/body" | openssl pkcs7 -inform DER -print_certs -out "$T/v1.crt" 2>/dev/null || true
expect_match "... with the vpn profile (serverAuth)" \
  "$(openssl x509 -in "$T/v1.crt" -noout -ext extendedKeyUsage 2>/dev/null)" 'TLS Web Server Authentication'
csr v2 vpn1.example
post simplereenroll "$T/v2.csr" --cert "$T/v1.crt" --key "$T/v1.key"
expect_eq "re-enrollment without label gets 200" "$CODE" "200"
openssl base64 -d -in "$T/body" | openssl pkcs7 -inform DER -print_certs -out "$T/v2.crt" 2>/dev/null || true
V2=$(openssl x509 -in "$T/v2.crt" -noout -serial 2>/dev/null | cut -d= -f2) || true
expect_eq "... recorded in the vpn slot" "$(sql "SELECT slot FROM certificates WHERE serial_hex = '$V2'")" "vpn"
expect_match "... still the vpn profile" \
  "$(openssl x509 -in "$T/v2.crt" -noout -ext extendedKeyUsage 2>/dev/null)" 'TLS Web Server Authentication'

# tls-unique (RFC 7030 3.5): a challengePassword binds the CSR to the session
cat >"$T/chal.cnf" <<'EOF'
[req]
prompt = no
distinguished_name = dn
attributes = attrs
[dn]
CN = bound.example
[attrs]
challengePassword = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
EOF
# (no -subj: it would drop the attributes section)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/c3.key" \
  -config "$T/chal.cnf" -addext "subjectAltName=DNS:bound.example" -outform DER -out "$T/c3.csr" 2>/dev/null
TOK3=$(token)
post simpleenroll "$T/c3.csr" -u "x:$TOK3" --tlsv1.3
expect_eq "a channel-bound CSR over TLS 1.3 gets 400" "$CODE" "400"
expect_match "... saying TLS 1.3 has no tls-unique" "$(cat "$T/body")" 'TLSv1.3.*no tls-unique'
post simpleenroll "$T/c3.csr" -u "x:$TOK3" --tlsv1.2 --tls-max 1.2
expect_eq "a CSR bound to another TLS 1.2 session gets 400" "$CODE" "400"
expect_match "... saying the value is not this session's" "$(cat "$T/body")" "not this TLS session's tls-unique"
expect_eq "... and the token is kept" \
  "$(sql "SELECT uses_left FROM tokens ORDER BY rowid DESC LIMIT 1")" "1"
# the positive case needs a client that makes its CSR on the open connection
python3 "$FG_SOURCE_ROOT/tests/tools/est-tls-unique.py" 127.0.0.1 "$EST_PORT" "$CA" "$TOK3" "$T" bound.example \
  >"$T/tu.out" 2>&1 || true
expect_eq "a CSR carrying this TLS 1.2 session's tls-unique gets 200" "$(head -n 1 "$T/tu.out")" "200"
tail -n +2 "$T/tu.out" | openssl base64 -d 2>/dev/null | openssl pkcs7 -inform DER -print_certs -out "$T/tu.crt" 2>/dev/null || true
check "... and the certificate is for its key" \
  bash -c "[ \"\$(openssl x509 -in '$T/tu.crt' -noout -pubkey)\" = \"\$(openssl pkey -in '$T/tls-unique.key' -pubout)\" ]"

# TLS session resumption works with client certificates asked for
for v in -tls1_2 -tls1_3; do
  # (stdin open for a second: a TLS 1.3 ticket comes after the handshake)
  sleep 1 | timeout 10 openssl s_client $v -connect "127.0.0.1:$EST_PORT" -CAfile "$CA" -sess_out "$T/sess.pem" >/dev/null 2>&1 || true
  expect_match "a $v session is resumed" \
    "$(echo | timeout 10 openssl s_client $v -connect "127.0.0.1:$EST_PORT" -CAfile "$CA" -sess_in "$T/sess.pem" 2>&1)" '^Reused, TLSv1\.[23]'
done

# ---- a pending upstream CA: 202, restart, the same request completes ----
csr p1 pend1.example
TOKP=$(token)
post pend/simpleenroll "$T/p1.csr" -u "x:$TOKP"
expect_eq "a PENDING upstream CA gets 202" "$CODE" "202"
expect_match "... with Retry-After" "$(cat "$T/hdr")" 'Retry-After: [0-9]+'
expect_eq "the job is durable and pending (JOB_PENDING = 1)" \
  "$(sql "SELECT state FROM jobs WHERE backend = 'scep-pend'")" "1"
PRID=$(sql "SELECT request_id FROM jobs WHERE backend = 'scep-pend'")
gw_stop
gw_start
got=
for _ in $(seq 60); do
  post pend/simpleenroll "$T/p1.csr" -u "x:$TOKP"
  [ "$CODE" = 200 ] && { got=1; break; }
  [ "$CODE" = 202 ] || break
  sleep 0.5
done
expect_eq "after the restart, the resent request completes" "${got:-$CODE}" "1"
openssl base64 -d -in "$T/body" | openssl pkcs7 -inform DER -print_certs -out "$T/p1.crt" 2>/dev/null || true
check "... with a certificate of the SCEP CA" openssl verify -CAfile "$T/responder/ca.crt" "$T/p1.crt"
expect_eq "... recorded in slot pend" \
  "$(sql "SELECT slot FROM certificates WHERE backend = 'scep-pend'")" "pend"
expect_eq "one token use for the whole exchange" \
  "$(sql "SELECT count(*) FROM audit WHERE kind = 'token.use' AND request_id = '$PRID'")" "1"

# an upstream CA that hangs holds up one EST thread, not the others: the
# responder is frozen (SIGSTOP: the kernel still accepts, nothing answers)
kill -STOP "$RS_PID"
csr p2 pend2.example
base64 -w0 "$T/p2.csr" >"$T/p2.b64"
curl -s --cacert "$CA" -o "$T/p2.body" -w '%{http_code}' -u "x:$(token)" \
  -H 'Content-Type: application/pkcs10' --data-binary @"$T/p2.b64" "$EST/pend/simpleenroll" >"$T/p2.code" &
SLOW=$!
for _ in $(seq 100); do
  [ "$(sql "SELECT count(*) FROM jobs WHERE backend = 'scep-pend' AND state = 0")" = 1 ] && break
  sleep 0.1
done
expect_eq "the request to the frozen CA is admitted and waiting" \
  "$(sql "SELECT count(*) FROM jobs WHERE backend = 'scep-pend' AND state = 0")" "1"
csr f1 fast.example
post simpleenroll "$T/f1.csr" -u "x:$(token)"
expect_eq "meanwhile another EST request is answered" "$CODE" "200"
check "... while the first is still waiting for the CA" kill -0 "$SLOW"
kill -CONT "$RS_PID"
wait "$SLOW" || true
expect_match "the waiting request gets an answer once the CA is back (or its timeout)" \
  "$(cat "$T/p2.code")" '^(200|202|503)$'

# the EST front-end follows a policy reload, and the policy sees req.protocol
python3 - "$GW/policy.lua" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace('function enroll(req)\n', 'function enroll(req)\n  if req.protocol == "est" then return deny("EST is closed today") end\n', 1)
open(p, "w").write(s)
EOF
for _ in $(seq 100); do
  grep -q "policy reloaded (generation 1)" "$T/gw.log" && break
  sleep 0.1
done
csr d1 denied.example
post simpleenroll "$T/d1.csr" -u "x:$(token)"
expect_eq "after a policy reload denying EST, EST gets 403" "$CODE" "403"
expect_match "... with the policy's reason" "$(cat "$T/body")" 'denied by policy: EST is closed today'

check "the gateway is still up" gw_alive
finish
