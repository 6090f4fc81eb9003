#!/usr/bin/env bash
# The gateway's HTTP side: /healthz and /metrics (counters and gauges move
# with the fleet), CA certificates, the local CA's CRL (published on
# revocation, remade before nextUpdate, found through the certificates' CRL
# distribution point) and OCSP (POST and GET; good, revoked, unknown,
# unauthorized), checked with openssl against `fleetgate cert list`; then
# `fleetgate status` in text and JSON.
. "$(dirname "$0")/lib.sh"

HPORT=$(free_port)
gw_init --http "127.0.0.1:$HPORT"
URL="http://127.0.0.1:$HPORT"
CA="$GW/ca/ca.crt"
expect_match "init enables http" "$(cat "$GW/fleetgated.conf")" "^http = \{ listen = \"127.0.0.1:$HPORT\" \}"
check "init published an empty CRL" test -s "$GW/crl/local.crl"
# A short CRL validity, so that the test sees it remade (at half of it).
sed -i 's/^backends\["local"\].crl_validity = .*/backends["local"].crl_validity = "12s"/' "$GW/fleetgated.conf"
gw_start

H() { curl -s --max-time 5 "$@"; }
metric() { H "$URL/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }

expect_eq "healthz says ok" "$(H "$URL/healthz")" "ok"
expect_eq "healthz is 200" "$(H -o /dev/null -w '%{http_code}' "$URL/healthz")" "200"
# A store that cannot answer (here: its schema table renamed away by another
# process) makes /healthz fail with the reason, and recover once it answers.
sql "ALTER TABLE schema_migrations RENAME TO schema_migrations_away"
expect_eq "healthz is 503 when the store cannot answer" "$(H -o /dev/null -w '%{http_code}' "$URL/healthz")" "503"
expect_match "and says why" "$(H "$URL/healthz")" "^store unavailable: .*schema_migrations"
sql "ALTER TABLE schema_migrations_away RENAME TO schema_migrations"
expect_eq "healthz is 200 again once the store answers" "$(H -o /dev/null -w '%{http_code}' "$URL/healthz")" "200"
expect_eq "unknown path is 404" "$(H -o /dev/null -w '%{http_code}' "$URL/nope")" "404"
expect_match "and says what is served" "$(H "$URL/nope")" "/healthz, /metrics"
expect_eq "POST /metrics is refused" "$(H -o /dev/null -w '%{http_code}' -d x "$URL/metrics")" "405"
expect_eq "no enrollments counted yet" "$(metric 'fleetgate_enrollments_total{backend="local",result="ok"}')" "0"

H "$URL/ca/local.crt" >"$T/ca-http.pem"
expect_eq "/ca/local.crt is the CA certificate" "$(openssl x509 -in "$T/ca-http.pem" -noout -fingerprint)" \
  "$(openssl x509 -in "$CA" -noout -fingerprint)"
expect_eq "/ca of an unknown backend is 404" "$(H -o /dev/null -w '%{http_code}' "$URL/ca/nope.crt")" "404"

# Two devices; a1 renews: three certificates. A reused token is refused.
bundle a1; agent_conf a1 >/dev/null
bundle a2; agent_conf a2 >/dev/null
check "a1 enrolls" agent a1
check "a2 enrolls" agent a2
check "a1 renews" agent a1 --renew-now
cp "$T/a2.bundle" "$T/a3.bundle"; agent_conf a3 >/dev/null
rc=0; agent a3 || rc=$?
expect_eq "a reused token is refused" "$rc" "1"
A1="$T/agents/a1/default.crt" A2="$T/agents/a2/default.crt"

expect_eq "enrollments ok = 3" "$(metric 'fleetgate_enrollments_total{backend="local",result="ok"}')" "3"
expect_eq "the refused one counted as unauthorized" \
  "$(metric 'fleetgate_enrollments_total{backend="",result="unauthorized"}')" "1"
expect_eq "latency histogram counts all 4" "$(metric fleetgate_enrollment_duration_seconds_count)" "4"
expect_eq "2 active devices" "$(metric 'fleetgate_devices{state="active"}')" "2"
expect_eq "3 valid certificates" "$(metric 'fleetgate_certificates{status="valid"}')" "3"
expect_eq "3 expire within 90 days" "$(metric 'fleetgate_certificates_expiring{within="90d"}')" "3"
expect_eq "none within 1 day" "$(metric 'fleetgate_certificates_expiring{within="1d"}')" "0"
expect_eq "no open jobs" "$(metric 'fleetgate_jobs_open{state="admitted"}')" "0"
before=$(metric fleetgate_checkins_total)
FG_PROBE_CURVE="$T/agents/a2/state/curve.key" "$PROBE" "$ENDPOINT" "$SERVER_KEY" checkin >/dev/null
expect_eq "a check-in is counted" "$(metric fleetgate_checkins_total)" "$((before + 1))"

# Issued certificates point at this gateway's CRL and OCSP responder.
expect_match "certificate carries the CRL distribution point" \
  "$(openssl x509 -in "$A2" -noout -ext crlDistributionPoints)" "URI:$URL/crl/local.crl"
expect_match "certificate carries the OCSP URL" \
  "$(openssl x509 -in "$A2" -noout -ext authorityInfoAccess)" "OCSP - URI:$URL/ocsp"

dev1=$("$FLEETGATE" cert list --state "$GW" --json | python3 -c '
import json,sys,subprocess
s=sys.argv[1]
print([c["device"] for c in json.load(sys.stdin) if c["serial"]==s][0])' \
  "$(openssl x509 -in "$A1" -noout -serial | cut -d= -f2)")
out=$("$FLEETGATE" device revoke --state "$GW" "$dev1")
expect_match "revoke publishes the CRL" "$out" "published 1 CRL"

H -o "$T/crl.der" -w '%{content_type}\n' "$URL/crl/local.crl" >"$T/crl.ctype"
expect_eq "CRL content type" "$(cat "$T/crl.ctype")" "application/pkix-crl"
openssl crl -inform DER -in "$T/crl.der" -out "$T/crl.pem"
crltext=$(openssl crl -in "$T/crl.pem" -noout -text)
expect_match "CRL is v2" "$crltext" "Version 2"
expect_match "CRL has a CRL number" "$crltext" "X509v3 CRL Number"
expect_match "CRL has the authority key id" "$crltext" "Authority Key Identifier"
expect_match "CRL gives the reason" "$crltext" "Cessation Of Operation"
expect_eq "CRL lists both of a1's certificates" "$(grep -c 'Serial Number' <<<"$crltext")" "2"
expect_match "the CRL verifies against the CA" "$(openssl crl -in "$T/crl.pem" -CAfile "$CA" -noout 2>&1)" "^verify OK"
out=$(openssl verify -crl_check -CAfile "$CA" -CRLfile "$T/crl.pem" "$A1" 2>&1 || true)
expect_match "openssl verify: revoked device's certificate is revoked" "$out" "certificate revoked"
out=$(openssl verify -crl_check -CAfile "$CA" -CRLfile "$T/crl.pem" "$A2" 2>&1 || true)
expect_match "openssl verify: the other device's certificate is OK" "$out" ": OK"
cdp=$(openssl x509 -in "$A1" -noout -ext crlDistributionPoints | sed -n 's/.*URI://p' | tr -d ' ')
expect_eq "the distribution point serves the same CRL" "$(H "$cdp" | sha256sum)" "$(sha256sum <"$T/crl.der")"
expect_eq "and it is the published file" "$(sha256sum <"$GW/crl/local.crl")" "$(sha256sum <"$T/crl.der")"
expect_eq "revoked devices gauge" "$(metric 'fleetgate_devices{state="revoked"}')" "1"
expect_eq "revoked certificates gauge" "$(metric 'fleetgate_certificates{status="revoked"}')" "2"

# OCSP agrees with `fleetgate cert list` for every certificate.
mkdir -p "$T/certs"
sql "select serial_hex || ' ' || hex(der) from certificates" | while read -r serial hex; do
  python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$hex" |
    openssl x509 -inform DER -out "$T/certs/$serial.pem"
done
"$FLEETGATE" cert list --state "$GW" --json | python3 -c '
import json,sys
for c in json.load(sys.stdin): print(c["serial"], "good" if c["status"] == "valid" else c["status"])' >"$T/want"
expect_eq "three certificates to ask about" "$(wc -l <"$T/want")" "3"
while read -r serial want; do
  out=$(openssl ocsp -issuer "$CA" -cert "$T/certs/$serial.pem" -url "$URL/ocsp" -CAfile "$CA" 2>&1 || true)
  expect_match "OCSP $serial: $want" "$out" "$T/certs/$serial.pem: $want"
  expect_match "OCSP $serial: response verifies, nonce echoed" "$out" "Response verify OK"
  if grep -q WARNING <<<"$out"; then fail "OCSP $serial: $out"; fi
  [ "$want" = revoked ] && expect_match "OCSP $serial: reason" "$out" "Reason: cessationOfOperation"
done <"$T/want"

# GET form: the same request, base64url in the path.
openssl ocsp -issuer "$CA" -cert "$A2" -no_nonce -reqout "$T/req.der" >/dev/null 2>&1
b64=$(base64 -w0 <"$T/req.der" | tr '+/' '-_' | tr -d '=')
H -o "$T/resp.der" "$URL/ocsp/$b64"
out=$(openssl ocsp -respin "$T/resp.der" -issuer "$CA" -cert "$A2" -CAfile "$CA" 2>&1 || true)
expect_match "OCSP by GET (base64url): good" "$out" "$A2: good"
b64=$(base64 -w0 <"$T/req.der" | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')
H -o "$T/resp2.der" "$URL/ocsp/$b64"
out=$(openssl ocsp -respin "$T/resp2.der" -issuer "$CA" -cert "$A2" -CAfile "$CA" 2>&1 || true)
expect_match "OCSP by GET (percent-encoded base64): good" "$out" "$A2: good"

# Not issued by the CA: unknown; another issuer entirely: unauthorized.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/f.key" \
  -out "$T/foreign.pem" -subj /CN=foreign -days 1 2>/dev/null
out=$(openssl ocsp -issuer "$CA" -cert "$T/foreign.pem" -url "$URL/ocsp" -CAfile "$CA" 2>&1 || true)
expect_match "a certificate the CA never issued: unknown" "$out" "foreign.pem: unknown"
out=$(openssl ocsp -issuer "$T/foreign.pem" -cert "$T/foreign.pem" -url "$URL/ocsp" -CAfile "$CA" 2>&1 || true)
expect_match "another issuer: unauthorized" "$out" "unauthorized"
out=$(openssl ocsp -issuer "$CA" -serial 0x1234 -url "$URL/ocsp" -CAfile "$CA" 2>&1 || true)
expect_match "a serial the CA never issued: unknown" "$out" "0x1234: unknown"
H --data-binary junk -H 'Content-Type: application/ocsp-request' "$URL/ocsp" >"$T/bad.der"
expect_match "garbage OCSP request: malformedRequest" \
  "$(openssl ocsp -respin "$T/bad.der" -noverify 2>&1 || true)" "Responder Error: malformedrequest"

# The CRL is remade before its nextUpdate (12 s validity: at 6 s).
n1=$(openssl crl -in "$T/crl.pem" -noout -crlnumber | cut -d= -f2)
n2=$n1
for _ in $(seq 100); do
  n2=$(H "$URL/crl/local.crl" | openssl crl -inform DER -noout -crlnumber 2>/dev/null | cut -d= -f2)
  [ -n "$n2" ] && [ "$n2" != "$n1" ] && break
  sleep 0.2
done
check "the CRL is remade before nextUpdate ($n1 -> $n2)" test "$n2" != "$n1"
H "$URL/crl/local.crl" | openssl crl -inform DER -out "$T/crl2.pem"
next=$(date -d "$(openssl crl -in "$T/crl2.pem" -noout -nextupdate | cut -d= -f2)" +%s)
check "its nextUpdate is in the future" test "$next" -gt "$(date +%s)"
expect_eq "it still lists both revocations" "$(openssl crl -in "$T/crl2.pem" -noout -text | grep -c 'Serial Number')" "2"

# fleetgate status, text and JSON.
out=$("$FLEETGATE" status --state "$GW")
expect_match "status: devices" "$out" "devices: active 1 revoked 1"
expect_match "status: certificates" "$out" "1 valid, 2 revoked"
expect_match "status: failures" "$out" "failures in the last hour: "
expect_match "status: backend healthy" "$out" "local +ok +CA "
expect_match "status: CRL" "$out" "CRL number [0-9]+, 2 revoked"
"$FLEETGATE" status --state "$GW" --json >"$T/status.json"
expect_eq "status --json" "$(python3 -c '
import json,sys
j=json.load(open(sys.argv[1]))
b=j["backends"][0]
print(j["devices"]["active"], j["devices"]["revoked"], j["certificates"]["valid"],
      j["certificates"]["expiring_30d"], j["certificates"]["expiring_7d"],
      type(j["failures_last_hour"]["total"]).__name__, j["jobs_open"]["admitted"],
      b["name"], b["ok"], b["crl"]["entries"], b["crl"]["fresh"])' "$T/status.json")" \
  "1 1 1 1 0 int 0 local True 2 True"

# A second gateway on the same state directory fails with a clear message
# (its admin socket is taken, before anything else listens).
rc=0; timeout 10 "$FLEETGATED" --state "$GW" >"$T/gw2.log" 2>&1 || rc=$?
expect_eq "a second daemon on the same state stops" "$rc" "1"
expect_match "and says so" "$(cat "$T/gw2.log")" "another fleetgated serves $GW; stop it first"
# A busy HTTP port, from a gateway of another state directory: the same.
"$FLEETGATE" init --state "$T/gw2" --listen "tcp://127.0.0.1:$((PORT + 1))" --http "127.0.0.1:$HPORT" >/dev/null
rc=0; timeout 10 "$FLEETGATED" --state "$T/gw2" >"$T/gw2.log" 2>&1 || rc=$?
expect_eq "a busy HTTP port stops the daemon" "$rc" "1"
expect_match "and says so" "$(cat "$T/gw2.log")" "cannot listen for HTTP on 127.0.0.1:$HPORT"

check "the gateway stops cleanly" gw_stop
expect_match "and logs it" "$(tail -n 3 "$T/gw.log")" "stopped"

# A broken backend shows in status (exit 1); a bad http setting is refused.
cat >>"$GW/fleetgated.conf" <<'CONF'
backends["broken"] = { plugin = "local", ca_dir = "no-such-ca" }
CONF
rc=0; "$FLEETGATE" status --state "$GW" --json >"$T/status2.json" || rc=$?
expect_eq "status exits 1 with a broken backend" "$rc" "1"
expect_match "and names its error" "$(python3 -c '
import json,sys
print([b for b in json.load(open(sys.argv[1]))["backends"] if b["name"]=="broken"][0]["error"])' "$T/status2.json")" \
  "no CA in .*no-such-ca"
sed -i '/^backends\["broken"\]/d; s/^http = .*/http = { listen = "nohost" }/' "$GW/fleetgated.conf"
rc=0; "$FLEETGATE" status --state "$GW" >"$T/st3.out" 2>&1 || rc=$?
expect_match "a malformed http.listen is refused" "$(cat "$T/st3.out")" "http.listen: 'nohost' is not HOST:PORT"
finish
