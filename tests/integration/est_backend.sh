#!/usr/bin/env bash
# The EST backend (plugins/est, RFC 7030 client) against a real EST server:
# the EST front-end of a second fleetgated (gateway B, its own local CA),
# all on 127.0.0.1. Agents enroll through gateway A, whose policy routes to
# backends of the est plugin served by B:
#  - est-corp: implicit trust anchor pinned by ca_fingerprint (bootstrap),
#    HTTP Basic with an enrollment token of B; enroll, renew (through
#    /simplereenroll with Basic), B down and back;
#  - est-pend: explicit trust anchor (tls_ca_file), Basic plus the gateway's
#    TLS client certificate; B routes these to a SCEP backend pointed at
#    tests/tools/scep-responder in its PENDING mode, so B answers 202 with
#    Retry-After; A is killed -9 and restarted while its job is pending;
#  - est-bad: a wrong Basic password.
# A's and B's certificate records must agree on serial and subject.
# Last, `openssl s_server -WWW` (OpenSSL's own static HTTPS server, not an
# EST implementation) serves fixed /cacerts and /csrattrs files: the
# csrattrs example of RFC 7030 4.5.2 (an ecPublicKey attribute naming
# secp384r1), an impostor that does not chain to the pinned CA, and a
# server that fails the explicit trust anchor.
source "$(dirname "$0")/lib.sh"

RESPONDER="$FG_BUILD/tests/scep-responder"
GWB="$T/gwb"
B_PID= RS_PID= SW_PIDS=

# free_port: lib.sh

stop_b() {
  if [ -n "$B_PID" ]; then kill -TERM "$B_PID" 2>/dev/null || true; wait "$B_PID" 2>/dev/null || true; fi
  B_PID=
}
stop_responder() {
  if [ -n "$RS_PID" ]; then kill "$RS_PID" 2>/dev/null || true; wait "$RS_PID" 2>/dev/null || true; fi
  RS_PID=
}
AG_PID=
stop_agent() {
  if [ -n "$AG_PID" ]; then kill -9 "$AG_PID" 2>/dev/null || true; wait "$AG_PID" 2>/dev/null || true; fi
  AG_PID=
}
on_exit() {
  local rc=$1
  set +e
  stop_agent; stop_b; stop_responder
  for p in $SW_PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [ "$rc" -ne 0 ] || [ "$FAILS" -ne 0 ]; then
    echo "---- gateway B log ($T/gwb.log) ----"; tail -n 40 "$T/gwb.log" 2>/dev/null
  fi
  (exit "$rc")
  cleanup
}
trap 'on_exit $?' EXIT

# loopback only: no proxy from the environment for curl or the plugin's libcurl
export no_proxy='*' NO_PROXY='*'
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# ---- the SCEP responder behind B, answering PENDING twice ----
RS_PORT=$(free_port)
"$RESPONDER" --dir "$T/responder" --port "$RS_PORT" --pending 2 >>"$T/responder.out" 2>>"$T/responder.log" &
RS_PID=$!
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$RS_PORT/scep?operation=GetCACaps" >/dev/null 2>&1 && break
  sleep 0.1
done
RS_FP=$(openssl x509 -in "$T/responder/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)

# ---- gateway B: local CA, EST front-end, a SCEP backend for group pend ----
B_ZPORT=$(free_port)
B_EPORT=$(free_port)
"$FLEETGATE" init --state "$GWB" --listen "tcp://127.0.0.1:$B_ZPORT" --est "127.0.0.1:$B_EPORT" >"$T/initb.out" ||
  die "fleetgate init (B) failed: $(cat "$T/initb.out")"
cat >>"$GWB/fleetgated.conf" <<EOF
backends["scep-pend"] = { plugin = "scep", url = "http://127.0.0.1:$RS_PORT/scep",
                          ca_fingerprint = "$RS_FP", poll_interval = 2, timeout = 5 }
profiles.pend = { backend = "scep-pend", key_usage = { "digitalSignature" },
                  extended_key_usage = { "clientAuth" }, max_validity = "90d",
                  default_validity = "30d", names = { "cn", "dns" } }
est.labels = { pend = "pend" }
EOF
cat >"$GWB/policy.lua" <<'EOF'
-- Gateway B: EST clients named after their CSR's CN; the label "pend"
-- (slot and profile pend) goes to the SCEP CA that answers PENDING, and only
-- tokens of group pend may use it.
function enroll(req)
  if not req.renew and req.token == nil and req.new_device then
    return deny("no enrollment token")
  end
  local name = string.lower(req.csr.cn or "")
  if name == "" then return deny("no CN") end
  local d = { cn = name, dns = { name }, validity = fleet.days(30) }
  if (req.device.group == "pend") ~= (req.slot == "pend") then
    return deny("group " .. tostring(req.device.group) .. " does not go with this label")
  end
  return allow(d)
end
function checkin(dev) return {} end
EOF
start_b() {
  : >>"$T/gwb.log"
  local before
  before=$(grep -c "listening on" "$T/gwb.log" || true)
  "$FLEETGATED" --state "$GWB" --log-level debug 2>>"$T/gwb.log" &
  B_PID=$!
  for _ in $(seq 200); do
    [ "$(grep -c "listening on" "$T/gwb.log" || true)" -gt "$before" ] &&
      (exec 3<>"/dev/tcp/127.0.0.1/$B_EPORT") 2>/dev/null && return 0
    kill -0 "$B_PID" 2>/dev/null || die "gateway B exited: $(tail -n 5 "$T/gwb.log")"
    sleep 0.05
  done
  die "gateway B did not start"
}
start_b
B_CA="$GWB/ca/ca.crt"
B_FP=$(openssl x509 -in "$B_CA" -noout -fingerprint -sha256 | cut -d= -f2)
tok() { "$FLEETGATE" token create --state "$GWB" --group "$1" --uses "$2" --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p'; }
TOK_CORP=$(tok ra 50)
TOK_PEND=$(tok pend 10)
check "B made enrollment tokens for gateway A" test -n "$TOK_CORP" -a -n "$TOK_PEND"

# gateway A's RA certificate from B's CA, for TLS client authentication
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ra.key" \
  -subj "/CN=gateway-a RA" -out "$T/ra.csr" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >"$T/ra.ext"
openssl x509 -req -in "$T/ra.csr" -CA "$B_CA" -CAkey "$GWB/ca/ca.key" -CAcreateserial -days 2 \
  -extfile "$T/ra.ext" -out "$T/ra.crt" 2>/dev/null || die "cannot make the RA certificate"

# ---- gateway A: three EST backends, routed by group ----
gw_init
printf '%s\n' "$TOK_CORP" >"$GW/est-corp.secret"
chmod 600 "$GW/est-corp.secret"
cat >>"$GW/fleetgated.conf" <<EOF
backends["est-corp"] = { plugin = "est", url = "https://127.0.0.1:$B_EPORT", ca_fingerprint = "$B_FP",
                         username = "gateway-a", password_file = "est-corp.secret", timeout = 5 }
backends["est-pend"] = { plugin = "est", url = "https://127.0.0.1:$B_EPORT/", label = "pend", tls_ca_file = "$B_CA",
                         username = "gateway-a", password = "$TOK_PEND",
                         client_cert = "$T/ra.crt", client_key = "$T/ra.key", timeout = 5 }
backends["est-bearer"] = { plugin = "est", url = "https://127.0.0.1:$B_EPORT", tls_ca_file = "$B_CA",
                           bearer_token = "not-a-basic-token", timeout = 5 }
backends["est-bad"] = { plugin = "est", url = "https://127.0.0.1:$B_EPORT", tls_ca_file = "$B_CA",
                        username = "gateway-a", password = "fgt_00000000000000000000000000000000", timeout = 5 }
EOF
cat >"$GW/policy.lua" <<'EOF'
local routes = { corp = "est-corp", pend = "est-pend", bad = "est-bad", bearer = "est-bearer" }
function enroll(req)
  if req.device.group == "attrs" then
    -- what the EST CA's /csrattrs asked, as the policy sees it
    local a = req.backend_csrattrs["est-corp"]
    if a == nil then return deny("no csrattrs for est-corp") end
    return deny("csrattrs of est-corp: key_type=" .. tostring(a.key_type) ..
                " oids=" .. table.concat(a.oids, ","))
  end
  if req.new_device and req.token == nil and not req.renew then
    return deny("no token")
  end
  local name = string.lower(req.facts.hostname or "")
  -- a name the agent's own first CSR does not carry: the EST CA copies
  -- names from the CSR, so the device must rebuild it
  name = name .. ".fleet.test"
  local g = req.device.group
  if g == "fileattrs" then
    local a = req.backend_csrattrs["est-file"]
    if a == nil then return deny("no csrattrs for est-file") end
    return deny("csrattrs of est-file: key_type=" .. tostring(a.key_type) ..
                " oids=" .. table.concat(a.oids, ","))
  elseif g == "file" then
    return allow{ cn = name, dns = { name }, backend = "est-file" }
  end
  if g == "skg" then
    return allow{ cn = name, dns = { name }, backend = "est-corp", keygen = "server" }
  elseif g == "trust" then
    return allow{ cn = name, dns = { name }, backend = "est-corp", anchors = true }
  elseif g == "skglocal" then
    return allow{ cn = name, dns = { name }, keygen = "server" }
  end
  return allow{ cn = name, dns = { name }, validity = fleet.days(30),
                backend = routes[g] }
end
function checkin(dev) return {} end
EOF
GW_LOG_LEVEL=debug gw_start

agent_for() { # NAME HOSTNAME GROUP
  local name=$1 host=$2
  GROUP=$3 bundle "$name"
  agent_conf "$name" >/dev/null
  mkdir -p "$T/facts/$name/proc/sys/kernel"
  echo "$host" >"$T/facts/$name/proc/sys/kernel/hostname"
}
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
# "SERIAL SUBJECT" of a serial in a gateway's `fleetgate cert list --json`
record() { # STATE SERIAL
  "$FLEETGATE" cert list --state "$1" --json | python3 -c '
import json, sys
want = sys.argv[1].upper().lstrip("0")
for c in json.load(sys.stdin):
    s = c["serial"].upper().lstrip("0")
    if s == want:
        print(s, c.get("subject", ""))
' "$2"
}

# ---- 1. enroll: A -> EST -> B ----
agent_for c1 corp-one corp
check "agent enrolls through gateway A, routed to EST at gateway B" run_agent c1
check "the certificate chains to B's CA" openssl verify -CAfile "$B_CA" "$(crt c1)"
check "the certificate does not chain to A's own CA" bash -c "! openssl verify -CAfile '$GW/ca/ca.crt' '$(crt c1)' >/dev/null 2>&1"
expect_match "subject CN is the name A's policy decided" "$(openssl x509 -in "$(crt c1)" -noout -subject)" "CN ?= ?corp-one.fleet.test$"
expect_match "SAN is the name A's policy decided" "$(openssl x509 -in "$(crt c1)" -noout -ext subjectAltName)" "DNS:corp-one.fleet.test$"
expect_match "the device was told to rebuild its CSR with the decided names" "$(cat "$T/c1.out")" "CSR rebuilt"
expect_eq "the key never left the device" \
  "$(openssl x509 -in "$(crt c1)" -noout -pubkey | openssl sha256)" \
  "$(openssl pkey -in "$T/agents/c1/default.key" -pubout | openssl sha256)"
S1=$(serial_of "$(crt c1)")
recA=$(record "$GW" "$S1"); recB=$(record "$GWB" "$S1")
check "A records the certificate" test -n "$recA"
check "B records the certificate" test -n "$recB"
expect_eq "A's and B's records agree on serial and subject" "$recA" "$recB"
expect_eq "A records it under backend est-corp" "$(sql "select backend from certificates where ltrim(serial_hex, '0') = ltrim('$S1', '0')")" "est-corp"
expect_match "B served it through simpleenroll" "$(cat "$T/gwb.log")" "simpleenroll: "
check "A pinned B's CA as the implicit trust anchor" test -s "$GW/est/est-corp/implicit-ta.pem"
expect_eq "the implicit trust anchor is B's CA" \
  "$(openssl x509 -in "$GW/est/est-corp/implicit-ta.pem" -noout -fingerprint -sha256 | cut -d= -f2)" "$B_FP"
expect_eq "A's backend cacerts is B's CA (from /cacerts)" \
  "$("$FLEETGATE" backend cacerts --state "$GW" est-corp | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)" "$B_FP"
check "the agent's chain file carries B's CA" openssl verify -CAfile "$T/agents/c1/default-chain.crt" "$(crt c1)"

# ---- 1b. /csrattrs: the policy sees it; a key the CA does not take is remade ----
agent_for a1 attrs-one attrs
rc=0; run_agent a1 || rc=$?
expect_eq "csrattrs: the policy's deny reaches the agent" "$rc" "1"
expect_match "csrattrs: the policy sees B's /csrattrs (key type and OIDs)" "$(cat "$T/a1.out")" \
  "csrattrs of est-corp: key_type=ec oids=([^ ]*,)?ecdsa-with-SHA256"
agent_for k1 rsa-one corp
sed -i 's/^key_type = .*/key_type = rsa2048/' "$T/agents/k1/agent.conf"
check "csrattrs: an agent with an RSA slot enrolls through est-corp" run_agent k1
expect_match "csrattrs: A asked the device for an EC key" "$(cat "$T/gw.log")" "backend est-corp: the EST CA asks for a ec key .*the device is asked for a p256 key"
expect_match "csrattrs: the agent made a P-256 key for the request" "$(cat "$T/k1.out")" "CSR rebuilt .*a new p256 key \(the CA takes p256 keys only\)"
expect_match "csrattrs: the installed key is P-256" "$(openssl pkey -in "$T/agents/k1/default.key" -noout -text 2>&1)" "prime256v1|P-256"
expect_eq "csrattrs: the certificate certifies that key" \
  "$(openssl x509 -in "$(crt k1)" -noout -pubkey | openssl sha256)" \
  "$(openssl pkey -in "$T/agents/k1/default.key" -pubout | openssl sha256)"
check "csrattrs: the certificate chains to B's CA" openssl verify -CAfile "$B_CA" "$(crt k1)"

# ---- 1c. /serverkeygen: B makes the key, it reaches the agent encrypted ----
agent_for g1 keygen-one skg
check "serverkeygen: the agent enrolls with a key the CA made" run_agent g1
expect_match "serverkeygen: the agent was told the key came encrypted" "$(cat "$T/g1.out")" \
  "the CA generated the key; it came encrypted to this request's key"
expect_match "serverkeygen: B served /serverkeygen" "$(cat "$T/gwb.log")" "serverkeygen: issued serial"
expect_match "serverkeygen: A used /serverkeygen" "$(cat "$T/gw.log")" "backend est-corp: certificate and server-generated key through /serverkeygen"
check "serverkeygen: the certificate chains to B's CA" openssl verify -CAfile "$B_CA" "$(crt g1)"
expect_eq "serverkeygen: the installed key is the certificate's" \
  "$(openssl x509 -in "$(crt g1)" -noout -pubkey | openssl sha256)" \
  "$(openssl pkey -in "$T/agents/g1/default.key" -pubout | openssl sha256)"
expect_eq "serverkeygen: the installed key is private to its owner" "$(stat -c %a "$T/agents/g1/default.key")" "600"
sql "select params_json from jobs where backend = 'est-corp' and params_json like '%keygen-one%'" |
  python3 -c 'import json, sys; sys.stdout.buffer.write(bytes.fromhex(json.loads(sys.stdin.read())["csr"]))' >"$T/g1.csr.der"
h_csr=$(openssl req -inform DER -in "$T/g1.csr.der" -noout -pubkey 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null | openssl sha256 -r | cut -c1-64)
h_crt=$(openssl x509 -in "$(crt g1)" -noout -pubkey | openssl pkey -pubin -outform DER | openssl sha256 -r | cut -c1-64)
check "serverkeygen: A's job holds the device's CSR" test -n "$h_csr"
check "serverkeygen: the device's CSR carried another key (its one-time transport key)" test "$h_csr" != "$h_crt"
G1=$(serial_of "$(crt g1)")
expect_eq "serverkeygen: A's and B's records agree" "$(record "$GW" "$G1")" "$(record "$GWB" "$G1")"
# the private key's secret (the EC scalar) and its PKCS#8 DER appear
# nowhere in A's state directory (store, WAL, plugin files) nor in A's log
openssl pkey -in "$T/agents/g1/default.key" -outform DER -out "$T/g1.p8.der" 2>/dev/null
openssl pkey -in "$T/agents/g1/default.key" -noout -text 2>/dev/null |
  awk '/^priv:/ { on = 1; next } /^[a-zA-Z]/ { on = 0 } on' | tr -d ' :\n' >"$T/g1.priv.hex"
check "serverkeygen: the key's secret was read for the search" test "$(wc -c <"$T/g1.priv.hex")" -ge 60
scan_for_key() { # DIR-OR-FILE...: exit 0 when neither the scalar nor the DER is in any file
  python3 - "$T/g1.priv.hex" "$T/g1.p8.der" "$@" <<'PY'
import os, sys
priv = bytes.fromhex(open(sys.argv[1]).read().strip())[-32:]
der = open(sys.argv[2], 'rb').read()
found = []
for top in sys.argv[3:]:
    paths = [top] if os.path.isfile(top) else [os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs]
    for p in paths:
        if not os.path.isfile(p):
            continue        # the admin socket: no data at rest
        data = open(p, 'rb').read()
        if priv in data or der in data or priv.hex().encode() in data.lower():
            found.append(p)
print(" ".join(found))
sys.exit(1 if found else 0)
PY
}
check "serverkeygen: A never stored the key in clear (state directory and log)" scan_for_key "$GW" "$T/gw.log"
mkdir -p "$T/keyctl"
cp "$GW/fleetgate.db" "$T/keyctl/"
openssl pkey -in "$T/agents/g1/default.key" -outform DER -out "$T/keyctl/found.der" 2>/dev/null
rc=0; scan_for_key "$T/keyctl" >/dev/null || rc=$?
expect_eq "serverkeygen: the same search finds the key in a directory that holds it" "$rc" "1"
# ---- 1d. keygen = "server" where the backend cannot make keys ----
agent_for g2 keygen-two skglocal
rc=0; run_agent g2 || rc=$?
expect_eq "serverkeygen on the local CA: refused" "$rc" "1"
expect_match "serverkeygen on the local CA: the message says what to do" "$(cat "$T/g2.out")" \
  "server-generated key, which backend 'local' cannot make; route such slots to an est backend"

# ---- 1e. B's CA handed to the agent as a trust anchor when the policy says so ----
# bundles whose only anchor is A's own CA (as if made before est-corp existed)
strip_anchors() { # NAME
  python3 - "$T/$1.bundle" "$GW/ca/ca.crt" <<'PY'
import sys
b, ca = sys.argv[1], sys.argv[2]
head = open(b).read().split("-----BEGIN")[0]
open(b, "w").write(head + open(ca).read())
PY
}
anchor_fps() { # BUNDLE: SHA-256 fingerprints of its certificates
  python3 - "$1" <<'PY' | while read -r f; do openssl x509 -in "$f" -noout -fingerprint -sha256 | cut -d= -f2; rm -f "$f"; done
import sys, tempfile
text = open(sys.argv[1]).read()
for part in text.split("-----BEGIN CERTIFICATE-----")[1:]:
    f = tempfile.NamedTemporaryFile("w", delete=False, suffix=".pem")
    f.write("-----BEGIN CERTIFICATE-----" + part.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
    f.close()
    print(f.name)
PY
}
agent_for t0 notrust-one corp
strip_anchors t0
fps0=$(anchor_fps "$T/t0.bundle")
expect_eq "anchors: the stripped bundle holds A's CA only" "$fps0" "$(openssl x509 -in "$GW/ca/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)"
rc=0; run_agent t0 || rc=$?
check "anchors: without anchors = true the certificate from B is not installed" test "$rc" -ne 0 -a ! -e "$(crt t0)"
expect_match "anchors: the agent says the certificate does not chain to its anchors" "$(cat "$T/t0.out")" "does not chain to the trust anchors"
agent_for t1 trust-one trust
strip_anchors t1
check "anchors: with anchors = true the agent enrolls" run_agent t1
expect_match "anchors: the agent added B's CA to its bundle" "$(cat "$T/t1.out")" "1 trust anchor\(s\) of the issuing CA added to $T/t1.bundle"
expect_match "anchors: the bundle now holds B's CA" "$(anchor_fps "$T/t1.bundle")" "$B_FP"
expect_match "anchors: and still A's own CA" "$(anchor_fps "$T/t1.bundle")" "$(openssl x509 -in "$GW/ca/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)"
check "anchors: the certificate chains to B's CA" openssl verify -CAfile "$B_CA" "$(crt t1)"

# ---- 2. renewal through /simplereenroll (HTTP Basic as an RA) ----
before=$(grep -c "simplereenroll: " "$T/gwb.log" || true)
old_key=$(openssl pkey -in "$T/agents/c1/default.key" -pubout | openssl sha256)
check "renewal through gateway A" run_agent c1 --renew-now
S2=$(serial_of "$(crt c1)")
check "renewal: a new serial" test "$S1" != "$S2"
check "renewal: a new key" test "$old_key" != "$(openssl pkey -in "$T/agents/c1/default.key" -pubout | openssl sha256)"
check "renewal: chains to B's CA" openssl verify -CAfile "$B_CA" "$(crt c1)"
expect_eq "renewal: B served one simplereenroll" "$(grep -c "simplereenroll: " "$T/gwb.log")" "$((before + 1))"
expect_match "renewal: B saw a registration authority's re-enrollment" "$(cat "$T/gwb.log")" "simplereenroll from a registration authority"
recA=$(record "$GW" "$S2"); recB=$(record "$GWB" "$S2")
check "renewal: both record the new certificate" test -n "$recA" -a -n "$recB"
expect_eq "renewal: A's and B's records agree" "$recA" "$recB"
expect_eq "renewal recorded as cert.renew at A" "$(sql "select count(*) from audit where kind = 'cert.renew'")" "1"

# ---- 3. a wrong Basic password is a clear refusal ----
agent_for bad1 bad-one bad
rc=0; run_agent bad1 || rc=$?
expect_eq "wrong password: the agent exits 1 (refused)" "$rc" "1"
expect_match "wrong password: the device is told the EST server refused the gateway" "$(cat "$T/bad1.out")" "refused the gateway's credentials \(HTTP 401\)"
expect_match "wrong password: the operator is told what to check" "$(cat "$T/gw.log")" "backend est-bad: the EST server refused the gateway's credentials for /simpleenroll .*check username and password in backends.est-bad"
check "wrong password: no certificate installed" test ! -e "$(crt bad1)"

agent_for br1 bearer-one bearer
rc=0; run_agent br1 || rc=$?
expect_eq "bearer token B does not take: the agent exits 1" "$rc" "1"
expect_match "bearer token B does not take: the operator is told to check it" "$(cat "$T/gw.log")" \
  "backend est-bearer: the EST server refused the gateway's credentials .*check bearer_token in backends.est-bearer"

# ---- 4. B down: retry, then the same request completes ----
stop_b
agent_for d1 down-one corp
rc=0; run_agent d1 || rc=$?
expect_eq "B down: the agent exits 3 (try later)" "$rc" "3"
expect_match "B down: the device is told the EST server is unreachable" "$(cat "$T/d1.out")" "cannot reach the EST server at https://127.0.0.1:$B_EPORT"
expect_eq "B down: A keeps the job open" "$(sql "select count(*) from jobs where state in (0, 1) and backend = 'est-corp'")" "1"
start_b
check "B back: the same request completes" run_agent d1
check "B back: the certificate chains to B's CA" openssl verify -CAfile "$B_CA" "$(crt d1)"
expect_eq "B back: no job left open at A" "$(sql "select count(*) from jobs where state in (0, 1) and backend = 'est-corp'")" "0"
S3=$(serial_of "$(crt d1)")
expect_eq "B back: A's and B's records agree" "$(record "$GW" "$S3")" "$(record "$GWB" "$S3")"

# ---- 5. 202 Accepted: a durable pending job across a kill -9 of A ----
agent_for p1 pend-one pend
FLEETGATE_FACTS_ROOT="$T/facts/p1" "$AGENT" --config "$T/agents/p1/agent.conf" --once >"$T/p1.out" 2>&1 &
AG_PID=$!
for _ in $(seq 150); do grep -q "pending at the EST server" "$T/gw.log" && break; sleep 0.1; done
expect_match "202: A logs the EST server's Retry-After" "$(cat "$T/gw.log")" "backend est-pend: /simpleenroll accepted, pending at the EST server; asking again in [0-9]+ s"
expect_eq "202: A holds a pending job" "$(sql "select count(*) from jobs where state = 1 and backend = 'est-pend'")" "1"
expect_eq "202: A's job state says pending" "$(sql "select cast(value as text) from job_state where key = 'est.state'")" "pending"
gw_kill9
GW_LOG_LEVEL=debug gw_start
rc=0; wait "$AG_PID" || rc=$?; AG_PID=
expect_eq "202: after A's restart the agent gets its certificate" "$rc" "0"
check "202: the certificate chains to the SCEP CA behind B" openssl verify -CAfile "$T/responder/ca.crt" "$(crt p1)"
expect_match "202: the SCEP CA answered PENDING first" "$(cat "$T/responder.log")" "-> PENDING"
expect_eq "202: one certificate issued for the transaction" "$(ls "$T/responder/issued" | wc -l)" "1"
expect_eq "202: no job left open at A" "$(sql "select count(*) from jobs where state in (0, 1)")" "0"
S4=$(serial_of "$(crt p1)")
expect_eq "202: A's and B's records agree" "$(record "$GW" "$S4")" "$(record "$GWB" "$S4")"
# ---- 6. fixed files over openssl s_server: RFC 7030's csrattrs example, bad servers ----
SW="$T/sw"
mkdir -p "$SW/www/.well-known/est"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$SW/ca.key" \
  -subj "/CN=static EST test CA" -days 2 -out "$SW/ca.crt" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$SW/srv.key" \
  -subj /CN=127.0.0.1 -out "$SW/srv.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$SW/srv.ext"
openssl x509 -req -in "$SW/srv.csr" -CA "$SW/ca.crt" -CAkey "$SW/ca.key" -CAcreateserial -days 2 \
  -extfile "$SW/srv.ext" -out "$SW/srv.crt" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$SW/imp.key" \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 2 -out "$SW/imp.crt" 2>/dev/null
# /cacerts with line breaks in the base64 (RFC 8951), and RFC 7030 4.5.2's csrattrs example
openssl crl2pkcs7 -nocrl -certfile "$SW/ca.crt" -outform DER | openssl base64 >"$SW/www/.well-known/est/cacerts"
echo "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw==" \
  >"$SW/www/.well-known/est/csrattrs"
SW_FP=$(openssl x509 -in "$SW/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)
start_sw() { # PORT CERT KEY
  (cd "$SW/www" && exec openssl s_server -WWW -accept "127.0.0.1:$1" -cert "$2" -key "$3" -quiet) \
    >>"$SW/s_server.log" 2>&1 &
  SW_PIDS="$SW_PIDS $!"
  for _ in $(seq 100); do
    curl -s -k -o /dev/null "https://127.0.0.1:$1/.well-known/est/cacerts" && return 0
    sleep 0.05
  done
  die "openssl s_server did not start on $1"
}
SW_PORT=$(free_port); start_sw "$SW_PORT" "$SW/srv.crt" "$SW/srv.key"
IMP_PORT=$(free_port); start_sw "$IMP_PORT" "$SW/imp.crt" "$SW/imp.key"
{
  echo "backends[\"est-file\"] = { plugin = \"est\", url = \"https://127.0.0.1:$SW_PORT\", ca_fingerprint = \"$SW_FP\", timeout = 2 }"
  echo "backends[\"est-impostor\"] = { plugin = \"est\", url = \"https://127.0.0.1:$IMP_PORT\", ca_fingerprint = \"$SW_FP\", timeout = 2 }"
  echo "backends[\"est-wrongta\"] = { plugin = \"est\", url = \"https://127.0.0.1:$SW_PORT\", tls_ca_file = \"$B_CA\", timeout = 2 }"
} >>"$GW/fleetgated.conf"
gw_stop
GW_LOG_LEVEL=debug gw_start

expect_eq "pinned bootstrap over s_server: cacerts is the pinned CA" \
  "$("$FLEETGATE" backend cacerts --state "$GW" est-file | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)" "$SW_FP"
agent_for f1 file-attrs fileattrs
rc=0; run_agent f1 || rc=$?
expect_eq "RFC 7030 csrattrs example: the policy's deny reaches the agent" "$rc" "1"
expect_match "RFC 7030 csrattrs example: the policy sees key type p384 from the ecPublicKey attribute" \
  "$(cat "$T/f1.out")" "csrattrs of est-file: key_type=p384 oids="
expect_match "RFC 7030 csrattrs example: every OID and attribute, by short name" "$(cat "$T/f1.out")" \
  "oids=challengePassword,id-ecPublicKey=secp384r1,extReq=1.3.6.1.1.1.1.22,ecdsa-with-SHA384"
agent_for f2 file-two file
rc=0; run_agent f2 || rc=$?
expect_match "RFC 7030 csrattrs example: a P-256 slot is asked for a P-384 key" "$(cat "$T/f2.out")" \
  "CSR rebuilt .*a new p384 key \(the CA takes p384 keys only\)"
# (s_server does not take the POST: the enrollment itself is not expected to finish)
expect_eq "RFC 7030 csrattrs example: the request key in flight is P-384" \
  "$(openssl pkey -in "$T/agents/f2/state/default.key.new" -noout -text 2>/dev/null | sed -n 's/^ASN1 OID: //p')" "secp384r1"
rc=0; "$FLEETGATE" backend cacerts --state "$GW" est-impostor >/dev/null 2>"$T/imp.err" || rc=$?
expect_eq "impostor: a server that does not chain to the pinned CA is refused" "$rc" "1"
expect_match "impostor: the message says why" "$(cat "$T/imp.err")" \
  "the TLS certificate of the EST server at https://127.0.0.1:$IMP_PORT/.well-known/est does not chain to the pinned CA"
check "impostor: nothing was pinned for it" test ! -e "$GW/est/est-impostor/implicit-ta.pem"
# Before the pinned CA has vouched for the server, no credentials go out:
# a raw TLS listener (openssl s_server without -WWW prints what it is sent)
# takes the bootstrap /cacerts of a backend with a Basic password.
RAW_PORT=$(free_port)
(sleep 8 | exec openssl s_server -accept "127.0.0.1:$RAW_PORT" -cert "$SW/imp.crt" -key "$SW/imp.key" -quiet \
  -naccept 1 >"$SW/raw.log" 2>&1) &
SW_PIDS="$SW_PIDS $!"
# (wait with ss, not a probe connection: -naccept 1 takes one connection)
for _ in $(seq 100); do ss -Hltn "sport = :$RAW_PORT" | grep -q . && break; sleep 0.05; done
echo "backends[\"est-raw\"] = { plugin = \"est\", url = \"https://127.0.0.1:$RAW_PORT\", ca_fingerprint = \"$SW_FP\", username = \"gw\", password = \"never-sent-1\", timeout = 2 }" \
  >>"$GW/fleetgated.conf"
rc=0; "$FLEETGATE" backend cacerts --state "$GW" est-raw >/dev/null 2>"$T/raw.err" || rc=$?
expect_eq "bootstrap: an unanswered /cacerts fails" "$rc" "1"
expect_match "bootstrap: the request reached the unauthenticated server" "$(cat "$SW/raw.log")" "^GET /.well-known/est/cacerts HTTP/1.1"
check "bootstrap: no credentials were sent before the server was authenticated" \
  bash -c "! grep -qi '^authorization:' '$SW/raw.log'"
rc=0; "$FLEETGATE" backend cacerts --state "$GW" est-wrongta >/dev/null 2>"$T/wrongta.err" || rc=$?
expect_eq "explicit trust anchor: a server it does not vouch for is refused" "$rc" "1"
expect_match "explicit trust anchor: the message says what to check" "$(cat "$T/wrongta.err")" \
  "failed TLS verification: .*check tls_ca_file"

check "audit chain verifies at A" "$FLEETGATE" audit verify --state "$GW"
check "audit chain verifies at B" "$FLEETGATE" audit verify --state "$GWB"
finish
