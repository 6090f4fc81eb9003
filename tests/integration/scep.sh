#!/usr/bin/env bash
# SCEP backend (RFC 8894) against real peers on loopback:
#  - Debian's micromdm scepserver (package scep) as the upstream CA: enroll,
#    a wrong challenge, a per-device challenge from the policy, renewal, the
#    server down and back; Debian's scepclient against the same server, whose
#    certificate must match ours in issuer, key usage and extended key usage;
#  - tests/tools/scep-responder (an RFC 8894 test responder, see its header)
#    for what scepserver cannot do: an RA certificate, PENDING with CertPoll
#    across a gateway restart, GetCert and GetCRL.
source "$(dirname "$0")/lib.sh"

SCEPSERVER=$(command -v scepserver) || die "scepserver not found: apt-get install scep"
SCEPCLIENT=$(command -v scepclient) || die "scepclient not found: apt-get install scep"
RESPONDER="$FG_BUILD/tests/scep-responder"

# free_port: lib.sh

wait_http() { # URL LOG
  for _ in $(seq 300); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "nothing answers at $1 after 30 s: $(tail -n 5 "$2" 2>/dev/null)"
}

SS_PID= RS_PID=
# (scepserver does not stop on SIGTERM; SIGKILL is a fair "CA went down")
stop_scep() {
  if [ -n "$SS_PID" ]; then kill -KILL "$SS_PID" 2>/dev/null || true; wait "$SS_PID" 2>/dev/null || true; fi
  SS_PID=
}
stop_responder() {
  if [ -n "$RS_PID" ]; then kill "$RS_PID" 2>/dev/null || true; wait "$RS_PID" 2>/dev/null || true; fi
  RS_PID=
}
trap 'rc=$?; set +e; stop_scep; stop_responder; (exit $rc); cleanup' EXIT

# ---- the upstream CAs ----
SS_PORT=$(free_port)
"$SCEPSERVER" ca -init -depot "$T/depot" -keySize 2048 -organization "scep test" >/dev/null 2>&1 ||
  die "scepserver ca -init failed"
start_scep() {
  "$SCEPSERVER" -depot "$T/depot" -port "$SS_PORT" -challenge s3cret -allowrenew 0 >>"$T/scepserver.log" 2>&1 &
  SS_PID=$!
  wait_http "http://127.0.0.1:$SS_PORT/scep?operation=GetCACaps" "$T/scepserver.log"
}
# loopback only: no proxy from the environment for curl or the plugin's libcurl
export no_proxy='*' NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
start_scep
SS_FP=$(openssl x509 -in "$T/depot/ca.pem" -noout -fingerprint -sha256 | cut -d= -f2)

RS_PORT=$(free_port)
start_responder() { # [extra responder options]
  "$RESPONDER" --dir "$T/responder" --port "$RS_PORT" --ra --pending 2 --challenge r4chal "$@" \
    >>"$T/responder.out" 2>>"$T/responder.log" &
  RS_PID=$!
  wait_http "http://127.0.0.1:$RS_PORT/scep?operation=GetCACaps" "$T/responder.log"
}
start_responder
RS_FP=$(openssl x509 -in "$T/responder/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)

# ---- the gateway: groups routed to backends by the policy ----
gw_init
python3 - "$GW/fleetgated.conf" "$SS_PORT" "$SS_FP" "$RS_PORT" "$RS_FP" <<'EOF'
import sys
p, ss_port, ss_fp, rs_port, rs_fp = sys.argv[1:]
s = open(p).read()
s = s.replace('backends = {\n', f'''backends = {{
  ["scep-static"] = {{ plugin = "scep", url = "http://127.0.0.1:{ss_port}/scep",
                      ca_fingerprint = "{ss_fp}", challenge = "s3cret", timeout = 5 }},
  ["scep-dyn"] = {{ plugin = "scep", url = "http://127.0.0.1:{ss_port}/scep",
                   ca_fingerprint = "{ss_fp}", challenge = "not-the-secret", timeout = 5 }},
  ["scep-ra"] = {{ plugin = "scep", url = "http://127.0.0.1:{rs_port}/scep",
                  ca_fingerprint = "{rs_fp}", challenge = "r4chal", poll_interval = 2, timeout = 5 }},
''', 1)
open(p, 'w').write(s)
EOF
cat > "$GW/policy.lua" <<'EOF'
-- Routes by group; per-device SCEP challenges for group "dyn".
local challenges = { ["dyn-a"] = "s3cret", ["dyn-b"] = "wrong-for-b" }

function enroll(req)
  if req.new_device and req.token == nil and not req.renew then
    return deny("no token")
  end
  local name = string.lower(req.facts.hostname or "")
  local group = req.device.group
  local d = { cn = name, dns = { name }, validity = fleet.days(30) }
  if group == "static" then
    d.backend = "scep-static"
  elseif group == "dyn" then
    d.backend = "scep-dyn"
    d.challenge = challenges[name]
  elseif group == "badchal" then
    d.backend = "scep-static"
    d.challenge = "guessed"
  elseif group == "ra" then
    d.backend = "scep-ra"
  end
  return allow(d)
end

function checkin(dev)
  return {}
end
EOF
gw_start

# agent_for NAME HOSTNAME GROUP: a bundle, facts with that hostname, an RSA slot
agent_for() {
  local name=$1 host=$2
  GROUP=$3 bundle "$name"
  KEY_TYPE=rsa2048 agent_conf "$name" >/dev/null
  mkdir -p "$T/facts/$name/proc/sys/kernel"
  echo "$host" > "$T/facts/$name/proc/sys/kernel/hostname"
}

# ---- 1. enroll through scepserver with the static challenge ----
agent_for s1 static-one static
check "agent enrolls through SCEP (static challenge)" run_agent s1
check "certificate chains to the SCEP CA" openssl verify -CAfile "$T/depot/ca.pem" "$(crt s1)"
expect_match "subject CN is the decided name" "$(openssl x509 -in "$(crt s1)" -noout -subject)" "CN ?= ?static-one"
expect_match "SAN is the decided name" "$(openssl x509 -in "$(crt s1)" -noout -ext subjectAltName)" "DNS:static-one"
expect_match "the device was told to rebuild its CSR" "$(cat "$T/s1.out")" "CSR rebuilt"
expect_eq "the certificate is recorded with backend scep-static" \
  "$(sql "select backend from certificates where device_id = (select device_id from certificates order by rowid desc limit 1)")" "scep-static"
expect_eq "the key never left the device: certificate matches the agent's key" \
  "$(openssl x509 -in "$(crt s1)" -noout -pubkey | openssl sha256)" \
  "$(openssl pkey -in "$T/agents/s1/default.key" -pubout | openssl sha256)"
check "the gateway made its self-signed SCEP signer" test -s "$GW/scep/scep-static/signer.crt"
expect_eq "the signer key is private" "$(stat -c %a "$GW/scep/scep-static/signer.key")" "600"

# ---- 2. scepclient against the same server: equivalent certificates ----
mkdir -p "$T/sc" && openssl genrsa -traditional -out "$T/sc/k.pem" 2048 2>/dev/null
if (cd "$T/sc" && "$SCEPCLIENT" -server-url "http://127.0.0.1:$SS_PORT/scep" -challenge s3cret \
      -private-key k.pem -certificate c.pem -cn scepclient-one >"$T/sc/out" 2>&1); then
  ok "scepclient enrolls directly"
  for what in "-issuer" "-ext keyUsage" "-ext extendedKeyUsage"; do
    # shellcheck disable=SC2086
    expect_eq "scepclient's and the agent's certificates agree on ${what#-}" \
      "$(openssl x509 -in "$T/sc/c.pem" -noout $what | sort)" "$(openssl x509 -in "$(crt s1)" -noout $what | sort)"
  done
  span() { local a b; a=$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2); b=$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2); echo $(( $(date -d "$b" +%s) - $(date -d "$a" +%s) )); }
  v1=$(span "$T/sc/c.pem"); v2=$(span "$(crt s1)")
  check "both got the CA's validity (within a minute)" test $(( v1 > v2 ? v1 - v2 : v2 - v1 )) -le 60
else
  fail "scepclient enrolls directly: $(tail -3 "$T/sc/out")"
fi

# ---- 3. a wrong challenge is refused with a clear message ----
agent_for bad1 bad-one badchal
rc=0; run_agent bad1 || rc=$?
expect_eq "wrong challenge: agent exits 1 (refused)" "$rc" "1"
expect_match "wrong challenge: the device is told why" "$(cat "$T/bad1.out")" "badRequest.*challenge"
check "wrong challenge: no certificate installed" test ! -e "$(crt bad1)"
expect_match "wrong challenge: the gateway log names the failInfo" "$(cat "$T/gw.log")" "refused: badRequest"

# ---- 4. per-device challenges from the policy override the config ----
agent_for dyna dyn-a dyn
check "per-device challenge: dyn-a enrolls (its policy challenge is right, the config's wrong)" run_agent dyna
check "per-device challenge: dyn-a's certificate chains to the SCEP CA" openssl verify -CAfile "$T/depot/ca.pem" "$(crt dyna)"
agent_for dynb dyn-b dyn
rc=0; run_agent dynb || rc=$?
expect_eq "per-device challenge: dyn-b (wrong challenge in the policy) is refused" "$rc" "1"

# ---- 5. renewal through SCEP ----
old_serial=$(openssl x509 -in "$(crt s1)" -noout -serial)
old_key=$(openssl pkey -in "$T/agents/s1/default.key" -pubout | openssl sha256)
check "renewal through SCEP" run_agent s1 --renew-now
new_serial=$(openssl x509 -in "$(crt s1)" -noout -serial)
check "renewal: new serial" test "$old_serial" != "$new_serial"
check "renewal: new key" test "$old_key" != "$(openssl pkey -in "$T/agents/s1/default.key" -pubout | openssl sha256)"
check "renewal: chains to the SCEP CA" openssl verify -CAfile "$T/depot/ca.pem" "$(crt s1)"
expect_eq "renewal recorded as cert.renew in the audit log" \
  "$(sql "select count(*) from audit where kind = 'cert.renew'")" "1"

# ---- 6. the SCEP server down, then back: the job is kept and completes ----
stop_scep
agent_for down1 down-one static
rc=0; run_agent down1 || rc=$?
expect_eq "server down: agent exits 3 (try later)" "$rc" "3"
expect_match "server down: the device is told the CA is unreachable" "$(cat "$T/down1.out")" "cannot reach the SCEP server"
expect_eq "server down: the job stays open" \
  "$(sql "select count(*) from jobs where state in (0, 1) and backend = 'scep-static'")" "1"
start_scep
check "server back: the same request completes" run_agent down1
check "server back: certificate chains to the SCEP CA" openssl verify -CAfile "$T/depot/ca.pem" "$(crt down1)"
expect_eq "server back: no job left open" "$(sql "select count(*) from jobs where state in (0, 1)")" "0"

# ---- 7. RA certificate, PENDING, CertPoll across a gateway restart ----
agent_for ra1 ra-one ra
FLEETGATE_FACTS_ROOT="$T/facts/ra1" "$AGENT" --config "$T/agents/ra1/agent.conf" --once >"$T/ra1.out" 2>&1 &
AG_PID=$!
for _ in $(seq 100); do grep -q "awaits approval" "$T/gw.log" && break; sleep 0.1; done
expect_match "PENDING: the CA's answer reaches the gateway log" "$(cat "$T/gw.log")" "awaits approval at the CA"
gw_kill9
gw_start
rc=0; wait "$AG_PID" || rc=$?
expect_eq "PENDING: the agent gets its certificate after the restart" "$rc" "0"
check "RA chain: certificate chains to the responder's CA" openssl verify -CAfile "$T/responder/ca.crt" "$(crt ra1)"
expect_match "PENDING: the gateway polled with CertPoll" "$(cat "$T/responder.log")" "CertPoll"
expect_eq "PENDING: one certificate at the CA for the transaction" "$(ls "$T/responder/issued" | wc -l)" "1"
expect_match "RA: GetCACert served the RA and CA certificates" "$(cat "$T/responder.log")" "GetCACert -> 200 RA\+CA"
txid=$(sed -n 's/.*messageType=19(PKCSReq) transactionID=\([^ ]*\) -> PENDING.*/\1/p' "$T/responder.log" | head -1)
check "PENDING: the PKCSReq was answered PENDING" test -n "$txid"
expect_match "PENDING: after the restart the same transaction was polled to SUCCESS" \
  "$(cat "$T/responder.log")" "messageType=20\(CertPoll\) transactionID=$txid -> SUCCESS"

# ---- 7b. the gateway polls on its own: the device may be away ----
agent_for ra2 ra-two ra
before=$(grep -c "awaits approval" "$T/gw.log")
FLEETGATE_FACTS_ROOT="$T/facts/ra2" "$AGENT" --config "$T/agents/ra2/agent.conf" --once >"$T/ra2.out" 2>&1 &
AG_PID=$!
for _ in $(seq 100); do [ "$(grep -c "awaits approval" "$T/gw.log")" -gt "$before" ] && break; sleep 0.1; done
kill -9 "$AG_PID" 2>/dev/null || true; wait "$AG_PID" 2>/dev/null || true
expect_eq "device away: its job is pending" "$(sql "select count(*) from jobs where state = 1")" "1"
for _ in $(seq 300); do [ "$(sql "select count(*) from jobs where state = 1")" = 0 ] && break; sleep 0.1; done
expect_eq "device away: the gateway polled the CA by itself and the job is done" \
  "$(sql "select count(*) from jobs where state = 1")" "0"
expect_eq "device away: the certificate is recorded" \
  "$(sql "select count(*) from certificates c join devices d on d.id = c.device_id where d.hostname = 'ra-two'")" "1"
check "device back: it collects the certificate with the same request" run_agent ra2
check "device back: the certificate chains to the responder's CA" openssl verify -CAfile "$T/responder/ca.crt" "$(crt ra2)"
expect_eq "device back: no further PKCSReq was needed" \
  "$(grep -c 'messageType=19(PKCSReq)' "$T/responder.log")" "2"

# ---- 8. operator inspection: GetCert, GetCRL, GetCACert ----
serial=$(openssl x509 -in "$(crt ra1)" -noout -serial | cut -d= -f2)
"$FLEETGATE" backend cert --state "$GW" scep-ra "$serial" >"$T/getcert.pem" 2>"$T/getcert.err"
expect_eq "GetCert returns the issued certificate" \
  "$(openssl x509 -in "$T/getcert.pem" -noout -fingerprint 2>&1)" "$(openssl x509 -in "$(crt ra1)" -noout -fingerprint)"
"$FLEETGATE" backend crl --state "$GW" scep-ra >"$T/crl.pem" 2>"$T/crl.err"
check "GetCRL returns a CRL signed by the CA" openssl crl -in "$T/crl.pem" -CAfile "$T/responder/ca.crt" -noout
rc=0; "$FLEETGATE" backend cert --state "$GW" scep-ra 0BADC0DE >/dev/null 2>"$T/getcert2.err" || rc=$?
expect_eq "GetCert of an unknown serial fails" "$rc" "1"
expect_match "GetCert of an unknown serial says why" "$(cat "$T/getcert2.err")" "badCertId"
expect_eq "cacerts names the pinned CA" \
  "$("$FLEETGATE" backend cacerts --state "$GW" scep-static | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)" "$SS_FP"

# ---- 8b. GET when the CA does not offer POST; 3DES/SHA-1 only when nothing better ----
stop_responder
start_responder --no-post
"$FLEETGATE" backend cert --state "$GW" scep-ra "$serial" >"$T/getcert3.pem" 2>"$T/getcert3.err"
expect_eq "without POSTPKIOperation the request goes by GET and works" \
  "$(openssl x509 -in "$T/getcert3.pem" -noout -fingerprint 2>&1)" "$(openssl x509 -in "$(crt ra1)" -noout -fingerprint)"
expect_match "the responder saw a GET PKIOperation" "$(cat "$T/responder.log")" "PKIOperation GET .*GetCert.* -> SUCCESS"
stop_responder
start_responder --caps $'DES3\nSHA-1\nPOSTPKIOperation\n'
"$FLEETGATE" backend cert --state "$GW" scep-ra "$serial" >"$T/getcert4.pem" 2>"$T/getcert4.err"
expect_eq "a CA offering only 3DES/SHA-1 still works" \
  "$(openssl x509 -in "$T/getcert4.pem" -noout -fingerprint 2>&1)" "$(openssl x509 -in "$(crt ra1)" -noout -fingerprint)"
expect_match "3DES is used with a warning" "$(cat "$T/getcert4.err")" "does not offer AES; using 3DES"
expect_match "SHA-1 is used with a warning" "$(cat "$T/getcert4.err")" "does not offer SHA-256; using SHA-1"

# ---- 9. a wrong pin is refused ----
sed -i "s/ca_fingerprint = \"$SS_FP\", challenge = \"s3cret\"/ca_fingerprint = \"$(printf '%064d' 0)\", challenge = \"s3cret\"/" "$GW/fleetgated.conf"
rc=0; "$FLEETGATE" backend cacerts --state "$GW" scep-static >/dev/null 2>"$T/pin.err" || rc=$?
expect_eq "a CA that does not match ca_fingerprint is refused" "$rc" "1"
expect_match "the pin mismatch says what to do" "$(cat "$T/pin.err")" "matches ca_fingerprint"

check "audit chain verifies" "$FLEETGATE" audit verify --state "$GW"
finish
